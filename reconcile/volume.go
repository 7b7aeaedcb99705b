package reconcile

import (
	"fmt"

	"github.com/guestward/guestward/normalize"
)

// vchange is what a declared disk or mount point option asks of its slot.
type vchange struct {
	send   string // the value to set; "" for none
	size   int64  // the size to grow the volume to; 0 for no resize
	from   int64  // the volume's size now, for the plan's rendering
	reason SkipReason
	detail string
}

// volumeChange decides a declared option that differs from the guest's
// value under the normalize rules, when the option may hold a volume.
//
// Proxmox reads a disk or mount point value as a request for a volume: a
// value in allocation syntax ("local-lvm:64") allocates a new one, and a
// value naming another volume attaches that one; either way a volume the
// slot already held is detached (moved to unusedN) and the guest loses its
// disk. So for a slot holding data:
//
//   - allocation syntax on the slot's storage (or none named) declares the
//     size of the disk it holds: a larger size is a resize, a smaller one
//     skips the guest (Proxmox cannot shrink), and the declaration's other
//     options are set on the existing volume;
//   - the slot's own volume id, with a size= option, declares the size the
//     same way;
//   - anything else (another volume, another storage, a cdrom or "none")
//     would detach the volume and skips the guest.
//
// efidisk0 and tpmstate0 are sized by Proxmox and are never resized. A slot
// that is empty, or holds a cdrom or a host path, takes the declared value
// as it is: nothing is detached.
func volumeChange(set *normalize.Set, field, want, have string) vchange {
	av, ok := set.Volume(field, have)
	if !ok || !av.HoldsData() {
		return vchange{send: want}
	}
	dv, ok := set.Volume(field, want)
	switch {
	case !ok:
		return vchange{reason: SkipVolumeChange, detail: fmt.Sprintf(
			"%s holds volume %s, and the declared value %q cannot be read as a disk: sending it could detach the volume", field, av.Volume, want)}
	case dv.CDROM || dv.Volume == "none":
		return vchange{reason: SkipVolumeChange, detail: fmt.Sprintf(
			"%s holds volume %s; declaring %q would detach it", field, av.Volume, dv.Volume)}
	case dv.Alloc && dv.Storage != "" && dv.Storage != av.Storage:
		return vchange{reason: SkipVolumeChange, detail: fmt.Sprintf(
			"%s is on storage %s, declared on %s: Proxmox would allocate a new disk there and detach the old one; moving disks is left to a person", field, av.Storage, dv.Storage)}
	case !dv.Alloc && dv.Volume != av.Volume:
		return vchange{reason: SkipVolumeChange, detail: fmt.Sprintf(
			"%s holds volume %s; declaring volume %s would detach it", field, av.Volume, dv.Volume)}
	}
	vc := vchange{from: av.Size}
	if dv.Size > 0 && !av.FixedSize {
		switch {
		case av.Size > 0 && dv.Size < av.Size:
			return vchange{reason: SkipShrink, detail: fmt.Sprintf(
				"%s is %s, declared %s: Proxmox cannot shrink a disk", field, normalize.FormatSize(av.Size), normalize.FormatSize(dv.Size))}
		case dv.Size != av.Size:
			// An unknown current size (no size= in the configuration)
			// is grown too: the size is absolute, Proxmox refuses to
			// shrink, and the same size twice is a no-op.
			vc.size = dv.Size
		}
	}
	// The declaration's other options, set on the volume the slot holds.
	// Its size stays what it is: the resize, if any, changes it.
	keep, _ := set.WithVolume(field, want, av.Volume, av.Size)
	if !set.Equal(field, keep, have) {
		vc.send = keep
	}
	return vc
}
