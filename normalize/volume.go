package normalize

// Volume is the storage part of a disk (QEMU ideN, sataN, scsiN, virtioN,
// efidisk0, tpmstate0) or mount point (LXC rootfs, mpN) option, as
// [Set.Volume] reads it from a value.
//
// It exists because what Proxmox does with such an option depends on the
// volume it names, not only on the text:
//
//   - A value in allocation syntax, "[storage:]size" with the size in GiB
//     ("local-lvm:64", "0.5"), makes Proxmox allocate a NEW volume of that
//     size. On a slot that already holds a volume, the old volume is
//     detached (QEMU and LXC move it to an unusedN option) and the guest
//     gets an empty disk: never a way to grow a disk.
//   - A value naming another volume than the slot holds ("local-lvm:vm-100-
//     disk-1", "none") detaches the old volume the same way.
//   - A value naming the volume the slot already holds changes only the
//     drive's options (cache, discard, ...); Proxmox replaces its size=
//     with the volume's real size.
//
// Growing a disk is a separate call (the resize endpoint); Proxmox cannot
// shrink one.
type Volume struct {
	// Volume is the volume as written: a volume id
	// ("local-lvm:vm-100-disk-0"), allocation syntax ("local-lvm:64"), a
	// host path ("/dev/sdb", a bind mount's directory), or "none"/"cdrom".
	Volume string
	// Storage is the storage id of a volume id or of allocation syntax;
	// "" for paths, "none", "cdrom" and allocation syntax without one
	// (which uses the default storage).
	Storage string
	// Alloc is true for allocation syntax.
	Alloc bool
	// Size is the size in bytes: the size Proxmox records for the
	// allocation, or else the size= option's; 0 when neither states one.
	// An allocation's fractional GiB is rounded as Proxmox rounds it: up to
	// whole KiB for a QEMU disk (0.1 is 104858K), down to whole MiB for a
	// container volume (0.1 is 102M).
	Size int64
	// CDROM is true for a QEMU drive whose media is cdrom (an ISO image,
	// "cdrom", "none", a cloud-init drive): it holds no guest data, and
	// Proxmox never moves it to unusedN.
	CDROM bool
	// FixedSize is true for efidisk0 and tpmstate0, which Proxmox sizes
	// itself: their size is not the user's to grow.
	FixedSize bool
}

// HoldsData reports whether v names an existing storage volume that holds
// guest data: a volume id on a storage, not allocation syntax, not a host
// path, not a cdrom. Replacing or deleting such a volume detaches it.
func (v Volume) HoldsData() bool {
	return !v.Alloc && !v.CDROM && v.Storage != "" && v.Volume != "none"
}

// Volume reads the volume of a disk or mount point option. ok is false when
// field is not a volume-bearing option of the set's guest type (QEMU: ideN,
// sataN, scsiN, virtioN, efidisk0, tpmstate0; LXC: rootfs, mpN; the QEMU
// cdrom alias is not one), or when value is not a well-formed property
// string with a volume.
func (s *Set) Volume(field, value string) (v Volume, ok bool) {
	if s == nil {
		return Volume{}, false
	}
	var f *Format
	key := "volume"
	switch s.guest {
	case guestQEMU:
		f, key = driveFormat, "file"
		switch field {
		case "efidisk0", "tpmstate0":
			v.FixedSize = true
		default:
			prefix, indexed := family(field)
			if !indexed || (prefix != "ide" && prefix != "sata" && prefix != "scsi" && prefix != "virtio") {
				return Volume{}, false
			}
		}
	case guestLXC:
		switch prefix, indexed := family(field); {
		case field == "rootfs":
			f = rootfsFormat
		case indexed && prefix == "mp":
			f = mpFormat
		default:
			return Volume{}, false
		}
	default:
		return Volume{}, false
	}
	var buf [maxItems]kv
	items, perr := scanProps(f, trimSpace(value), buf[:0])
	if perr.code != perrNone {
		return Volume{}, false
	}
	vol, found := lookup(items, key)
	if !found || vol == "" {
		return Volume{}, false
	}
	v.Volume = vol
	if storage, gib, isAlloc := allocSyntax(vol); isAlloc {
		v.Alloc, v.Storage = true, storage
		v.Size, _ = allocBytes(gib, s.guest == guestLXC)
	} else {
		v.Storage = storageOf(vol)
	}
	if v.Size == 0 {
		if sz, has := lookup(items, "size"); has {
			v.Size, _ = parseSize(sz)
		}
	}
	if s.guest == guestQEMU {
		v.CDROM = driveRule{kind: driveDisk}.media(items) == "cdrom"
	}
	if vol == "none" || vol == "cdrom" {
		v.Storage = ""
	}
	return v, true
}

// WithVolume returns value with its volume replaced by volume and its size=
// option set to size (dropped when size is 0), every other option kept as
// written and in canonical order. It is how a declaration written in
// allocation syntax ("local-lvm:64,cache=writeback") becomes the change
// that keeps the slot's existing volume ("local-lvm:vm-100-disk-0,
// cache=writeback,size=32G"). ok is false where [Set.Volume] is.
func (s *Set) WithVolume(field, value, volume string, size int64) (string, bool) {
	if _, ok := s.Volume(field, value); !ok {
		return "", false
	}
	f, key := driveFormat, "file"
	if s.guest == guestLXC {
		f, key = rootfsFormat, "volume"
		if field != "rootfs" {
			f = mpFormat
		}
	}
	var buf [maxItems]kv
	items, _ := scanProps(f, trimSpace(value), buf[:0])
	out := make([]kv, 0, len(items)+1)
	out = append(out, kv{key: key, val: volume})
	for _, it := range items {
		if it.key == key || it.key == "size" {
			continue
		}
		out = append(out, it)
	}
	if size > 0 {
		out = append(out, kv{key: "size", val: FormatSize(size)})
	}
	return printProps(f, out), true
}
