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
	PVE90 = "9.0.10" // 401 reasons collapse to "Authentication failed!"

	// DefaultVersion is the release emulated when no [WithVersion] is given.
	DefaultVersion = PVE84
)

// version is a parsed Proxmox VE (pve-manager) version.
type version struct {
	text                string
	major, minor, patch int
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

// Behaviour switches, one per observable difference. Each names the release
// that introduced it; the package documentation lists the sources.

// memoryIsString: qemu-server 8.0.8 (PVE 8.1) made QEMU memory a property
// string, so GET config returns it as a JSON string.
func (v version) memoryIsString() bool { return v.atLeast(8, 1) }

// lxcListVMIDInt: pve-container 5.0.10 (PVE 8.2) returns the LXC list vmid as
// an integer; before it was the hash key, a string.
func (v version) lxcListVMIDInt() bool { return v.atLeast(8, 2) }

// overruleShutdown: the stop parameter exists from PVE 8.2.
func (v version) overruleShutdown() bool { return v.atLeast(8, 2) }

// errorMessageField: libpve-http-server-perl 5.2.0 (PVE 8.3) adds "message"
// to json error bodies.
func (v version) errorMessageField() bool { return v.atLeast(8, 3) }

// digestTypoFixed: qemu-server 8.2.5 (PVE 8.3) fixed "missmatch".
func (v version) digestTypoFixed() bool { return v.atLeast(8, 3) }

// genericAuthErrors: PVE 9 (and late 8.4 updates) answer every failed
// ticket or token check with "Authentication failed!".
func (v version) genericAuthErrors() bool { return v.major >= 9 }

// qemuResizeTask: qemu-server 8.0.2 (PVE 8.0, commit 606d9d76 "fix #2315:
// api: have resize endpoint spawn a worker task") runs a QEMU resize in a
// "resize" task; before, resize_vm ran synchronously and returned null.
func (v version) qemuResizeTask() bool { return v.major >= 8 }

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

// qemuConfigPostLockInWorker: qemu-server 9.1.19 (PVE 9.2, commit 797ab238
// "api: update vm: fork before locking") takes the config lock of an
// asynchronous config update in the qmconfig task; before, the handler
// took it and forked while holding it.
func (v version) qemuConfigPostLockInWorker() bool { return v.atLeast(9, 2) }

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
