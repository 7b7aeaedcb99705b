package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
)

// Resize refusals. Proxmox can only grow a disk, so both are terminal:
// repeating the request cannot succeed.
var (
	// ErrShrink is matched by the error of [Client.Resize] (or of the
	// task it started) when the requested size is below the disk's
	// current size: "shrinking disks is not supported" (QEMU) or "unable
	// to shrink disk size" (LXC). Proxmox cannot shrink a disk; nothing
	// was changed.
	ErrShrink = errors.New("proxmox: disk cannot shrink")

	// ErrAlreadySized is matched by the error of [Client.Resize] (or of
	// the task it started) when an LXC volume already has the requested
	// size ("disk is already at specified size"). Nothing was changed,
	// and a caller that asked for that size has what it wants: treat it
	// as success. (QEMU answers a resize to the current size with a
	// successful no-op instead.)
	ErrAlreadySized = errors.New("proxmox: disk already at the requested size")
)

// DiskResize asks for a disk to be grown to an absolute size. It is a
// plain value; [Client.Resize] only reads it.
type DiskResize struct {
	// Disk is the drive key of the disk to grow: for QEMU "ide0".."ide3",
	// "sata0".."sata5", "scsi0".."scsi30", "virtio0".."virtio15",
	// "efidisk0" or "tpmstate0"; for LXC "rootfs" or "mp0".."mp255".
	Disk string
	// Size is the new absolute size in bytes; it must be > 0. Proxmox
	// rounds the volume itself up (to whole KiB at least, to the extent
	// size on LVM) but records Size unrounded in the config, and the next
	// resize compares against the volume: a later resize to the same
	// unaligned size then fails with [ErrShrink]. Whole GiB are safe on
	// every storage.
	Size int64
	// Digest, when not empty, is the [Config.Digest] the resize was
	// planned against; Proxmox then refuses it with [ErrDigestMismatch]
	// if the config changed since.
	Digest string
}

// Drive keys that can be resized: PVE::QemuServer::Drive
// valid_drive_names and PVE::LXC::Config valid_volume_keys.
var (
	reQEMUDisk = regexp.MustCompile(`^(?:ide[0-3]|sata[0-5]|scsi(?:[0-9]|[12][0-9]|30)|virtio(?:[0-9]|1[0-5])|efidisk0|tpmstate0)$`)
	reLXCDisk  = regexp.MustCompile(`^(?:rootfs|mp(?:[0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5]))$`)
)

// Validate checks the resize against what Proxmox accepts for a guest of
// type t: a drive key of that type, a positive size and a digest of 40 hex
// digits (or none). The error wraps [ErrInvalidArgument].
func (r DiskResize) Validate(t GuestType) error {
	switch t {
	case QEMU:
		if !reQEMUDisk.MatchString(r.Disk) {
			return fmt.Errorf("%w: %.40q is not a QEMU disk that can be resized (ide0-3, sata0-5, scsi0-30, virtio0-15, efidisk0, tpmstate0)", ErrInvalidArgument, r.Disk)
		}
	case LXC:
		if !reLXCDisk.MatchString(r.Disk) {
			return fmt.Errorf("%w: %.40q is not an LXC volume that can be resized (rootfs, mp0-255)", ErrInvalidArgument, r.Disk)
		}
	default:
		return fmt.Errorf("%w: guest type %.20q", ErrInvalidArgument, string(t))
	}
	if r.Size <= 0 {
		return fmt.Errorf("%w: size %d of %s is not positive", ErrInvalidArgument, r.Size, r.Disk)
	}
	if r.Digest != "" && !isDigest(r.Digest) {
		return fmt.Errorf("%w: digest %.50q is not 40 hex digits", ErrInvalidArgument, r.Digest)
	}
	return nil
}

// sizeParam renders an absolute size the way Proxmox's size parameter
// takes it (pattern \+?\d+(\.\d+)?[KMGT]?, no sign: absolute): in the
// largest binary unit that divides it exactly, else in bytes, so the
// value Proxmox computes is exactly n. It is PVE::JSONSchema::format_size.
func sizeParam(n int64) string {
	units := [...]string{"", "K", "M", "G", "T"}
	u := 0
	for u < len(units)-1 && n%1024 == 0 {
		n /= 1024
		u++
	}
	return strconv.FormatInt(n, 10) + units[u]
}

// Resize grows a guest's disk to an absolute size: PUT
// /nodes/{node}/{type}/{vmid}/resize. The request is validated first
// ([DiskResize.Validate]); an invalid one, or an invalid ref, is refused
// before any request.
//
// What Proxmox returns differs by type and version:
//
//   - QEMU on PVE 8 and later (qemu-server 8.0.2): the UPID of a task of
//     type "resize". Every check runs inside that task under the config
//     lock, so a digest mismatch, a lock, a disk that does not exist, a
//     cdrom and a shrink ([ErrShrink]) all surface from
//     [Client.WaitTask]. Asking for the current size is a successful
//     no-op task.
//   - QEMU on PVE 7: the resize completes (or fails, with the same
//     messages as an [*APIError]) before the call returns, and the UPID is
//     "".
//   - LXC: the UPID of a "resize" task. Proxmox checks once before it
//     starts the task, failing synchronously, and again inside it. A
//     volume already at the size fails with [ErrAlreadySized], which a
//     caller should treat as success.
//
// Match the class with errors.Is on either error, not the place: a lock
// ([ErrLocked]), a changed config ([ErrDigestMismatch]), a missing guest
// ([ErrNotFound]) and a lock timeout ([ErrLocked] and [ErrTransient]) are
// classified alike in both. Once done, the drive's size= in the config
// is the new size and nothing else in it changed, though its digest did.
//
// Like every write, the request is never re-sent once it may have reached
// Proxmox; an error matching [ErrOutcomeUnknown] means the disk may have
// grown. Reading the config tells: Proxmox records the new size there.
func (c *Client) Resize(ctx context.Context, ref Ref, r DiskResize) (UPID, error) {
	if err := ref.Validate(); err != nil {
		return "", err
	}
	if err := r.Validate(ref.Type); err != nil {
		return "", fmt.Errorf("proxmox: resize %s of %s: %w", r.Disk, ref, err)
	}
	form := url.Values{"disk": {r.Disk}, "size": {sizeParam(r.Size)}}
	if r.Digest != "" {
		form.Set("digest", r.Digest)
	}
	var u upidData
	req := &request{method: http.MethodPut, path: guestPath(ref, "/resize"), form: form}
	if err := c.call(ctx, req, &u); err != nil {
		return "", err
	}
	switch {
	case u == "" && ref.Type == LXC:
		// pve-container has always answered with a task.
		return "", c.answerErr(req.method, req.path, fmt.Errorf("%w: no UPID in the answer", ErrUnexpectedResponse))
	case u != "":
		if err := checkTaskOf(UPID(u), ref); err != nil {
			return "", c.answerErr(req.method, req.path, err)
		}
	}
	return UPID(u), nil
}
