package proxmoxtest

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/guestward/guestward/proxmox"
)

// This file emulates PUT /nodes/{node}/{qemu,lxc}/{vmid}/resize: the
// resize_vm handlers of qemu-server (PVE::API2::Qemu) and pve-container
// (PVE::API2::LXC). The fake keeps no volumes apart from the config, so a
// drive's size= is its volume's size; a drive without one fails as a
// volume whose size cannot be read does.

// resizeSizeRE is the size parameter's schema pattern, which JSONSchema
// anchors.
var resizeSizeRE = regexp.MustCompile(`^(?:\+?\d+(\.\d+)?[KMGT]?)$`)

func checkResizeSize(v string) string {
	if !resizeSizeRE.MatchString(v) {
		return "value does not match the regex pattern"
	}
	return ""
}

// resizeDiskNames is the disk parameter's enumeration:
// PVE::QemuServer::Drive::valid_drive_names (in its order) for QEMU,
// PVE::LXC::Config->valid_volume_keys for LXC.
func resizeDiskNames(t proxmox.GuestType) []string {
	var names []string
	add := func(prefix string, n int) {
		for i := 0; i < n; i++ {
			names = append(names, prefix+strconv.Itoa(i))
		}
	}
	if t == proxmox.LXC {
		names = append(names, "rootfs")
		add("mp", 256)
		return names
	}
	add("ide", 4)
	add("scsi", 31)
	add("virtio", 16)
	add("sata", 6)
	return append(names, "efidisk0", "tpmstate0")
}

// resizeReq is a validated resize request.
type resizeReq struct {
	disk     string
	sizeStr  string // as sent
	ext      bool   // "+N": added to the current size
	digest   string
	skiplock bool
}

// newSize is what resize_vm computes from the current size: the number
// times its unit, added to the current size for "+N", truncated to an
// integer. Integral values stay exact, as Perl keeps integer arithmetic
// exact while it fits.
func (r resizeReq) newSize(current int64) (int64, error) {
	m := regexp.MustCompile(`^\+?(\d+)(\.\d+)?([KMGT]?)$`).FindStringSubmatch(r.sizeStr)
	if m == nil {
		return 0, fmt.Errorf("internal error")
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[3]]
	var n int64
	if whole, err := strconv.ParseInt(m[1], 10, 64); err == nil && m[2] == "" && whole <= math.MaxInt64>>shift {
		n = whole << shift
	} else {
		f, _ := strconv.ParseFloat(m[1]+m[2], 64)
		f = math.Trunc(math.Ldexp(f, int(shift)))
		if f >= math.MaxInt64 {
			return 0, fmt.Errorf("proxmoxtest: size %s is larger than the fake can hold", r.sizeStr)
		}
		n = int64(f)
	}
	if r.ext {
		if n > math.MaxInt64-current {
			return 0, fmt.Errorf("proxmoxtest: size %s is larger than the fake can hold", r.sizeStr)
		}
		n += current
	}
	return n, nil
}

var storageVolumeRE = regexp.MustCompile(`(?i)^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$`)

// volumeStorageLocked is PVE::Storage::parse_volname's first steps: the
// volume must be "storage:name" (parse_volume_id) on a configured storage
// (storage_config). "none", "cdrom", paths and bind mounts are not.
func (s *Server) volumeStorageLocked(volid string) error {
	m := storageVolumeRE.FindStringSubmatch(volid)
	if m == nil {
		return fmt.Errorf("unable to parse volume ID '%s'", volid)
	}
	if _, ok := s.storages[m[1]]; !ok {
		return errNoStorage(m[1])
	}
	return nil
}

// currentSize is the volume's size (volume_size_info): here its size=.
func currentSize(d map[string]string, volid string) (int64, error) {
	n, err := strconv.ParseInt(d["size"], 10, 64)
	if err != nil {
		// Proxmox's own text, capital letter included.
		return 0, fmt.Errorf("%s", "Could not determine current size of volume '"+volid+"'")
	}
	return n, nil
}

// hResize serves PUT .../resize for both guest types.
func (s *Server) hResize(c *call) (result, *apiErr) {
	size := c.params["size"]
	r := resizeReq{
		disk: c.params["disk"], sizeStr: size, ext: strings.HasPrefix(size, "+"),
		digest: c.params["digest"], skiplock: c.params["skiplock"] == "1",
	}
	if c.ref.Type == proxmox.LXC {
		return s.lxcResize(c, r)
	}
	return s.qemuResize(c, r)
}

// qemuResize is qemu-server's resize_vm: $updatefn runs under lock_config,
// synchronously before qemu-server 8.0.2 (answer null), inside a "resize"
// task since (answer: its UPID).
func (s *Server) qemuResize(c *call, r resizeReq) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := c.ref
	if !s.cfg.version.qemuResizeTask() {
		if aerr := c.lockedInHandler(); aerr != nil {
			return result{}, aerr
		}
		if err := s.qemuResizeLocked(ref, r); err != nil {
			return result{}, die("%s", err.Error())
		}
		return result{data: nullData}, nil
	}
	t := s.startTask(c, "resize", ref, func() ([]string, int, error) {
		return nil, 0, s.qemuResizeLocked(ref, r)
	})
	c.lockedInWorker(t)
	return jsonResult(string(t.upid)), nil
}

// qemuResizeLocked is resize_vm's $updatefn, in its order: load the
// config, digest, lock, the drive, its volume, cdrom, sizes. A resize to
// the current size returns before anything is written.
func (s *Server) qemuResizeLocked(ref proxmox.Ref, r resizeReq) error {
	g := s.lookupLocked(ref)
	if g == nil {
		return fmt.Errorf("%s", errConfigMissing(ref))
	}
	if r.digest != "" && r.digest != g.digest {
		if s.cfg.version.digestTypoFixed() {
			return fmt.Errorf("checksum mismatch (file change by other user?)")
		}
		return fmt.Errorf("checksum missmatch (file change by other user?)")
	}
	if l := g.locked(); l != "" && !r.skiplock {
		return fmt.Errorf("VM is locked (%s)", l)
	}
	value := g.conf[r.disk]
	if value == "" {
		return fmt.Errorf("disk '%s' does not exist", r.disk)
	}
	d, ferr := qemuDriveFormat.parse(value, r.disk)
	if ferr != nil {
		return fmt.Errorf("unable to parse volume ID ''")
	}
	volid := d["file"]
	if err := s.volumeStorageLocked(volid); err != nil {
		return err
	}
	if driveIsCdrom(d) {
		return fmt.Errorf("you can't resize a cdrom")
	}
	cur, err := currentSize(d, volid)
	if err != nil {
		return err
	}
	n, err := r.newSize(cur)
	if err != nil {
		return err
	}
	if n < cur {
		return fmt.Errorf("shrinking disks is not supported")
	}
	if n == cur {
		return nil
	}
	d["size"] = strconv.FormatInt(n, 10)
	out, perr := qemuDriveFormat.print(d)
	if perr != nil {
		return fmt.Errorf("%s", strings.TrimSuffix(perr.Error(), "\n"))
	}
	old := g.conf[r.disk]
	g.conf[r.disk] = out
	if err := s.commit(g); err != nil {
		g.conf[r.disk] = old
		return err
	}
	return nil
}

// lxcResize is pve-container's resize_vm. Before pve-container 5.0.1 the
// handler takes the config lock, runs $load_and_check and forks the worker
// while holding the lock, so the worker writes what the handler computed.
// Since, the handler checks without the lock, forks, and the worker takes
// the lock and checks again. Either way the answer is a "resize" task.
func (s *Server) lxcResize(c *call, r resizeReq) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := c.ref
	forksFirst := s.cfg.version.lxcResizeForksFirst()
	if !forksFirst {
		if aerr := c.lockedInHandler(); aerr != nil {
			return result{}, aerr
		}
	}
	n, aerr := s.lxcResizeCheckLocked(ref, r)
	if aerr != nil {
		return result{}, aerr
	}
	t := s.startTask(c, "resize", ref, func() ([]string, int, error) {
		if forksFirst {
			var aerr *apiErr
			if n, aerr = s.lxcResizeCheckLocked(ref, r); aerr != nil {
				return nil, 0, aerr.taskErr()
			}
		}
		return nil, 0, s.lxcResizeApplyLocked(ref, r.disk, n)
	})
	if forksFirst {
		c.lockedInWorker(t)
	}
	return jsonResult(string(t.upid)), nil
}

// lxcResizeCheckLocked is $load_and_check: load the config, lock, digest
// (assert_if_modified), the mount point and its volume, sizes. It returns
// the new size.
func (s *Server) lxcResizeCheckLocked(ref proxmox.Ref, r resizeReq) (int64, *apiErr) {
	g := s.lookupLocked(ref)
	if g == nil {
		return 0, die("%s", errConfigMissing(ref))
	}
	if l := g.locked(); l != "" {
		return 0, die("CT is locked (%s)", l)
	}
	if r.digest != "" && r.digest != g.digest {
		return 0, die("detected modified configuration - file changed by other user? Try again.")
	}
	f := lxcMPFormat
	if r.disk == "rootfs" {
		f = lxcRootfsFormat
	}
	// parse_volume of an unset key parses "" and fails on its required
	// properties.
	mp, ferr := f.parse(g.conf[r.disk], "")
	if ferr != nil {
		return 0, &apiErr{status: 500, msg: ferr.msg + "\n", errors: ferr.errors}
	}
	volid := mp["volume"]
	if err := s.volumeStorageLocked(volid); err != nil {
		return 0, die("%s", err.Error())
	}
	cur, err := currentSize(mp, volid)
	if err != nil {
		return 0, die("%s", err.Error())
	}
	n, err := r.newSize(cur)
	if err != nil {
		return 0, die("%s", err.Error())
	}
	switch {
	case n < cur:
		return 0, die("unable to shrink disk size")
	case n == cur:
		return 0, die("disk is already at specified size")
	}
	return n, nil
}

// lxcResizeApplyLocked is the worker's write: the mount point's size
// becomes n (print_ct_mountpoint), nothing else changes.
func (s *Server) lxcResizeApplyLocked(ref proxmox.Ref, disk string, n int64) error {
	g := s.lookupLocked(ref)
	if g == nil {
		return fmt.Errorf("%s", errConfigMissing(ref))
	}
	f := lxcMPFormat
	if disk == "rootfs" {
		f = lxcRootfsFormat
	}
	mp, ferr := f.parse(g.conf[disk], "")
	if ferr != nil {
		return ferr
	}
	mp["size"] = strconv.FormatInt(n, 10)
	out, perr := f.print(mp)
	if perr != nil {
		return fmt.Errorf("%s", strings.TrimSuffix(perr.Error(), "\n"))
	}
	old := g.conf[disk]
	g.conf[disk] = out
	if err := s.commit(g); err != nil {
		g.conf[disk] = old
		return err
	}
	return nil
}

// taskErr is a handler's error as a worker dies with it: the message, then
// one "key: reason" line per parameter error (PVE::Exception's string
// form).
func (e *apiErr) taskErr() error {
	return &fmtError{msg: strings.TrimSuffix(e.msg, "\n"), errors: e.errors}
}
