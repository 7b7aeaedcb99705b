package proxmoxtest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/guestward/guestward/proxmox"
)

// optKind is the JSON schema type of a guest config option. It decides both
// input validation and how GET config types the value (integers and
// booleans as JSON numbers, everything else as strings).
type optKind uint8

const (
	oStr optKind = iota
	oInt
	oBool
	oNum
	oMemory // QEMU memory: integer before PVE 8.1, "[current=]<int>" string after
)

type fmtKind uint8

const (
	fNone fmtKind = iota
	fDNS
	fTags
	fQemuNet
	fDrive
	fLXCNet
	fMP
	fRootfs
	fStartup
	fURLEncoded
	fUnused
)

type optSpec struct {
	kind     optKind
	format   fmtKind
	enum     []string
	min, max *float64
	maxLen   int
}

var (
	sStr    = optSpec{kind: oStr}
	sBool   = optSpec{kind: oBool}
	sDrive  = optSpec{kind: oStr, format: fDrive}
	sUnused = optSpec{kind: oStr, format: fUnused}
)

func intRange(min, max float64) optSpec { return optSpec{kind: oInt, min: fp(min), max: fp(max)} }
func enumOf(vals ...string) optSpec     { return optSpec{kind: oStr, enum: vals} }

var qemuLocks = []string{"backup", "clone", "create", "migrate", "rollback", "snapshot", "snapshot-delete", "suspending", "suspended"}
var lxcLocks = []string{"backup", "create", "destroyed", "disk", "fstrim", "migrate", "mounted", "rollback", "snapshot", "snapshot-delete"}

// qemuOptions is the subset of qemu-server's $confdesc the fake knows. An
// option outside it is refused as Proxmox refuses unknown options.
var qemuOptions = map[string]optSpec{
	"acpi": sBool, "affinity": sStr, "agent": sStr, "amd-sev": sStr,
	"arch": enumOf("x86_64", "aarch64"), "args": sStr, "audio0": sStr, "autostart": sBool,
	"balloon": {kind: oInt, min: fp(0)}, "bios": enumOf("seabios", "ovmf"), "boot": sStr, "bootdisk": sStr,
	"cicustom": sStr, "cipassword": sStr, "citype": enumOf("configdrive2", "nocloud", "opennebula"),
	"ciupgrade": sBool, "ciuser": sStr, "cores": {kind: oInt, min: fp(1)}, "cpu": sStr,
	"cpulimit": {kind: oNum, min: fp(0), max: fp(128)}, "cpuunits": intRange(1, 262144),
	"description": {kind: oStr, maxLen: 8192}, "efidisk0": sDrive, "freeze": sBool, "hookscript": sStr,
	"hotplug": sStr, "hugepages": enumOf("any", "2", "1024"), "ivshmem": sStr, "keephugepages": sBool,
	"keyboard": sStr, "kvm": sBool, "localtime": sBool, "lock": enumOf(qemuLocks...), "machine": sStr,
	"memory": {kind: oMemory}, "meta": sStr, "migrate_downtime": {kind: oNum, min: fp(0)},
	"migrate_speed": {kind: oInt, min: fp(0)}, "name": {kind: oStr, format: fDNS}, "nameserver": sStr,
	"numa": sBool, "onboot": sBool,
	"ostype":     enumOf("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24", "l26", "solaris"),
	"protection": sBool, "reboot": sBool, "rng0": sStr, "scsihw": enumOf("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas", "pvscsi"),
	"searchdomain": sStr, "shares": intRange(0, 50000), "smbios1": sStr, "smp": {kind: oInt, min: fp(1)},
	"sockets": {kind: oInt, min: fp(1)}, "spice_enhancements": sStr, "sshkeys": {kind: oStr, format: fURLEncoded},
	"startdate": sStr, "startup": {kind: oStr, format: fStartup}, "tablet": sBool,
	"tags": {kind: oStr, format: fTags}, "tdf": sBool, "template": sBool, "tpmstate0": sDrive,
	"vcpus": {kind: oInt, min: fp(1)}, "vga": sStr, "vmgenid": sStr, "vmstatestorage": sStr, "watchdog": sStr,
	"runningmachine": sStr, "runningcpu": sStr, "vmstate": sStr,
}

// lxcOptions is the subset of pve-container's $confdesc the fake knows.
var lxcOptions = map[string]optSpec{
	"arch":  enumOf("amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"),
	"cmode": enumOf("shell", "console", "tty"), "console": sBool, "cores": intRange(1, 8192),
	"cpulimit": {kind: oNum, min: fp(0), max: fp(8192)}, "cpuunits": intRange(0, 500000), "debug": sBool,
	"description": {kind: oStr, maxLen: 8192}, "entrypoint": sStr, "env": sStr, "features": sStr,
	"hookscript": sStr, "hostname": {kind: oStr, format: fDNS, maxLen: 255}, "lock": enumOf(lxcLocks...),
	"memory": {kind: oInt, min: fp(16)}, "nameserver": sStr, "onboot": sBool,
	"ostype":     enumOf("debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine", "gentoo", "nixos", "unmanaged"),
	"protection": sBool, "rootfs": {kind: oStr, format: fRootfs}, "searchdomain": sStr,
	"startup": {kind: oStr, format: fStartup}, "swap": {kind: oInt, min: fp(0)},
	"tags": {kind: oStr, format: fTags}, "template": sBool, "timezone": sStr, "tty": intRange(0, 6),
	"unprivileged": sBool,
}

type family struct {
	prefix string
	max    int
	spec   optSpec
}

var qemuFamilies = []family{
	{"net", 31, optSpec{kind: oStr, format: fQemuNet}},
	{"scsi", 30, sDrive}, {"virtio", 15, sDrive}, {"sata", 5, sDrive}, {"ide", 3, sDrive},
	{"unused", 255, sUnused}, {"ipconfig", 31, sStr}, {"serial", 3, sStr}, {"parallel", 2, sStr},
	{"usb", 29, sStr}, {"hostpci", 15, sStr}, {"numa", 7, sStr}, {"virtiofs", 9, sStr},
}

var lxcFamilies = []family{
	{"net", 31, optSpec{kind: oStr, format: fLXCNet}},
	{"mp", 255, optSpec{kind: oStr, format: fMP}},
	{"unused", 255, sUnused}, {"dev", 255, sStr},
}

var indexedRE = regexp.MustCompile(`^([a-z]+)(0|[1-9]\d{0,2})$`)

// optionSpec looks up a config option of the given guest type.
func optionSpec(t proxmox.GuestType, key string) (optSpec, bool) {
	opts, fams := qemuOptions, qemuFamilies
	if t == proxmox.LXC {
		opts, fams = lxcOptions, lxcFamilies
	}
	if s, ok := opts[key]; ok {
		return s, true
	}
	if m := indexedRE.FindStringSubmatch(key); m != nil {
		n, _ := strconv.Atoi(m[2])
		for _, f := range fams {
			if f.prefix == m[1] && n <= f.max {
				return f.spec, true
			}
		}
	}
	return optSpec{}, false
}

// isQemuDrive reports whether key names a QEMU disk or CD drive.
func isQemuDrive(key string) bool {
	if key == "efidisk0" || key == "tpmstate0" {
		return true
	}
	if m := indexedRE.FindStringSubmatch(key); m != nil {
		switch m[1] {
		case "scsi", "virtio", "sata", "ide":
			s, ok := optionSpec(proxmox.QEMU, key)
			return ok && s.format == fDrive
		}
	}
	return false
}

var (
	dnsNameRE = regexp.MustCompile(`^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)
	urlencRE  = regexp.MustCompile(`^[-%a-zA-Z0-9_.!~*'()]*$`)
	configRE  = regexp.MustCompile(`(?i)^[a-z][a-z0-9_-]+$`)
	startupRE = regexp.MustCompile(`^(?:(order=)?\d+|up=\d+|down=\d+)$`)
)

// checkOption validates one config value the way the update endpoints'
// JSON schema does, returning the text Proxmox puts in the errors map ("" if
// the value is valid). Types are checked first, then formats, then lengths,
// ranges and enumerations, in JSONSchema's order.
func (v version) checkOption(t proxmox.GuestType, key, value string) string {
	spec, ok := optionSpec(t, key)
	if !ok {
		return "property is not defined in schema and the schema does not allow additional properties"
	}
	switch spec.kind {
	case oInt:
		if msg := checkScalar(pInt, value, nil, nil, nil); msg != "" {
			return msg
		}
	case oBool:
		if msg := checkScalar(pBool, value, nil, nil, nil); msg != "" {
			return msg
		}
	case oNum:
		if msg := checkScalar(pNum, value, nil, nil, nil); msg != "" {
			return msg
		}
	case oMemory:
		if !v.memoryIsString() {
			return checkScalar(pInt, value, nil, fp(16), nil)
		}
		if _, err := qemuMemoryFormat.parse(value, key); err != nil {
			return "invalid format - " + err.Error()
		}
		return ""
	}
	if msg := checkFormat(spec.format, key, value); msg != "" {
		return msg
	}
	if spec.maxLen > 0 && utf8.RuneCountInString(value) > spec.maxLen {
		return fmt.Sprintf("value may only be %d characters long", spec.maxLen)
	}
	if spec.kind == oInt || spec.kind == oNum {
		if msg := checkScalar(pNum, value, nil, spec.min, spec.max); msg != "" {
			return msg
		}
	}
	if len(spec.enum) > 0 {
		return checkScalar(pStr, value, spec.enum, nil, nil)
	}
	return ""
}

func checkFormat(f fmtKind, key, value string) string {
	switch f {
	case fDNS:
		if !dnsNameRE.MatchString(value) {
			return "invalid format - value does not look like a valid DNS name\n"
		}
	case fTags:
		for _, tag := range splitList(value) {
			if !tagRE.MatchString(tag) {
				return "invalid format - invalid characters in tag\n"
			}
		}
	case fQemuNet:
		// netN's and the drives' schemas carry a property-string format,
		// so check_prop's check_format (pve-common PVE/JSONSchema.pm)
		// reports parse_property_string's own error: the offending key, or
		// "format error" and one "<option>.<key>: <reason>" line per bad
		// value.
		if _, err := qemuNetFormat.parse(value, key); err != nil {
			return "invalid format - " + err.Error()
		}
	case fDrive:
		if _, err := qemuDriveFormat.parse(value, key); err != nil {
			return "invalid format - " + err.Error()
		}
	case fLXCNet:
		if _, err := lxcNetFormat.parse(value, key); err != nil {
			return "invalid format - " + err.Error()
		}
	case fMP:
		if _, err := lxcMPFormat.parse(value, key); err != nil {
			return "invalid format - " + err.Error()
		}
	case fRootfs:
		if _, err := lxcRootfsFormat.parse(value, key); err != nil {
			return "invalid format - " + err.Error()
		}
	case fStartup:
		if !validStartup(value) {
			return "invalid format - unable to parse startup options\n"
		}
	case fURLEncoded:
		if !urlencRE.MatchString(value) {
			return "invalid format - invalid urlencoded string: " + value + "\n"
		}
	}
	return ""
}

// validStartup is pve_parse_startup_order: comma-separated "[order=]N",
// "up=N", "down=N"; an empty value is not a valid order.
func validStartup(v string) bool {
	if v == "" || v == "0" {
		return false
	}
	for _, p := range strings.Split(v, ",") {
		if strings.TrimSpace(p) == "" {
			continue
		}
		if !startupRE.MatchString(p) {
			return false
		}
	}
	return true
}

// checkConfigIDList validates a pve-configid-list parameter (delete, revert).
func checkConfigIDList(v string) string {
	for _, id := range splitList(v) {
		if !configRE.MatchString(id) {
			return fmt.Sprintf("invalid format - invalid configuration ID '%s'\n", id)
		}
	}
	return ""
}

// fastPlugQEMU are the options a running VM takes at once
// (qemu-server's $fast_plug_option plus the cloud-init options).
var fastPlugQEMU = map[string]bool{
	"name": true, "description": true, "onboot": true, "startup": true, "protection": true,
	"tags": true, "lock": true, "shares": true, "hookscript": true, "vmstatestorage": true,
	"migrate_downtime": true, "migrate_speed": true,
	"ciuser": true, "cipassword": true, "citype": true, "ciupgrade": true, "cicustom": true,
	"nameserver": true, "searchdomain": true, "sshkeys": true,
}

func isFastPlugQEMU(key string) bool {
	return fastPlugQEMU[key] || strings.HasPrefix(key, "ipconfig") && indexedRE.MatchString(key)
}

// fastPlugLXC is pve-container's $LXC_FASTPLUG_OPTIONS.
var fastPlugLXC = map[string]bool{
	"description": true, "onboot": true, "startup": true, "protection": true, "hostname": true,
	"hookscript": true, "cores": true, "tags": true, "lock": true,
}
