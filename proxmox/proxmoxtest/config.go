package proxmoxtest

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/guestward/guestward/proxmox"
)

// guest is one guest as Proxmox holds it: the parsed current section and
// pending section of its config file (pending deletions live under the
// "delete" key of pending, as in the file), the SHA-1 digest of the file
// text, and the runtime state Proxmox keeps outside the file.
//
// All fields are guarded by Server.mu.
type guest struct {
	ref     proxmox.Ref
	conf    map[string]string
	pending map[string]string
	raw     string
	digest  string

	running        bool
	startedAt      time.Time
	pid            int
	ignoreShutdown bool
	ha             *haResource // nil unless HA-managed

	// cfgLockTask is the task whose worker holds the guest's config lock
	// (lock_config's flock, not the "lock:" property) while it runs: a
	// qmconfig task before qemu-server 9.1.19, whose handler took the lock
	// and forked with it held. See Server.awaitConfigLockLocked.
	cfgLockTask *task
	// cfgLockWaiters counts writers waiting for cfgLockTask to end.
	cfgLockWaiters int

	// Encoded JSON payloads, rebuilt lazily after every change.
	cacheMerged, cacheCurrent, cachePending []byte
}

func (g *guest) locked() string   { return g.conf["lock"] }
func (g *guest) template() bool   { return g.conf["template"] == "1" }
func (g *guest) isLXC() bool      { return g.ref.Type == proxmox.LXC }
func (g *guest) invalidate()      { g.cacheMerged, g.cacheCurrent, g.cachePending = nil, nil, nil }
func (g *guest) kindWord() string { return kindWord(g.ref.Type) }

// kindWord is the word check_lock and friends use: "VM" or "CT".
func kindWord(t proxmox.GuestType) string {
	if t == proxmox.LXC {
		return "CT"
	}
	return "VM"
}

// configPath is the pmxcfs path Proxmox names in "does not exist" errors.
func configPath(r proxmox.Ref) string {
	if r.Type == proxmox.LXC {
		return fmt.Sprintf("nodes/%s/lxc/%d.conf", r.Node, r.VMID)
	}
	return fmt.Sprintf("nodes/%s/qemu-server/%d.conf", r.Node, r.VMID)
}

func errConfigMissing(r proxmox.Ref) string {
	return fmt.Sprintf("Configuration file '%s' does not exist", configPath(r))
}

// perlSplitLines is Perl's split(/\n/, $s): trailing empty fields dropped.
func perlSplitLines(s string) []string {
	parts := strings.Split(s, "\n")
	for len(parts) > 0 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	return parts
}

// fileValue applies the check_type conversion Proxmox runs on every value
// it writes (QEMU) or parses (both): integers lose leading zeros and signs
// are refused, booleans in any spelling become 1/0, numbers must be plain
// decimals, formatted strings must parse, and unformatted QEMU strings lose
// one pair of surrounding double quotes.
func (v version) fileValue(t proxmox.GuestType, key, val string) (string, error) {
	spec, ok := optionSpec(t, key)
	if !ok {
		return "", fmt.Errorf("unknown setting '%s'", key)
	}
	if strings.ContainsAny(val, "\n\r") {
		return "", fmt.Errorf("property contains a line feed")
	}
	kind := spec.kind
	if kind == oMemory {
		if v.memoryIsString() {
			if msg := v.checkOption(t, key, val); msg != "" {
				return "", fmt.Errorf("%s", strings.TrimSuffix(msg, "\n"))
			}
			return val, nil
		}
		kind = oInt
	}
	switch kind {
	case oBool:
		if b, ok := parseBoolean(val); ok {
			return b, nil
		}
		return "", fmt.Errorf("type check ('boolean') failed - got '%s'", val)
	case oInt:
		if !digitsRE.MatchString(val) {
			return "", fmt.Errorf("type check ('integer') failed - got '%s'", val)
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return "", fmt.Errorf("type check ('integer') failed - got '%s'", val)
		}
		return strconv.FormatInt(n, 10), nil
	case oNum:
		if !plainNumberRE.MatchString(val) {
			return "", fmt.Errorf("type check ('number') failed - got '%s'", val)
		}
		return val, nil
	}
	if spec.format != fNone {
		if msg := checkFormat(spec.format, key, val); msg != "" {
			return "", fmt.Errorf("%s", strings.TrimPrefix(strings.TrimSuffix(msg, "\n"), "invalid format - "))
		}
		return val, nil
	}
	if t == proxmox.QEMU && len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
		val = val[1 : len(val)-1]
	}
	return val, nil
}

var (
	digitsRE      = regexp.MustCompile(`^\d+$`)
	plainNumberRE = regexp.MustCompile(`^\d+(\.\d+)?$`)
	confLineRE    = regexp.MustCompile(`^([a-z][a-z_\-]*\d*):\s*(.+?)\s*$`)
	deleteLineRE  = regexp.MustCompile(`^delete:\s*(.*\S)\s*$`)
	sectionRE     = regexp.MustCompile(`^\[([a-zA-Z][a-zA-Z0-9_\-:]+)\]\s*$`)
)

// serialize writes the config file text the way write_vm_config (QEMU) or
// write_pct_config (LXC) does.
func (v version) serialize(t proxmox.GuestType, conf, pending map[string]string) (string, error) {
	var b strings.Builder
	if err := v.writeSection(&b, t, conf, false); err != nil {
		return "", err
	}
	if len(pending) > 0 {
		if t == proxmox.LXC {
			b.WriteString("\n[pve:pending]\n")
		} else {
			b.WriteString("\n[PENDING]\n")
		}
		if err := v.writeSection(&b, t, pending, true); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}

func (v version) writeSection(b *strings.Builder, t proxmox.GuestType, vals map[string]string, pending bool) error {
	if descr, ok := vals["description"]; ok {
		if t == proxmox.LXC {
			if descr != "" && descr != "0" { // Perl truthiness: "0" writes nothing
				for _, line := range perlSplitLines(descr) {
					b.WriteString("#" + encodeText(line) + "\n")
				}
			}
		} else if descr != "" && descr != "0" { // Perl truthiness again
			for _, line := range perlSplitLines(descr) {
				b.WriteString("#" + encodeText(line) + "\n")
			}
		} else if pending {
			// write_vm_config writes an empty or "0" description only
			// in the pending section, as "#"; in the current section it
			// is dropped and reads back absent.
			b.WriteString("#\n")
		}
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		if k != "description" && k != "digest" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		val := vals[k]
		if k == "delete" {
			if !pending {
				return fmt.Errorf("property 'delete' is only allowed in the pending section")
			}
		} else if t == proxmox.LXC {
			if strings.Contains(val, "\n") {
				return fmt.Errorf("detected invalid newline inside property '%s'", k)
			}
		} else {
			nv, err := v.fileValue(t, k, val)
			if err != nil {
				return fmt.Errorf("unable to parse value of '%s' - %v", k, err)
			}
			val = nv
		}
		b.WriteString(k + ": " + val + "\n")
	}
	return nil
}

// parse reads config file text back the way parse_vm_config /
// parse_pct_config do. QEMU strips trailing whitespace from the whole
// description; LXC appends "\n" to every comment line and never trims.
// Lines Proxmox could not parse are dropped, as Proxmox drops them (with a
// warning nobody sees).
func (v version) parse(t proxmox.GuestType, raw string) (conf, pending map[string]string) {
	conf, pending = map[string]string{}, map[string]string{}
	cur := conf
	section := "main"
	var descr *string
	finish := func() {
		if descr == nil {
			return
		}
		d := *descr
		if t == proxmox.LXC {
			if d != "" {
				cur["description"] = d
			}
		} else {
			// parse_vm_config (qemu-server PVE/QemuServer.pm) strips
			// "\s+$" from the decoded text: Perl's Unicode white space,
			// NBSP and the ideographic space included, which is exactly
			// unicode.IsSpace.
			cur["description"] = strings.TrimRightFunc(d, unicode.IsSpace)
		}
		descr = nil
	}
	for _, line := range strings.Split(raw, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if m := sectionRE.FindStringSubmatch(line); m != nil {
			finish()
			if (t == proxmox.QEMU && strings.EqualFold(m[1], "PENDING")) || (t == proxmox.LXC && strings.EqualFold(m[1], "pve:pending")) {
				section, cur = "pending", pending
			} else {
				section, cur = "snapshot", map[string]string{}
			}
			continue
		}
		if line[0] == '#' {
			if descr == nil {
				s := ""
				descr = &s
			}
			*descr += decodeText(line[1:]) + "\n"
			continue
		}
		if m := deleteLineRE.FindStringSubmatch(line); m != nil {
			if section == "pending" {
				cur["delete"] = m[1]
			}
			continue
		}
		if m := confLineRE.FindStringSubmatch(line); m != nil {
			val, err := v.fileValue(t, m[1], m[2])
			if err != nil {
				continue
			}
			cur[m[1]] = val
		}
	}
	finish()
	return conf, pending
}

// qemuNewDiskBytes is the size= create_disks (qemu-server
// PVE/API2/Qemu.pm) records for "storage:<GiB>": the GiB converted to KiB
// by pve-common's PVE::Tools::convert_size, which rounds any fraction up
// to a whole KiB, then back to bytes.
func qemuNewDiskBytes(gib string) int64 {
	f, _ := strconv.ParseFloat(gib, 64)
	kib := f * (1 << 20)
	n := int64(kib)
	if kib-float64(n) > 0 {
		n++
	}
	return n << 10
}

// lxcNewVolumeBytes is the size= pve-container records for a new mount
// point "storage:<GiB>" (PVE/LXC.pm create_disks): int(GiB * 1024) MiB, a
// fraction of a MiB truncated.
func lxcNewVolumeBytes(gib string) int64 {
	f, _ := strconv.ParseFloat(gib, 64)
	return int64(f*1024) << 20
}

// commit writes g's config "file": serializes the current and pending
// sections, re-reads the text (so every parse-side effect, such as
// description trimming, shows exactly as on a real node) and recomputes the
// digest. On error g is unchanged.
func (s *Server) commit(g *guest) error {
	raw, err := s.cfg.version.serialize(g.ref.Type, g.conf, g.pending)
	if err != nil {
		return err
	}
	conf, pending := s.cfg.version.parse(g.ref.Type, raw)
	if g.ref.Type == proxmox.QEMU {
		dropReaddedUnused(conf)
	}
	g.conf, g.pending, g.raw = conf, pending, raw
	sum := sha1.Sum([]byte(raw))
	g.digest = hex.EncodeToString(sum[:])
	g.invalidate()
	return nil
}

// dropReaddedUnused removes unusedN entries whose volume is attached again,
// as write_vm_config does.
func dropReaddedUnused(conf map[string]string) {
	used := map[string]bool{}
	for k, v := range conf {
		if isQemuDrive(k) {
			if d, err := qemuDriveFormat.parse(v, k); err == nil {
				used[d["file"]] = true
			}
		}
	}
	for k, v := range conf {
		if strings.HasPrefix(k, "unused") && used[v] {
			delete(conf, k)
		}
	}
}

// Pending deletions: "delete: a,!b" in the pending section; '!' = force.

func parsePendingDelete(s string) map[string]bool {
	out := map[string]bool{}
	for _, k := range splitList(s) {
		force := strings.HasPrefix(k, "!")
		k = strings.TrimPrefix(k, "!")
		if k != "" {
			out[k] = force
		}
	}
	return out
}

func setPendingDelete(pending map[string]string, del map[string]bool) {
	if len(del) == 0 {
		delete(pending, "delete")
		return
	}
	keys := make([]string, 0, len(del))
	for k := range del {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if del[k] {
			keys[i] = "!" + k
		}
	}
	pending["delete"] = strings.Join(keys, ",")
}

func addPendingDelete(pending map[string]string, key string, force bool) {
	del := parsePendingDelete(pending["delete"])
	delete(pending, key)
	del[key] = force
	setPendingDelete(pending, del)
}

func removePendingDelete(pending map[string]string, key string) {
	del := parsePendingDelete(pending["delete"])
	if _, ok := del[key]; ok {
		delete(del, key)
		setPendingDelete(pending, del)
	}
}

// cleanupPending drops pending values equal to the current ones and pending
// deletions of keys that are not set (AbstractConfig::cleanup_pending).
func cleanupPending(conf, pending map[string]string) {
	for k, v := range pending {
		if k == "delete" {
			continue
		}
		if cur, ok := conf[k]; ok && cur == v {
			delete(pending, k)
		}
	}
	del := parsePendingDelete(pending["delete"])
	for k := range del {
		if _, ok := conf[k]; !ok {
			delete(del, k)
		}
	}
	setPendingDelete(pending, del)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// --- volumes -----------------------------------------------------------

var (
	newDiskRE   = regexp.MustCompile(`^(([^/:\s]+):)?(\d+(\.\d+)?)$`)
	cloudinitRE = regexp.MustCompile(`^([^/:\s]+):cloudinit$`)
	volidRE     = regexp.MustCompile(`^([^/:\s]+):(?:\d+/)?(?:vm|subvol|base)-(\d+)-(disk-(\d+)|cloudinit)`)
)

// registerVolume records a volume as allocated so it is not handed out again.
func (s *Server) registerVolume(volid string) {
	m := volidRE.FindStringSubmatch(volid)
	if m == nil {
		return
	}
	s.volumes[volid] = true
	if m[4] != "" {
		n, _ := strconv.Atoi(m[4])
		key := m[1] + "/" + m[2]
		if s.diskNums[key] == nil {
			s.diskNums[key] = map[int]bool{}
		}
		s.diskNums[key][n] = true
	}
}

func (s *Server) freeVolume(volid string) {
	m := volidRE.FindStringSubmatch(volid)
	if m == nil {
		return
	}
	delete(s.volumes, volid)
	if m[4] != "" {
		n, _ := strconv.Atoi(m[4])
		delete(s.diskNums[m[1]+"/"+m[2]], n)
	}
}

func errNoStorage(id string) error { return fmt.Errorf("storage '%s' does not exist", id) }

// allocDisk allocates a new disk volume on storage for vmid, named as the
// storage plugin names it, and returns its volume id.
func (s *Server) allocDisk(storage string, vmid int, container bool) (string, error) {
	kind, ok := s.storages[storage]
	if !ok {
		return "", errNoStorage(storage)
	}
	key := storage + "/" + strconv.Itoa(vmid)
	n := 0
	for s.diskNums[key][n] {
		n++
	}
	var volid string
	switch kind {
	case StorageDir:
		ext := ".qcow2"
		if container {
			ext = ".raw"
		}
		volid = fmt.Sprintf("%s:%d/vm-%d-disk-%d%s", storage, vmid, vmid, n, ext)
	case StorageZFS:
		prefix := "vm"
		if container {
			prefix = "subvol"
		}
		volid = fmt.Sprintf("%s:%s-%d-disk-%d", storage, prefix, vmid, n)
	default:
		volid = fmt.Sprintf("%s:vm-%d-disk-%d", storage, vmid, n)
	}
	s.registerVolume(volid)
	return volid, nil
}

func (s *Server) allocCloudinit(storage string, vmid int) (string, error) {
	kind, ok := s.storages[storage]
	if !ok {
		return "", errNoStorage(storage)
	}
	volid := fmt.Sprintf("%s:vm-%d-cloudinit", storage, vmid)
	if kind == StorageDir {
		volid = fmt.Sprintf("%s:%d/vm-%d-cloudinit.qcow2", storage, vmid, vmid)
	}
	s.registerVolume(volid)
	return volid, nil
}

// checkVolumeStorage refuses a storage:volume id on an unknown storage.
func (s *Server) checkVolumeStorage(volid string) error {
	if strings.HasPrefix(volid, "/") || volid == "none" || volid == "cdrom" {
		return nil
	}
	if i := strings.IndexByte(volid, ':'); i > 0 {
		if _, ok := s.storages[volid[:i]]; !ok {
			return errNoStorage(volid[:i])
		}
	}
	return nil
}

// addUnused records volid as unusedN (the first free N), unless it is
// already listed.
func addUnused(conf map[string]string, volid string) {
	for k, v := range conf {
		if strings.HasPrefix(k, "unused") && v == volid {
			return
		}
	}
	for i := 0; i < 256; i++ {
		k := "unused" + strconv.Itoa(i)
		if _, ok := conf[k]; !ok {
			conf[k] = volid
			return
		}
	}
}

func driveIsCdrom(d map[string]string) bool { return d["media"] == "cdrom" }

func driveIsCloudinit(d map[string]string) bool {
	return strings.Contains(d["file"], "-cloudinit")
}

// registerUnusedDrive is vmconfig_register_unused_drive: a detached disk
// (not a CD, not the cloud-init drive) becomes unusedN.
func registerUnusedDrive(conf map[string]string, key, value string) {
	d, err := qemuDriveFormat.parse(value, key)
	if err != nil || driveIsCdrom(d) || driveIsCloudinit(d) {
		return
	}
	if strings.Contains(d["file"], ":") && !strings.HasPrefix(d["file"], "/") {
		addUnused(conf, d["file"])
	}
}

// qemuCreateDisk is create_disks for one drive option: "storage:size"
// allocates a volume and records its size (format is dropped),
// "storage:cloudinit" allocates the cloud-init drive, and any value is
// re-printed in canonical property-string order.
func (s *Server) qemuCreateDisk(vmid int, key, value string) (string, error) {
	d, ferr := qemuDriveFormat.parse(value, key)
	if ferr != nil {
		return "", fmt.Errorf("unable to parse drive options")
	}
	file := d["file"]
	switch {
	case newDiskRE.MatchString(file):
		m := newDiskRE.FindStringSubmatch(file)
		storage := m[2]
		if storage == "" {
			return "", fmt.Errorf("no storage ID specified (and no default storage)")
		}
		kind, ok := s.storages[storage]
		if !ok {
			return "", errNoStorage(storage)
		}
		var size int64
		switch key {
		case "efidisk0":
			size = 128 << 10
			if d["efitype"] == "4m" {
				size = 528 << 10
			}
			switch kind {
			case StorageLVMThin:
				size = 4 << 20
			case StorageZFS:
				size = 1 << 20
			}
		case "tpmstate0":
			size = 4 << 20
		default:
			size = qemuNewDiskBytes(m[3])
		}
		volid, err := s.allocDisk(storage, vmid, false)
		if err != nil {
			return "", err
		}
		d["file"] = volid
		d["size"] = strconv.FormatInt(size, 10)
		delete(d, "format")
	case cloudinitRE.MatchString(file):
		volid, err := s.allocCloudinit(cloudinitRE.FindStringSubmatch(file)[1], vmid)
		if err != nil {
			return "", err
		}
		d["file"] = volid
		d["media"] = "cdrom"
		delete(d, "format")
		delete(d, "size")
	default:
		if err := s.checkVolumeStorage(file); err != nil {
			return "", err
		}
	}
	out, perr := qemuDriveFormat.print(d)
	if perr != nil {
		return "", fmt.Errorf("%s", strings.TrimSuffix(perr.Error(), "\n"))
	}
	return out, nil
}

// qemuPrintNet is parse_net + print_net: the model and MAC folded into
// "<model>=<MAC>" first, a MAC generated when none was given, the other keys
// sorted.
func (s *Server) qemuPrintNet(key, value string) (string, error) {
	n, err := qemuNetFormat.parse(value, key)
	if err != nil {
		return "", fmt.Errorf("unable to parse network options")
	}
	if _, ok := n["macaddr"]; !ok {
		n["macaddr"] = randomMAC(s.rng, s.macPrefix)
	}
	out, perr := qemuNetFormat.print(n)
	if perr != nil {
		return "", fmt.Errorf("%s", strings.TrimSuffix(perr.Error(), "\n"))
	}
	return out, nil
}

// lxcPrintNet is parse_lxc_network + print_lxc_network: type forced to
// veth, hwaddr generated when missing, "name" first, the rest sorted.
func (s *Server) lxcPrintNet(key, value string) (string, error) {
	n, err := lxcNetFormat.parse(value, key)
	if err != nil {
		return "", fmt.Errorf("%s", strings.TrimSuffix(err.Error(), "\n"))
	}
	n["type"] = "veth"
	if n["hwaddr"] == "" {
		n["hwaddr"] = randomMAC(s.rng, s.macPrefix)
	}
	out, perr := lxcNetFormat.print(n)
	if perr != nil {
		return "", fmt.Errorf("%s", strings.TrimSuffix(perr.Error(), "\n"))
	}
	return out, nil
}

// bootOrder returns the devices of a "boot: order=a;b" value.
func bootOrder(boot string) []string {
	for _, part := range strings.Split(boot, ",") {
		if strings.HasPrefix(part, "order=") {
			return splitList(strings.TrimPrefix(part, "order="))
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// hotplugFeatures is parse_hotplug_features for the VM's current hotplug
// option (absent = network,disk,usb; "1" the same; "0" none).
func hotplugFeatures(v string, present bool) map[string]bool {
	if !present || v == "1" {
		return map[string]bool{"network": true, "disk": true, "usb": true}
	}
	out := map[string]bool{}
	if v == "0" {
		return out
	}
	for _, f := range splitList(v) {
		out[f] = true
	}
	return out
}
