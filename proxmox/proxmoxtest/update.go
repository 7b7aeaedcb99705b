package proxmoxtest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// configUpdate is a parsed config write, after the checks Proxmox makes
// before taking the config lock.
type configUpdate struct {
	set      map[string]string
	deletes  []string
	revert   map[string]bool
	force    bool
	skiplock bool
	digest   string
	logArgs  string // "-cores 4 -delete net1", as printed in the task log
}

// parseUpdate does the parameter processing of update_vm_api (QEMU) and
// update_vm (LXC) that happens before the config lock: argument log line,
// root-only checks, cpuunits clamping, "no options specified", the cdrom
// alias, and the delete/revert list checks.
func (s *Server) parseUpdate(t proxmox.GuestType, params map[string]string) (*configUpdate, *apiErr) {
	p := cloneMap(params)
	u := &configUpdate{set: p, revert: map[string]bool{}}
	u.digest = p["digest"]
	delete(p, "digest")
	delete(p, "background_delay")

	args := make([]string, 0, 2*len(p))
	for _, k := range sortedKeys(p) {
		v := p[k]
		if k == "cipassword" {
			v = "<hidden>"
		}
		args = append(args, "-"+k, v)
	}
	u.logArgs = strings.Join(args, " ")

	u.skiplock = p["skiplock"] == "1"
	delStr, hasDel := p["delete"]
	revStr, hasRev := p["revert"]
	u.force = p["force"] == "1"
	for _, k := range []string{"skiplock", "delete", "revert", "force"} {
		delete(p, k)
	}
	if v, ok := p["cpuunits"]; ok {
		// clamp_cpu_shares on a cgroup v2 host (every PVE 7 and 8 default).
		if n, err := strconv.Atoi(v); err == nil && n > 10000 {
			p["cpuunits"] = "10000"
		}
	}
	if (!hasDel || delStr == "") && (!hasRev || revStr == "") && len(p) == 0 {
		return nil, die("no options specified")
	}
	if t == proxmox.QEMU {
		if v, ok := p["cdrom"]; ok {
			if !strings.Contains(v, "media=") {
				v += ",media=cdrom"
			}
			p["ide2"] = v
			delete(p, "cdrom")
		}
	}
	for _, opt := range splitList(revStr) {
		if _, ok := optionSpec(t, opt); !ok {
			return nil, paramErr1("revert", fmt.Sprintf("unknown option '%s'", opt))
		}
		if _, ok := p[opt]; ok {
			return nil, paramErr1("delete", fmt.Sprintf("you can't use '-%s' and -revert %s' at the same time", opt, opt))
		}
		u.revert[opt] = true
	}
	for _, opt := range splitList(delStr) {
		if t == proxmox.QEMU && opt == "cdrom" {
			opt = "ide2"
		}
		if _, ok := p[opt]; ok {
			return nil, paramErr1("delete", fmt.Sprintf("you can't use '-%s' and -delete %s' at the same time", opt, opt))
		}
		if u.revert[opt] {
			return nil, paramErr1("revert", fmt.Sprintf("you can't use '-delete %s' and -revert %s' at the same time", opt, opt))
		}
		if _, ok := optionSpec(t, opt); !ok {
			return nil, paramErr1("delete", fmt.Sprintf("unknown option '%s'", opt))
		}
		u.deletes = append(u.deletes, opt)
	}
	return u, nil
}

// clone copies u so that a check run on the copy (which may add reverted
// options to set and deletes) leaves u as the request sent it.
func (u *configUpdate) clone() *configUpdate {
	c := *u
	c.set = cloneMap(u.set)
	c.deletes = append([]string(nil), u.deletes...)
	return &c
}

// qemuPrepareLocked is the synchronous part of a QEMU config update, run
// under s.mu: NICs get their MAC now, storages are checked, then (inside
// what is Proxmox's config lock) the digest is compared, then the lock.
func (s *Server) qemuPrepareLocked(ref proxmox.Ref, u *configUpdate, ignoreLock bool) *apiErr {
	if aerr := s.qemuPrepareParamsLocked(u); aerr != nil {
		return aerr
	}
	return s.qemuLoadAndCheckLocked(ref, u, ignoreLock)
}

// qemuPrepareParamsLocked is update_vm_api's parameter work before any
// config is read: NICs get their MAC, vmgenid=1 a UUID, a plain cloud-init
// password its hash, and new disks' storages are checked. It runs once per
// request, so a retried check sees the same values.
func (s *Server) qemuPrepareParamsLocked(u *configUpdate) *apiErr {
	for _, k := range sortedKeys(u.set) {
		v := u.set[k]
		switch {
		case strings.HasPrefix(k, "net") && isIndexed(k):
			out, err := s.qemuPrintNet(k, v)
			if err != nil {
				return paramErr1(k, "invalid format - "+err.Error()+"\n")
			}
			u.set[k] = out
		case k == "vmgenid" && v == "1":
			u.set[k] = randomUUID(s.rng)
		case k == "cipassword" && !cryptRE.MatchString(v):
			u.set[k] = s.hashPassword(v)
		case isQemuDrive(k):
			d, ferr := qemuDriveFormat.parse(v, k)
			if ferr != nil {
				return paramErr1(k, "invalid format - unable to parse drive options\n")
			}
			file := d["file"]
			if m := newDiskRE.FindStringSubmatch(file); m != nil && m[2] != "" {
				if _, ok := s.storages[m[2]]; !ok {
					return die("%v", errNoStorage(m[2]))
				}
			} else if m := cloudinitRE.FindStringSubmatch(file); m != nil {
				if _, ok := s.storages[m[1]]; !ok {
					return die("%v", errNoStorage(m[1]))
				}
			} else if err := s.checkVolumeStorage(file); err != nil {
				return die("%v", err)
			}
		}
	}
	return nil
}

// qemuLoadAndCheckLocked is update_vm_api's $load_and_check_config
// (qemu-server PVE/API2/Qemu.pm): load the config, compare the digest,
// check the lock, resolve reverts into u and check the balloon against
// the memory. From qemu-server 9.1.19 it runs twice for an asynchronous
// update, in the handler and again in the worker under the config lock.
func (s *Server) qemuLoadAndCheckLocked(ref proxmox.Ref, u *configUpdate, ignoreLock bool) *apiErr {
	g := s.lookupLocked(ref)
	if g == nil {
		return die("%s", errConfigMissing(ref))
	}
	if u.digest != "" && u.digest != g.digest {
		if s.cfg.version.digestTypoFixed() {
			return die("checksum mismatch (file change by other user?)")
		}
		return die("checksum missmatch (file change by other user?)")
	}
	if l := g.locked(); l != "" && !u.skiplock && !ignoreLock {
		return die("VM is locked (%s)", l)
	}
	for opt := range u.revert {
		if v, ok := g.conf[opt]; ok {
			u.set[opt] = v
		} else if _, ok := g.pending[opt]; ok {
			u.deletes = append(u.deletes, opt)
		}
	}
	_, setMem := u.set["memory"]
	if _, setBal := u.set["balloon"]; setMem || setBal {
		maxmem := firstNonEmpty(u.set["memory"], g.pending["memory"], g.conf["memory"])
		bal := u.set["balloon"]
		if _, ok := u.set["balloon"]; !ok {
			bal = firstNonEmpty(g.pending["balloon"], g.conf["balloon"])
		}
		b, _ := strconv.ParseInt(bal, 10, 64)
		if b > 0 && b > memoryMiB(maxmem) {
			return die("balloon value too large (must be smaller than assigned memory)")
		}
	}
	return nil
}

// cryptRE recognises a crypt(3) hash, which Proxmox stores as given.
var cryptRE = regexp.MustCompile(`^\$(?:[156]|2[ay])(\$.+){2}`)

// hashPassword stands in for PVE::Tools::encrypt_pw: Proxmox stores a
// cloud-init password as a SHA-256 crypt hash ("$5$salt$hash"). The shape
// is the same here; the hash is not crypt(3)-exact.
func (s *Server) hashPassword(pw string) string {
	var raw [16]byte
	binary.LittleEndian.PutUint64(raw[:8], s.rng.Uint64())
	binary.LittleEndian.PutUint64(raw[8:], s.rng.Uint64())
	salt := raw[:12]
	enc := base64.RawStdEncoding
	sum := sha256.Sum256(append(salt, pw...))
	return "$5$" + enc.EncodeToString(salt) + "$" + enc.EncodeToString(sum[:])
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func isIndexed(k string) bool { return indexedRE.MatchString(k) }

func updateLogLine(ref proxmox.Ref, u *configUpdate) string {
	return fmt.Sprintf("update VM %d: %s", ref.VMID, u.logArgs)
}

// qemuWorkerLocked writes a QEMU update to the pending section and applies
// it: the worker of update_vm_api. It runs synchronously for PUT and inside
// the qmconfig task for POST. Like Proxmox it writes the config after every
// option, so a failure part-way leaves the earlier options written.
func (s *Server) qemuWorkerLocked(ref proxmox.Ref, u *configUpdate) (log []string, err error) {
	g := s.lookupLocked(ref)
	if g == nil {
		return log, fmt.Errorf("%s", errConfigMissing(ref))
	}
	modified := map[string]bool{}
	order := bootOrder(g.conf["boot"])
	bootDeleted := contains(u.deletes, "bootorder")
	// step runs one option's change and writes the config, as Proxmox
	// writes after every option; a failed step leaves no trace in memory.
	step := func(change func() error) error {
		oldConf, oldPending := cloneMap(g.conf), cloneMap(g.pending)
		err := change()
		if err == nil {
			err = s.commit(g)
		}
		if err != nil {
			g.conf, g.pending = oldConf, oldPending
		}
		return err
	}
	protected := func(what string) error {
		if g.conf["protection"] == "1" {
			return fmt.Errorf("%s - protection mode enabled", what)
		}
		return nil
	}
	for _, opt := range u.deletes {
		modified[opt] = true
		val, inConf := g.conf[opt]
		pval, inPend := g.pending[opt]
		if !inConf && !inPend {
			log = append(log, fmt.Sprintf("cannot delete '%s' - not set in current configuration!", opt))
			modified[opt] = false
			continue
		}
		if !inConf {
			val = pval
		}
		err := step(func() error {
			delete(g.pending, opt)
			if !bootDeleted && contains(order, opt) {
				order = without(order, opt)
				g.pending["boot"] = printBootOrder(order)
				modified["boot"] = true
			}
			switch {
			case strings.HasPrefix(opt, "unused"):
				if err := protected(fmt.Sprintf("can't remove unused disk '%s'", val)); err != nil {
					return err
				}
				s.freeVolume(val)
				delete(g.conf, opt)
			case isQemuDrive(opt):
				if err := protected(fmt.Sprintf("can't remove drive '%s'", opt)); err != nil {
					return err
				}
				if inPend {
					registerUnusedDrive(g.conf, opt, pval)
				}
				addPendingDelete(g.pending, opt, u.force)
			case opt == "tags":
				delete(g.conf, opt)
			default:
				addPendingDelete(g.pending, opt, u.force)
			}
			return nil
		})
		if err != nil {
			return log, err
		}
	}
	for _, opt := range sortedKeys(u.set) {
		v := u.set[opt]
		modified[opt] = true
		if pv, ok := g.pending[opt]; ok && pv == v {
			continue
		}
		err := step(func() error {
			switch {
			case isQemuDrive(opt):
				if pv, ok := g.pending[opt]; ok {
					registerUnusedDrive(g.conf, opt, pv)
				}
				created, err := s.qemuCreateDisk(ref.VMID, opt, v)
				if err != nil {
					return err
				}
				g.pending[opt] = created
				if len(order) > 0 {
					if d, ferr := qemuDriveFormat.parse(created, opt); ferr == nil && driveIsCdrom(d) && !contains(order, opt) {
						order = append(order, opt)
						g.pending["boot"] = printBootOrder(order)
						modified["boot"] = true
					}
				}
			case opt == "tags":
				g.pending[opt] = s.cfg.tagStyle.uniqueTags(v)
			case opt == "boot":
				g.pending[opt] = v
				if devs := bootOrder(v); devs != nil {
					for _, dev := range devs {
						_, inConf := g.conf[dev]
						_, inPend := g.pending[dev]
						_, inSet := u.set[dev]
						if !(inConf || inPend || inSet) || contains(u.deletes, dev) {
							return fmt.Errorf("invalid bootorder: device '%s' does not exist'", dev)
						}
					}
					g.pending[opt] = "order=" + strings.Join(devs, ";")
					if _, ok := g.conf["bootdisk"]; ok {
						addPendingDelete(g.pending, "bootdisk", false)
					}
				}
			default:
				g.pending[opt] = v
			}
			removePendingDelete(g.pending, opt)
			return nil
		})
		if err != nil {
			return log, err
		}
	}
	err = step(func() error {
		cleanupPending(g.conf, g.pending)
		return nil
	})
	if err != nil || len(g.pending) == 0 {
		return log, err
	}
	err = step(func() error {
		if g.running {
			s.qemuHotplugLocked(g, modified)
		} else {
			s.qemuApplyPendingLocked(g)
		}
		return nil
	})
	return log, err
}

// printBootOrder is print_bootorder (qemu-server PVE/QemuServer.pm): an
// empty list prints as an empty value, not "order=".
func printBootOrder(devs []string) string {
	if len(devs) == 0 {
		return ""
	}
	return "order=" + strings.Join(devs, ";")
}

func without(list []string, s string) []string {
	out := list[:0:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// qemuApplyPendingLocked is vmconfig_apply_pending for a stopped VM:
// deletions first (detached disks become unusedN unless forced), then every
// pending value moves to the current section.
func (s *Server) qemuApplyPendingLocked(g *guest) {
	del := parsePendingDelete(g.pending["delete"])
	for _, opt := range sortedBoolKeys(del) {
		if v, ok := g.conf[opt]; ok && isQemuDrive(opt) {
			s.detachDriveLocked(g, opt, v, del[opt])
		}
		delete(g.conf, opt)
		removePendingDelete(g.pending, opt)
	}
	cleanupPending(g.conf, g.pending)
	for _, opt := range sortedKeys(g.pending) {
		if opt == "delete" {
			continue
		}
		if old, ok := g.conf[opt]; ok && isQemuDrive(opt) && old != g.pending[opt] {
			od, e1 := qemuDriveFormat.parse(old, opt)
			nd, e2 := qemuDriveFormat.parse(g.pending[opt], opt)
			if e1 == nil && e2 == nil && od["file"] != nd["file"] {
				registerUnusedDrive(g.conf, opt, old)
			}
		}
		g.conf[opt] = g.pending[opt]
		delete(g.pending, opt)
	}
}

// detachDriveLocked is vmconfig_delete_or_detach_drive.
func (s *Server) detachDriveLocked(g *guest, opt, value string, force bool) {
	d, err := qemuDriveFormat.parse(value, opt)
	if err != nil || driveIsCdrom(d) {
		return
	}
	if force || driveIsCloudinit(d) {
		s.freeVolume(d["file"])
		return
	}
	registerUnusedDrive(g.conf, opt, value)
}

func sortedBoolKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// qemuHotplugLocked is vmconfig_hotplug_pending for a running VM, limited to
// the options this update touched: fast-plug options apply at once, the
// hotpluggable ones apply if the VM's hotplug setting allows, everything
// else stays pending until the next start.
func (s *Server) qemuHotplugLocked(g *guest, modified map[string]bool) {
	hp, present := g.conf["hotplug"]
	feat := hotplugFeatures(hp, present)
	for _, opt := range sortedKeys(g.pending) {
		if opt != "delete" && modified[opt] && isFastPlugQEMU(opt) {
			g.conf[opt] = g.pending[opt]
			delete(g.pending, opt)
		}
	}
	del := parsePendingDelete(g.pending["delete"])
	for _, opt := range sortedBoolKeys(del) {
		if !modified[opt] {
			continue
		}
		ok := isFastPlugQEMU(opt)
		switch {
		case opt == "tablet":
			ok = feat["usb"]
		case opt == "vcpus":
			ok = feat["cpu"]
		case opt == "balloon":
			ok = g.conf["balloon"] != "0"
		case opt == "cpulimit", opt == "cpuunits", opt == "agent":
			ok = true
		case strings.HasPrefix(opt, "net") && isIndexed(opt):
			ok = feat["network"]
		case strings.HasPrefix(opt, "usb") && isIndexed(opt):
			ok = feat["usb"]
		case isQemuDrive(opt):
			ok = feat["disk"] && (strings.HasPrefix(opt, "scsi") || strings.HasPrefix(opt, "virtio"))
			if ok {
				s.detachDriveLocked(g, opt, g.conf[opt], del[opt])
			}
		}
		if ok {
			delete(g.conf, opt)
			removePendingDelete(g.pending, opt)
		}
	}
	for _, opt := range sortedKeys(g.pending) {
		if opt == "delete" || !modified[opt] {
			continue
		}
		nv := g.pending[opt]
		old, hadOld := g.conf[opt]
		ok := false
		switch {
		case opt == "tablet":
			ok = feat["usb"]
		case opt == "vcpus":
			ok = feat["cpu"]
		case opt == "memory":
			ok = feat["memory"]
		case opt == "balloon":
			// Enabling or disabling the balloon device is not hotpluggable.
			ok = (old == "0") == (nv == "0")
		case opt == "cpulimit", opt == "cpuunits", opt == "agent":
			ok = true
		case strings.HasPrefix(opt, "net") && isIndexed(opt):
			ok = feat["network"]
		case strings.HasPrefix(opt, "usb") && isIndexed(opt):
			ok = feat["usb"]
		case isQemuDrive(opt) && opt != "efidisk0" && opt != "tpmstate0":
			nd, err := qemuDriveFormat.parse(nv, opt)
			if err != nil {
				break
			}
			if driveIsCdrom(nd) {
				ok = true // changing the medium works on any bus
			} else {
				ok = feat["disk"] && (strings.HasPrefix(opt, "scsi") || strings.HasPrefix(opt, "virtio"))
			}
			if ok && hadOld {
				od, err := qemuDriveFormat.parse(old, opt)
				if err == nil && od["file"] != nd["file"] {
					registerUnusedDrive(g.conf, opt, old)
				}
			}
		}
		if ok {
			g.conf[opt] = nv
			delete(g.pending, opt)
		}
	}
}

// lxcUpdateLocked is the LXC PUT config handler body: lock check, digest
// check, update_pct_config on a copy, and the write only when nothing
// failed.
func (s *Server) lxcUpdateLocked(ref proxmox.Ref, u *configUpdate, ignoreLock bool) *apiErr {
	g := s.lookupLocked(ref)
	if g == nil {
		return die("%s", errConfigMissing(ref))
	}
	if l := g.locked(); l != "" && !ignoreLock {
		return die("CT is locked (%s)", l)
	}
	if u.digest != "" && u.digest != g.digest {
		return die("detected modified configuration - file changed by other user? Try again.")
	}
	// Work on copies: a failure must leave the file untouched.
	work := &guest{ref: g.ref, conf: cloneMap(g.conf), pending: cloneMap(g.pending), running: g.running}
	freed, allocated := []string{}, []string{}
	for opt := range u.revert {
		delete(work.pending, opt)
		removePendingDelete(work.pending, opt)
	}
	modified := map[string]bool{}
	protected := func(what string) *apiErr {
		if work.conf["protection"] == "1" {
			return die("%s - protection mode enabled", what)
		}
		return nil
	}
	for _, opt := range u.deletes {
		_, inConf := work.conf[opt]
		_, inPend := work.pending[opt]
		if !inConf && !inPend {
			continue // "cannot delete ... not set" is only a warning
		}
		modified[opt] = true
		switch {
		case opt == "memory" || opt == "rootfs" || opt == "ostype":
			return die("unable to delete required option '%s'", opt)
		case strings.HasPrefix(opt, "unused") || strings.HasPrefix(opt, "mp"):
			if aerr := protected(fmt.Sprintf("can't remove CT %d drive '%s'", ref.VMID, opt)); aerr != nil {
				return aerr
			}
		case opt == "unprivileged":
			return die("unable to delete read-only option: '%s'", opt)
		}
		addPendingDelete(work.pending, opt, false)
	}
	for _, opt := range sortedKeys(u.set) {
		v := u.set[opt]
		modified[opt] = true
		switch {
		case opt == "rootfs" || strings.HasPrefix(opt, "mp") && isIndexed(opt):
			if aerr := protected(fmt.Sprintf("can't update CT %d drive '%s'", ref.VMID, opt)); aerr != nil {
				return aerr
			}
			f := lxcMPFormat
			if opt == "rootfs" {
				f = lxcRootfsFormat
			}
			mp, ferr := f.parse(v, opt)
			if ferr != nil {
				return die("%s", strings.TrimSuffix(ferr.Error(), "\n"))
			}
			vol := mp["volume"]
			if !strings.HasPrefix(vol, "/") {
				sid := vol
				if i := strings.IndexByte(vol, ':'); i >= 0 {
					sid = vol[:i]
				}
				if _, ok := s.storages[sid]; !ok {
					return die("%v", errNoStorage(sid))
				}
			}
		case opt == "nameserver" || opt == "searchdomain":
			v = strings.Join(splitList(v), " ")
		case opt == "unprivileged":
			return die("unable to modify read-only option: '%s'", opt)
		case opt == "tags":
			v = s.cfg.tagStyle.uniqueTags(v)
		}
		work.pending[opt] = v
		removePendingDelete(work.pending, opt)
	}
	cleanupPending(work.conf, work.pending)
	var err error
	if work.running {
		err = s.lxcHotplugLocked(work, modified, &freed, &allocated)
	} else {
		err = s.lxcApplyPendingLocked(work, modified, &freed, &allocated)
	}
	if err == nil {
		_, err = s.cfg.version.serialize(work.ref.Type, work.conf, work.pending)
	}
	if err != nil {
		for _, v := range allocated {
			s.freeVolume(v)
		}
		if pe, ok := err.(paramErrs); ok {
			return paramErr(pe)
		}
		return die("%s", err.Error())
	}
	for _, v := range freed {
		s.freeVolume(v)
	}
	g.conf, g.pending = work.conf, work.pending
	if cerr := s.commit(g); cerr != nil {
		return die("%v", cerr)
	}
	return nil
}

// paramErrs carries per-option apply errors out as a 400.
type paramErrs map[string]string

func (e paramErrs) Error() string { return "Parameter verification failed." }

// lxcApplyPendingLocked is vmconfig_apply_pending for a container. A nil
// selection applies everything (as a start does).
func (s *Server) lxcApplyPendingLocked(g *guest, sel map[string]bool, freed, allocated *[]string) error {
	inSel := func(k string) bool { return sel == nil || sel[k] }
	del := parsePendingDelete(g.pending["delete"])
	for _, opt := range sortedBoolKeys(del) {
		if !inSel(opt) {
			continue
		}
		if strings.HasPrefix(opt, "mp") && isIndexed(opt) {
			if mp, err := lxcMPFormat.parse(g.conf[opt], opt); err == nil && !strings.HasPrefix(mp["volume"], "/") {
				addUnused(g.conf, mp["volume"])
			}
		} else if strings.HasPrefix(opt, "unused") {
			*freed = append(*freed, g.conf[opt])
		}
		delete(g.conf, opt)
		removePendingDelete(g.pending, opt)
	}
	cleanupPending(g.conf, g.pending)
	for _, opt := range sortedKeys(g.pending) {
		if opt == "delete" || !inSel(opt) {
			continue
		}
		switch {
		case strings.HasPrefix(opt, "mp") && isIndexed(opt):
			if err := s.lxcApplyMountpointLocked(g, opt, false, allocated); err != nil {
				if err == errSkip {
					continue
				}
				return paramErrs{opt: fmt.Sprintf("unable to apply pending change %s : %v", opt, err)}
			}
		case strings.HasPrefix(opt, "net") && isIndexed(opt):
			out, err := s.lxcPrintNet(opt, g.pending[opt])
			if err != nil {
				return paramErrs{opt: fmt.Sprintf("unable to apply pending change %s : %v", opt, err)}
			}
			g.pending[opt] = out
		}
		g.conf[opt] = g.pending[opt]
		delete(g.pending, opt)
	}
	return nil
}

var errSkip = fmt.Errorf("skip")

// lxcApplyMountpointLocked is apply_pending_mountpoint: "storage:size"
// allocates a volume, anything else is re-printed; the volume it replaces
// becomes unusedN.
func (s *Server) lxcApplyMountpointLocked(g *guest, opt string, running bool, allocated *[]string) error {
	mp, ferr := lxcMPFormat.parse(g.pending[opt], opt)
	if ferr != nil {
		return fmt.Errorf("%s", strings.TrimSuffix(ferr.Error(), "\n"))
	}
	old, hadOld := g.conf[opt]
	if m := newDiskRE.FindStringSubmatch(mp["volume"]); m != nil {
		if m[2] == "" {
			return fmt.Errorf("no storage ID specified (and no default storage)")
		}
		volid, err := s.allocDisk(m[2], g.ref.VMID, true)
		if err != nil {
			return err
		}
		*allocated = append(*allocated, volid)
		mp["volume"] = volid
		mp["size"] = strconv.FormatInt(lxcNewVolumeBytes(m[3]), 10)
	} else if running && hadOld {
		return errSkip // changing a mounted mount point waits for a restart
	}
	out, perr := lxcMPFormat.print(mp)
	if perr != nil {
		return fmt.Errorf("%s", strings.TrimSuffix(perr.Error(), "\n"))
	}
	g.pending[opt] = out
	if hadOld {
		if om, err := lxcMPFormat.parse(old, opt); err == nil && !strings.HasPrefix(om["volume"], "/") && om["volume"] != mp["volume"] {
			addUnused(g.conf, om["volume"])
		}
	}
	return nil
}

// lxcHotplugLocked is vmconfig_hotplug_pending for a running container.
func (s *Server) lxcHotplugLocked(g *guest, sel map[string]bool, freed, allocated *[]string) error {
	for _, opt := range sortedKeys(g.pending) {
		if opt != "delete" && sel[opt] && fastPlugLXC[opt] {
			g.conf[opt] = g.pending[opt]
			delete(g.pending, opt)
		}
	}
	del := parsePendingDelete(g.pending["delete"])
	for _, opt := range sortedBoolKeys(del) {
		if !sel[opt] {
			continue
		}
		switch {
		case fastPlugLXC[opt], opt == "swap", opt == "cpulimit", opt == "cpuunits",
			strings.HasPrefix(opt, "net") && isIndexed(opt):
		case strings.HasPrefix(opt, "unused"):
			*freed = append(*freed, g.conf[opt])
		default:
			continue // not hotpluggable: stays pending
		}
		delete(g.conf, opt)
		removePendingDelete(g.pending, opt)
	}
	errs := paramErrs{}
	for _, opt := range sortedKeys(g.pending) {
		if opt == "delete" || !sel[opt] {
			continue
		}
		switch {
		case opt == "cpulimit", opt == "cpuunits", opt == "memory", opt == "swap":
		case strings.HasPrefix(opt, "net") && isIndexed(opt):
			out, err := s.lxcPrintNet(opt, g.pending[opt])
			if err != nil {
				errs[opt] = fmt.Sprintf("unable to hotplug %s: %v", opt, err)
				continue
			}
			g.pending[opt] = out
		case strings.HasPrefix(opt, "mp") && isIndexed(opt):
			if _, exists := g.conf[opt]; exists {
				continue
			}
			if err := s.lxcApplyMountpointLocked(g, opt, true, allocated); err != nil {
				if err != errSkip {
					errs[opt] = fmt.Sprintf("unable to hotplug %s: %v", opt, err)
				}
				continue
			}
		case strings.HasPrefix(opt, "dev") && isIndexed(opt):
			if _, exists := g.conf[opt]; exists {
				continue
			}
		default:
			continue
		}
		g.conf[opt] = g.pending[opt]
		delete(g.pending, opt)
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// --- handlers ------------------------------------------------------------

// updateParams are a config write's parameters with "tags=" (sent without
// a value, so present but undefined) kept as an empty tags value: both
// update handlers set tags to get_unique_tags of the value, which is ""
// for an undefined one (pve-guest-common PVE/GuestHelpers.pm
// get_unique_tags), rather than finding no options. Other options sent
// without a value are left out.
func (c *call) updateParams() map[string]string {
	if !c.undef["tags"] {
		return c.params
	}
	p := cloneMap(c.params)
	p["tags"] = ""
	return p
}

func (s *Server) hConfigPut(c *call) (result, *apiErr) {
	u, aerr := s.parseUpdate(c.ref.Type, c.updateParams())
	if aerr != nil {
		return result{}, aerr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// From qemu-server 9.1.19 a QEMU PUT checks once before it takes the
	// lock (update_vm_api's early $load_and_check_config), so a stale
	// digest is reported even when the lock cannot be had.
	if c.ref.Type == proxmox.QEMU && s.cfg.version.qemuConfigPostLockInWorker() {
		if aerr := s.qemuPrepareParamsLocked(u); aerr != nil {
			return result{}, aerr
		}
		if aerr := s.qemuLoadAndCheckLocked(c.ref, u.clone(), false); aerr != nil {
			return result{}, aerr
		}
	}
	// Both PUT handlers run under lock_config (update_vm_api with $sync,
	// pve-container's update_vm).
	if aerr := c.lockedInHandler(); aerr != nil {
		return result{}, aerr
	}
	if c.ref.Type == proxmox.LXC {
		if aerr := s.lxcUpdateLocked(c.ref, u, false); aerr != nil {
			return result{}, aerr
		}
		return result{data: nullData}, nil
	}
	if s.cfg.version.qemuConfigPostLockInWorker() {
		if aerr := s.qemuLoadAndCheckLocked(c.ref, u, false); aerr != nil {
			return result{}, aerr
		}
	} else if aerr := s.qemuPrepareLocked(c.ref, u, false); aerr != nil {
		return result{}, aerr
	}
	if _, err := s.qemuWorkerLocked(c.ref, u); err != nil {
		if pe, ok := err.(paramErrs); ok {
			return result{}, paramErr(pe)
		}
		return result{}, die("%s", strings.TrimSuffix(err.Error(), "\n"))
	}
	return result{data: nullData}, nil
}

func (s *Server) hConfigPost(c *call) (result, *apiErr) {
	u, aerr := s.parseUpdate(proxmox.QEMU, c.updateParams())
	if aerr != nil {
		return result{}, aerr
	}
	s.mu.Lock()
	// update_vm_api (qemu-server PVE/API2/Qemu.pm) before 9.1.19: the
	// handler takes the config lock, checks the digest and the lock, and
	// forks the qmconfig worker while holding the lock, which the worker
	// keeps until it ends; other writers wait for it. From 9.1.19 ("fork
	// before locking") the handler checks without the lock and forks; the
	// worker takes the lock and checks again, so a write or a backup lock
	// that came in between fails the task and nothing is applied.
	inWorker := s.cfg.version.qemuConfigPostLockInWorker()
	if !inWorker {
		if aerr := c.lockedInHandler(); aerr != nil {
			s.mu.Unlock()
			return result{}, aerr
		}
		if aerr := s.qemuPrepareLocked(c.ref, u, false); aerr != nil {
			s.mu.Unlock()
			return result{}, aerr
		}
	} else {
		if aerr := s.qemuPrepareParamsLocked(u); aerr != nil {
			s.mu.Unlock()
			return result{}, aerr
		}
		if aerr := s.qemuLoadAndCheckLocked(c.ref, u.clone(), false); aerr != nil {
			s.mu.Unlock()
			return result{}, aerr
		}
	}
	ref := c.ref
	t := s.startTask(c, "qmconfig", ref, func() ([]string, int, error) {
		w := u
		if inWorker {
			w = u.clone()
			if aerr := s.qemuLoadAndCheckLocked(ref, w, false); aerr != nil {
				return nil, 0, aerr.taskErr()
			}
		}
		log, err := s.qemuWorkerLocked(ref, w)
		if inWorker {
			// Printed once the worker holds the lock and the checks passed.
			log = append([]string{updateLogLine(ref, w)}, log...)
		}
		return log, 0, err
	})
	if inWorker {
		c.lockedInWorker(t)
	} else {
		// The worker prints this first; a running task's log already
		// shows it. It holds the config lock until it ends.
		t.log = append(t.log, updateLogLine(ref, u))
		if g := s.lookupLocked(ref); g != nil {
			g.cfgLockTask = t
		}
	}
	upid := t.upid
	s.mu.Unlock()

	delay := atoiDefault(c.params["background_delay"], 0)
	if delay == 0 {
		return jsonResult(string(upid)), nil
	}
	// background_delay: wait up to that long for the task; answer null if
	// it finished OK, 500 if it failed, the UPID if it is still running.
	timer := time.NewTimer(time.Duration(delay) * time.Second)
	defer timer.Stop()
	for {
		s.mu.Lock()
		running, exit := t.running, t.exit
		ch := s.changed
		s.mu.Unlock()
		if !running {
			if exit == "OK" || strings.HasPrefix(exit, "WARNINGS: ") {
				return result{data: nullData}, nil
			}
			return result{}, die("failed to update VM %d: %s", ref.VMID, exit)
		}
		select {
		case <-ch:
		case <-timer.C:
			return jsonResult(string(upid)), nil
		case <-c.r.Context().Done():
			return jsonResult(string(upid)), nil
		case <-s.closing:
			return jsonResult(string(upid)), nil
		}
	}
}
