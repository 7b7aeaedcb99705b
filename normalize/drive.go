package normalize

import "strings"

// Disks, mount points and NICs: the property strings Proxmox rewrites on
// write (allocation, generated MAC addresses, added sizes).

// allocSyntax splits a volume written in Proxmox's allocation syntax
// (NEW_DISK_RE: "[storage:]GiB", decimals allowed) into its storage (empty
// when not given) and the size in GiB as written.
func allocSyntax(volume string) (storage, gib string, ok bool) {
	num := volume
	if i := strings.IndexByte(volume, ':'); i >= 0 {
		storage, num = volume[:i], volume[i+1:]
		if storage == "" {
			return "", "", false
		}
		for j := 0; j < len(storage); j++ {
			if c := storage[j]; c == '/' || isSpace(c) {
				return "", "", false
			}
		}
	}
	if _, ok := scaledSize(num, 1<<30); !ok {
		return "", "", false
	}
	return storage, num, true
}

// storageOf returns the storage id of a volume id ("local-lvm" of
// "local-lvm:vm-100-disk-0"), or "" for paths and special volumes.
func storageOf(volume string) string {
	if strings.HasPrefix(volume, "/") {
		return ""
	}
	if i := strings.IndexByte(volume, ':'); i > 0 {
		return volume[:i]
	}
	return ""
}

// isCloudInitVolume follows drive_is_cloudinit: the volume name is
// "cloudinit" or "vm-<id>-cloudinit", optionally with a QEMU image format
// extension.
func isCloudInitVolume(volume string) bool {
	i := strings.LastIndexAny(volume, ":/")
	if i < 0 {
		return false
	}
	name := volume[i+1:]
	if j := strings.LastIndexByte(name, '.'); j >= 0 && isQEMUFormat(name[j+1:]) {
		name = name[:j]
	}
	if name == "cloudinit" {
		return true
	}
	const prefix, suffix = "vm-", "-cloudinit"
	if len(name) <= len(prefix)+len(suffix) || !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) {
		return false
	}
	id := name[len(prefix) : len(name)-len(suffix)]
	for k := 0; k < len(id); k++ {
		if !isDigit(id[k]) {
			return false
		}
	}
	return true
}

func isQEMUFormat(s string) bool {
	switch s {
	case "raw", "qcow", "qcow2", "qed", "vmdk", "cloop":
		return true
	}
	return false
}

// volumeFormat is the image format of an allocated volume: its file
// extension on file-based storages, raw on block storages, which carry
// none.
func volumeFormat(volume string) string {
	name := volume
	if i := strings.LastIndexAny(volume, ":/"); i >= 0 {
		name = volume[i+1:]
	}
	if j := strings.LastIndexByte(name, '.'); j >= 0 && isQEMUFormat(name[j+1:]) {
		return name[j+1:]
	}
	return "raw"
}

// compareVolume compares the default-key volume of a disk or mount point. A
// volume declared in allocation syntax matches the allocated volume on the
// same storage; the size Proxmox records for the allocation (see allocBytes;
// container selects pve-container's rounding) must match the reported size
// unless fixedSize (EFI vars, TPM state: Proxmox sizes those itself) or the
// declaration sets size= itself. "<storage>:cloudinit" matches the
// cloud-init volume Proxmox allocates on that storage. Anything else
// compares exactly.
func compareVolume(pc *propCompare, key string, d, a []kv, fixedSize, container bool) {
	dv, dok := lookup(d, key)
	av, aok := lookup(a, key)
	if !dok || !aok {
		if dok != aok {
			pc.fail(key, dv, av)
		}
		return
	}
	if dv == av {
		return
	}
	if storage, gib, ok := allocSyntax(dv); ok {
		if _, _, actualAlloc := allocSyntax(av); actualAlloc {
			// Not allocated yet on either side: compare as written.
			as, ag, _ := allocSyntax(av)
			x, _ := allocBytes(gib, container)
			y, _ := allocBytes(ag, container)
			if as != storage || x != y {
				pc.fail(key, dv, av)
			}
			return
		}
		if storage != "" && storageOf(av) != storage {
			pc.failRaw("storage", storage, storageOf(av))
		}
		if fixedSize || hasKey(d, "size") {
			return
		}
		want, ok := allocBytes(gib, container)
		if !ok {
			pc.fail(key, dv, av) // too large to allocate: never what Proxmox reports
			return
		}
		if want == 0 {
			return // storage:0 with import-from: the size comes from the source
		}
		if s, ok := lookup(a, "size"); ok {
			if got, ok := parseSize(s); !ok || got != want {
				pc.differs = true
				if pc.diffs != nil {
					pc.failRaw("size", FormatSize(want), canonicalValue(TypeSize, s))
				}
			}
		}
		return
	}
	if storage, name, ok := strings.Cut(dv, ":"); ok && name == "cloudinit" {
		if storageOf(av) != storage || !isCloudInitVolume(av) {
			pc.fail(key, dv, av)
		}
		return
	}
	pc.fail(key, dv, av)
}

// failRaw records a difference of a pseudo-key with values shown as given.
func (pc *propCompare) failRaw(key, d, a string) {
	pc.differs = true
	if pc.diffs != nil {
		*pc.diffs = append(*pc.diffs, Diff{Key: key, Desired: d, Actual: a})
	}
}

// nicRule: QEMU netN. model and MAC fold into "<model>=<MAC>"; an unpinned
// MAC is generated and ignored; for virtio an absent mtu means the bridge
// MTU, like mtu=1.
type nicRule struct{ f *Format }

func (r nicRule) Normalize(v string) string  { return normalizeProps(r.f, v) }
func (r nicRule) Equal(d, a string) bool     { return r.compare(d, a, nil) }
func (r nicRule) Explain(d, a string) []Diff { return explainBy(r.compare, d, a) }

func (r nicRule) compare(d, a string, diffs *[]Diff) bool {
	d, a = trimSpace(d), trimSpace(a)
	if d == a {
		return true
	}
	var dbuf, abuf [maxItems]kv
	dk, e1 := scanProps(r.f, d, dbuf[:0])
	ak, e2 := scanProps(r.f, a, abuf[:0])
	if e1.code != perrNone || e2.code != perrNone || (len(dk) == 0) != (len(ak) == 0) {
		return wholeDiff(r, d, a, diffs)
	}
	pc := propCompare{f: r.f, diffs: diffs}
	model, ok := lookup(dk, "model")
	if !ok {
		model, _ = lookup(ak, "model")
	}
	if model == "virtio" {
		pc.setDefault("mtu", "1")
	}
	return pc.run(dk, ak)
}

// driveKind selects the QEMU disk variant.
type driveKind uint8

const (
	driveDisk    driveKind = iota // ideN, sataN, scsiN, virtioN
	driveCDField                  // the cdrom option, an alias of ide2 with media=cdrom
	driveFixed                    // efidisk0, tpmstate0: sized by Proxmox
)

// driveRule: QEMU disks.
type driveRule struct{ kind driveKind }

// droppedDriveKeys are the drive geometry keys qemu-server 9 drops when it
// parses a drive (QEMU removed them in 3.1; no VM with them starts since).
// Proxmox 9 never reports them and refuses them in a write, so a declared
// one is satisfied by its absence; Proxmox 8 stores and reports them, so
// one it reports is compared as usual, and one reported but not declared
// is drift.
var droppedDriveKeys = [...]string{"cyls", "heads", "secs", "trans"}

func (r driveRule) Normalize(v string) string  { return normalizeProps(driveFormat, v) }
func (r driveRule) Equal(d, a string) bool     { return r.compare(d, a, nil) }
func (r driveRule) Explain(d, a string) []Diff { return explainBy(r.compare, d, a) }

// media returns the effective media of a parsed drive: as written, or cdrom
// for cloud-init, "cdrom" and "none" volumes (Proxmox sets it for those), or
// the default for the variant.
func (r driveRule) media(items []kv) string {
	if m, ok := lookup(items, "media"); ok {
		return m
	}
	file, _ := lookup(items, "file")
	if r.kind == driveCDField || file == "cdrom" || file == "none" || isCloudInitVolume(file) {
		return "cdrom"
	}
	if _, name, ok := strings.Cut(file, ":"); ok && name == "cloudinit" {
		return "cdrom"
	}
	return "disk"
}

func (r driveRule) compare(d, a string, diffs *[]Diff) bool {
	d, a = trimSpace(d), trimSpace(a)
	if d == a {
		return true
	}
	var dbuf, abuf [maxItems]kv
	dk, e1 := scanProps(driveFormat, d, dbuf[:0])
	ak, e2 := scanProps(driveFormat, a, abuf[:0])
	if e1.code != perrNone || e2.code != perrNone || (len(dk) == 0) != (len(ak) == 0) {
		return wholeDiff(r, d, a, diffs)
	}
	pc := propCompare{f: driveFormat, diffs: diffs}
	pc.skipKey("file", "media", "size", "format", "import-from")

	dm, am := r.media(dk), r.media(ak)
	if dm != am {
		pc.fail("media", dm, am)
	}
	cdrom := dm == "cdrom"
	if !cdrom {
		// drive_uses_cache_direct: no cache option means cache=none for
		// disks (btrfs without nocow aside, see the package doc).
		pc.setDefault("cache", "none")
	}

	// Proxmox 9 drops the geometry keys; Proxmox 8 keeps them.
	for _, k := range droppedDriveKeys {
		if hasKey(dk, k) && !hasKey(ak, k) {
			pc.skipKey(k)
		}
	}

	compareVolume(&pc, "file", dk, ak, r.kind == driveFixed, false)
	if pc.done() {
		return false
	}

	// size is informational and generated; a cdrom's size is the ISO's.
	if ds, ok := lookup(dk, "size"); ok && !cdrom {
		as, _ := lookup(ak, "size")
		pc.key("size", ds, true, as, as != "")
	}

	// format is dropped on allocation; a declared format is satisfied by
	// the allocated volume's format.
	if df, ok := lookup(dk, "format"); ok && !cdrom {
		af, ok := lookup(ak, "format")
		if !ok {
			file, _ := lookup(ak, "file")
			af = volumeFormat(file)
		}
		if df != af {
			pc.fail("format", df, af)
		}
	}
	if pc.done() {
		return false
	}
	return pc.run(dk, ak)
}

// mountRule: LXC rootfs and mpN.
type mountRule struct{ f *Format }

func (r mountRule) Normalize(v string) string  { return normalizeProps(r.f, v) }
func (r mountRule) Equal(d, a string) bool     { return r.compare(d, a, nil) }
func (r mountRule) Explain(d, a string) []Diff { return explainBy(r.compare, d, a) }

func (r mountRule) compare(d, a string, diffs *[]Diff) bool {
	d, a = trimSpace(d), trimSpace(a)
	if d == a {
		return true
	}
	var dbuf, abuf [maxItems]kv
	dk, e1 := scanProps(r.f, d, dbuf[:0])
	ak, e2 := scanProps(r.f, a, abuf[:0])
	if e1.code != perrNone || e2.code != perrNone || (len(dk) == 0) != (len(ak) == 0) {
		return wholeDiff(r, d, a, diffs)
	}
	pc := propCompare{f: r.f, diffs: diffs}
	pc.skipKey("volume")
	compareVolume(&pc, "volume", dk, ak, false, true)
	if pc.done() {
		return false
	}
	return pc.run(dk, ak)
}
