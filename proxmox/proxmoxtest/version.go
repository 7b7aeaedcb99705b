package proxmoxtest

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Proxmox VE releases the fake server can emulate. Any "X.Y", "X.Y.Z" or
// "X.Y-Z" string with major version 7, 8 or 9 is accepted by [WithVersion];
// these constants name the releases whose behaviour differs in ways a client
// can observe (see the version table in the package documentation).
const (
	PVE74 = "7.4-17" // last PVE 7: memory as integer, LXC vmid as string, "checksum missmatch"
	PVE80 = "8.0.4"  // like 7.4 for every difference emulated here
	PVE81 = "8.1.4"  // QEMU memory becomes a string property; default MAC prefix BC:24:11
	PVE82 = "8.2.7"  // LXC list vmid becomes an integer; overrule-shutdown accepted
	PVE83 = "8.3.5"  // error bodies carry "message"; QEMU digest text spelled "mismatch"
	PVE84 = "8.4.1"  // POST body limit raised to 512 KiB
	PVE90 = "9.0.10" // like 8.4 for every difference emulated here
	PVE91 = "9.1.5"  // 401 reasons collapse to "Authentication failed!"; HA status drops "group"
	PVE92 = "9.2.5"  // qemu-server 9.1.19: a QEMU config task takes the config lock itself

	// DefaultVersion is the release emulated when no [WithVersion] is given.
	DefaultVersion = PVE84
)

// version is a parsed Proxmox VE (pve-manager) version, with the
// qemu-server version when [WithQemuServerVersion] pins it.
type version struct {
	text                string
	major, minor, patch int

	// qemuServer is the pinned qemu-server version; nil derives each
	// qemu-server behaviour from the pve-manager version.
	qemuServer *semver
}

// semver is a package version "X.Y.Z".
type semver struct{ major, minor, patch int }

func (a semver) atLeast(major, minor, patch int) bool {
	if a.major != major {
		return a.major > major
	}
	if a.minor != minor {
		return a.minor > minor
	}
	return a.patch >= patch
}

// parseSemver accepts a Debian package version "X.Y.Z" (a "-N" or "+N"
// revision is ignored).
func parseSemver(s string) (semver, error) {
	base := s
	if i := strings.IndexAny(base, "-+~"); i >= 0 {
		base = base[:i]
	}
	parts := strings.Split(base, ".")
	if len(parts) != 3 {
		return semver{}, fmt.Errorf("proxmoxtest: package version %q is not of the form X.Y.Z", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return semver{}, fmt.Errorf("proxmoxtest: package version %q: %q is not a number", s, p)
		}
		n[i] = v
	}
	return semver{n[0], n[1], n[2]}, nil
}

// parseVersion accepts "8", "8.1", "8.1.4" and the PVE 7 spelling "7.4-17".
func parseVersion(s string) (version, error) {
	v := version{text: s}
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	if len(parts) == 0 || len(parts) > 3 {
		return version{}, fmt.Errorf("proxmoxtest: version %q is not of the form X.Y[.Z] or X.Y-Z", s)
	}
	nums := make([]int, 3)
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return version{}, fmt.Errorf("proxmoxtest: version %q: %q is not a number", s, p)
		}
		nums[i] = n
	}
	v.major, v.minor, v.patch = nums[0], nums[1], nums[2]
	if v.major < 7 || v.major > 9 {
		return version{}, fmt.Errorf("proxmoxtest: version %q: only Proxmox VE 7, 8 and 9 are emulated", s)
	}
	return v, nil
}

func (v version) atLeast(major, minor int) bool {
	if v.major != major {
		return v.major > major
	}
	return v.minor >= minor
}

// atLeastPatch compares the full pve-manager version.
func (v version) atLeastPatch(major, minor, patch int) bool {
	return semver{v.major, v.minor, v.patch}.atLeast(major, minor, patch)
}

// qemuServerAtLeast reports whether the emulated qemu-server is at least
// X.Y.Z: the pinned version if there is one, else whether the first
// pve-manager release made after that qemu-server (managerMajor.Minor.Patch)
// is reached.
func (v version) qemuServerAtLeast(major, minor, patch int, managerMajor, managerMinor, managerPatch int) bool {
	if v.qemuServer != nil {
		return v.qemuServer.atLeast(major, minor, patch)
	}
	return v.atLeastPatch(managerMajor, managerMinor, managerPatch)
}

// Behaviour switches, one per observable difference. Each names the release
// that introduced it; the package documentation lists the sources.

// memoryIsString: qemu-server 8.0.8 (PVE 8.1) made QEMU memory a property
// string, so GET config returns it as a JSON string.
func (v version) memoryIsString() bool { return v.qemuServerAtLeast(8, 0, 8, 8, 1, 0) }

// lxcListVMIDInt: pve-container 5.0.10 (PVE 8.2) returns the LXC list vmid as
// an integer; before it was the hash key, a string.
func (v version) lxcListVMIDInt() bool { return v.atLeast(8, 2) }

// overruleShutdown: the stop parameter exists from PVE 8.2.
func (v version) overruleShutdown() bool { return v.atLeast(8, 2) }

// errorMessageField: libpve-http-server-perl 5.2.0 (PVE 8.3) adds "message"
// to json error bodies.
func (v version) errorMessageField() bool { return v.atLeast(8, 3) }

// digestTypoFixed: qemu-server 8.2.5 (PVE 8.3, commit be8c868f "fix typos
// in user-visible strings") fixed "missmatch".
func (v version) digestTypoFixed() bool { return v.qemuServerAtLeast(8, 2, 5, 8, 3, 0) }

// genericAuthErrors: pve-manager 9.1.5, and 8.4.17 on the 8.4 branch
// (commit 26c10a2e "http server: unify error message in case of auth
// failure", PVE/HTTPServer.pm auth_handler), answer every failed ticket
// or token check with "Authentication failed!" and keep the reason for
// the log. 9.0 still names the reason.
func (v version) genericAuthErrors() bool {
	if v.major == 8 {
		return v.atLeastPatch(8, 4, 17)
	}
	return v.atLeastPatch(9, 1, 5)
}

// qemuResizeTask: qemu-server 8.0.2 (PVE 8.0, commit 606d9d76 "fix #2315:
// api: have resize endpoint spawn a worker task") runs a QEMU resize in a
// "resize" task; before, resize_vm ran synchronously and returned null.
func (v version) qemuResizeTask() bool { return v.qemuServerAtLeast(8, 0, 2, 8, 0, 0) }

// lxcResizeForksFirst: pve-container 5.0.1 (PVE 8.0, commit f0595e6 "api:
// resize: fork before locking") checks once in the API handler and again
// in the worker, which takes the config lock; before, the handler took the
// lock, checked, and forked the worker while holding it.
func (v version) lxcResizeForksFirst() bool { return v.major >= 8 }

// lxcPowerLockInWorker: pve-container 5.0.10 (PVE 8.2, commit 7a73568 "api:
// status: move config locking from API handler into worker") takes the
// config lock of start, stop and shutdown in the task; before, the API
// handler took it around the fork.
func (v version) lxcPowerLockInWorker() bool { return v.atLeast(8, 2) }

// qemuConfigPostLockInWorker: qemu-server 9.1.19 (commit 797ab238 "api:
// update vm: fork before locking", PVE/API2/Qemu.pm update_vm_api) checks
// the digest and lock in the handler without the config lock, forks, and
// the qmconfig worker takes the lock and checks again. Before, the handler
// took the lock, checked and forked while holding it, so the worker kept
// the lock until it ended. qemu-server 9.1.19 came out between pve-manager
// 9.2.4 and 9.2.5; unpinned, 9.2.5 is the first release emulated with it.
func (v version) qemuConfigPostLockInWorker() bool { return v.qemuServerAtLeast(9, 1, 19, 9, 2, 5) }

// haGroupField: until pve-ha-manager dropped HA groups for rules (commit
// 86c4db1, PVE 9.1), get_service_status reported the resource's "group".
func (v version) haGroupField() bool { return !v.atLeast(9, 1) }

// bodyLimit is the largest POST/PUT body accepted (64 KiB, 512 KiB from 8.4).
func (v version) bodyLimit() int64 {
	if v.atLeast(8, 4) {
		return 512 * 1024
	}
	return 64 * 1024
}

// defaultMACPrefix is datacenter.cfg's mac_prefix default: the Proxmox OUI
// from PVE 8.1, none (random locally administered) before.
func (v version) defaultMACPrefix() string {
	if v.atLeast(8, 1) {
		return "BC:24:11"
	}
	return ""
}

// release is the "X.Y" form /version reports.
func (v version) release() string { return strconv.Itoa(v.major) + "." + strconv.Itoa(v.minor) }

// repoid is a stable, version-derived stand-in for the git commit id.
func (v version) repoid() string {
	sum := sha1.Sum([]byte("pve-manager " + v.text))
	return hex.EncodeToString(sum[:4])
}

// qemuVersion is what a running VM reports as running-qemu.
func (v version) qemuVersion() string {
	switch {
	case v.major >= 9:
		return "9.2.0"
	case v.atLeast(8, 2):
		return "8.1.5"
	case v.atLeast(8, 0):
		return "8.0.2"
	default:
		return "7.2.0"
	}
}
