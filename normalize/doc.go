// Package normalize decides, field by field, when a declared Proxmox VE
// configuration value and the value Proxmox reports are the same.
//
// Proxmox rewrites much of what it is given: it generates MAC addresses,
// allocates disks and records their size, re-prints property strings in its
// own order, sorts and lower-cases tags, trims descriptions, and leaves out
// every key that is at its default. A reconciler that reads those rewrites
// as drift changes the guest again on every pass; one that normalizes too
// eagerly hides real changes. This package holds the rules, taken from
// Proxmox's own sources (qemu-server, pve-container, pve-common), and
// nothing else: it does no IO, keeps no state and never panics on bad
// input.
//
// # The model
//
// A [Set] holds the rules for one kind of guest: [QEMU] for virtual
// machines, [LXC] for containers. The reconcile planner calls
// [Set.Equal](field, desired, actual) for every field a guest declares, and
// [Set.Explain] for the fields that differ, to show a person what differs.
// [Set.Normalize] prints a value in canonical form.
//
// Equal is asymmetric on purpose:
//
//   - desired may leave out what Proxmox generates: an unpinned MAC address,
//     the name of a volume Proxmox allocated, a disk's size, the UUID behind
//     vmgenid=1, the ms-cert of an EFI disk;
//   - everything desired does declare must match, compared by what it means
//     (booleans in any spelling, sizes in any unit, sets in any order);
//   - every key Proxmox reports that desired leaves out must be at its
//     schema default: declaring "virtio,bridge=vmbr0" while the NIC has
//     tag=20 is drift, not a subset match.
//
// An empty string means absent, on either side. A declared "" asks for the
// field to be absent, which for a field with a schema default (onboot,
// memory, agent) means at its default. Fields the Set does not know compare
// exactly after trimming white space. Indexed families share one rule:
// net0 to net31, scsi0.., virtio0.., sata0.., ide0.., unused0..,
// ipconfig0.. and numa0.. on QEMU; net0.., mp0.. on LXC.
//
// Defaults are the ones Proxmox's schema declares, never another tool's
// (bpg's scsihw=virtio-scsi-pci, the GUI's ostype=l26 and cpu=x86-64-v2-AES
// are choices, not defaults). A default is encoded only where the schema
// declares it or the source shows what absence means; where neither does,
// absent differs from every explicit value. That choice costs at most one
// harmless write that makes the key explicit; the opposite choice could hide
// a change.
//
// # Rules by field
//
// Descriptions: line endings become LF (CRLF, and a run of CRs before LF)
// and the end is cut where Proxmox cuts it. A virtual machine's description
// loses all trailing white space as Unicode defines it (a no-break or an
// ideographic space too): qemu-server strips it from the decoded text. A
// container's description loses only its trailing line endings:
// pve-container never trims, so trailing blanks are content there. Leading
// white space and interior blank lines are content for both. A description
// of "0" is none: Proxmox writes neither "0" nor "" and reads either back
// absent. A description that does read back "0" (declared "0 ", say) is
// taken as absent as well, for Equal must hold for equal values and
// writing that "0" back would remove it. Values are never URL-decoded: the
// API returns them decoded.
//
// Tags: split on commas, semicolons and white space, empty items dropped,
// compared as sets without regard to ASCII letter case (see
// [WithCaseSensitiveTags]). A white-space-only value is no tags. Normalize
// prints them as Proxmox stores them: lower-cased and sorted, or, with
// case-sensitive tags, in their own case and sorted as Perl's cmp sorts, by
// code point, so "Web" comes before "apple".
//
// Booleans parse every Proxmox spelling (1/on/yes/true, 0/off/no/false) and
// an absent value is the schema default: onboot, autostart, protection,
// numa, template, tdf, keephugepages and LXC unprivileged and debug default
// to 0; acpi, kvm, tablet, reboot, ciupgrade and LXC console to 1. localtime
// and freeze have no default.
//
// Numbers compare numerically whatever JSON type carried them. QEMU cores,
// sockets and smp default to 1, shares to 1000, cpulimit to 0; memory is the
// property string "[current=]N" with default 512. LXC memory and swap
// default to 512 and tty to 2, while LXC cores has no default (absent means
// every host core). balloon has none either: absent keeps the balloon device
// on, 0 turns it off. cpuunits has none (it depends on the cgroup version);
// see [WithCgroupV2].
//
// Enums: QEMU ostype=other, scsihw=lsi, bios=seabios, startdate=now; LXC
// arch=amd64, cmode=tty. LXC ostype has no default (Proxmox detects it).
//
// QEMU NICs: "<model>=<MAC>" folds model and macaddr. The MAC is compared
// only when desired pins one, ignoring letter case. firewall and link_down
// default to 0, and for virtio an absent mtu means the bridge MTU, like
// mtu=1. trunks is a set. LXC NICs: name comes first, type is always veth,
// an unpinned hwaddr is ignored, firewall, link_down and host-managed
// default to 0.
//
// QEMU disks: a volume declared in allocation syntax ("local-lvm:32",
// decimals allowed) matches the volume Proxmox allocated on that storage
// when the reported size is the one Proxmox records for that many GiB: a
// fraction is rounded up to whole KiB, in floating point as qemu-server does
// it, so "local-lvm:0.1" is size=104858K; for efidisk0 and tpmstate0 only
// the storage counts (Proxmox sizes them itself), and "<storage>:0" with
// import-from takes its size from the source. "<storage>:cloudinit" matches
// the vm-<id>-cloudinit volume on that storage. size is informational:
// compared only when declared, never on a cdrom. A declared format is
// satisfied by the allocated volume's format (its extension, or raw on block
// storages). Defaults: media=disk (cdrom for cloud-init, "none" and "cdrom"
// volumes and the cdrom option), backup=1, replicate=1, discard=ignore,
// iothread=0, ssd=0, shared=0, scsiblock=0, and for disks cache=none;
// efitype=2m, pre-enrolled-keys=0, TPM version=v1.2. Two defaults live in
// qemu-server's code, not its schema: an absent detect_zeroes is on
// (detect_zeroes=1) and an absent ro is off. ms-cert is generated (Proxmox
// adds it when it enrols the keys) and defaults to 2011. volume is an alias
// of file, and the legacy *_length throttle keys are aliases too. The
// geometry keys cyls, heads, secs and trans are gone in Proxmox 9, which
// drops them from every drive and refuses them in a write: a declared one is
// satisfied by its absence, and one Proxmox 8 still reports compares as
// usual.
//
// LXC rootfs and mpN: allocation syntax as for QEMU disks, except that
// pve-container truncates a fraction to whole MiB ("local-lvm:0.1" is
// size=102M); mountoptions is a set; ro, quota, shared, keepattrs and an
// mpN's backup default to 0, replicate to 1; acl has no default (absent
// means the file system's).
//
// QEMU cpu: cputype is the default key, absent is kvm64; hidden defaults to
// 0; flags is a set of ±FLAG. boot: legacy is the default key and "cdn" is
// what an absent boot means; an order list overrides legacy and compares in
// order; a legacy value never equals an order list. hotplug: "1" and absence
// are network,disk,usb, "0" is none, otherwise a set. agent: enabled is the
// default key (default 0), fstrim_cloned_disks defaults to 0, freeze-fs
// (alias freeze-fs-on-backup and guest-fsfreeze) to 1, type to virtio; an
// absent agent is disabled. startup: "[order=]N,up=N,down=N" as integers.
// LXC features: booleans default to 0, mount is a set; an absent features
// value is every feature off.
//
// nameserver and searchdomain are ordered lists, whatever the separators:
// order is resolver priority. ipconfigN compares as a map without defaults.
// sshkeys compare percent-decoded, line by line, with blanks collapsed and
// empty lines dropped; hex case and trailing newlines do not matter.
// cipassword reads back masked, so a masked value satisfies any non-empty
// declaration: drift in it cannot be seen here. vmgenid: "1" is satisfied by
// any UUID, "0" by absence; smbios1's uuid is generated; meta is read-only
// information of which only declared keys compare. name, hostname and
// hookscript compare exactly; a change of case is an edit.
//
// Subsets are never equality: maps and sets compare in full.
//
// Options Proxmox stores raw and this package has no rule for (hostpciN,
// usbN, serialN, parallelN, virtiofsN, rng0, machine, args, affinity, LXC
// devN and lxc.* keys, among others) compare exactly after trimming, which
// never hides a change; [WithField] and [WithFamily] can relax that.
//
// # Property strings
//
// [ParseProperty] and [Property.String] read and print Proxmox property
// strings as PVE::JSONSchema does: the default key bare and first, required
// keys next, then the rest sorted; aliases resolved; the keyAlias folding of
// "<model>=<MAC>"; booleans in every spelling; sizes with binary units
// ([ParseSize], [FormatSize]); ";"-separated lists inside values. A
// [Format] describes one kind of property string and [PropertyRule] turns
// it into a [Rule], for fields this package does not know.
//
// # Ambiguous cases and the choices made
//
//   - A1 tag case: folded, as Proxmox does by default; [WithCaseSensitiveTags]
//     for clusters with tag-style case-sensitive=1. Tag order is never
//     significant, so tag-style ordering needs no option.
//   - A2 leading white space and CR in descriptions: leading white space is
//     kept (Proxmox keeps it); CRLF equals LF, as GUI edits turn one into the
//     other.
//   - A3 cache absent on disks: equal to cache=none. On btrfs without nocow
//     absent means writeback; this per-field rule cannot see the storage
//     type, so declare cache explicitly there.
//   - A4 sizes in GB or TB: rejected, as Proxmox rejects them; the size then
//     compares as written.
//   - A5 balloon equal to memory versus absent: different. The answer
//     depends on another field.
//   - A6 cpuunits clamping: only with [WithCgroupV2].
//   - A7 a disk grown outside: drift; what to do about it is the
//     reconciler's policy, since disks cannot shrink.
//   - A8 boot absent in desired: the field is unmanaged, a reconciler
//     decision; a declared "" means the legacy default cdn.
//   - A9 IPv6 spellings: compared as written (no round-trip evidence).
//   - A10 mount point paths: compared as written, trailing slash included.
//   - A11 name and hostname case: a real edit.
//   - A12 freeze-fs and freeze-fs-on-backup: aliases, as in current Proxmox.
//   - A13 vga type and aio: no default is assumed (they depend on ostype and
//     storage).
//   - A14 nameserver and searchdomain order: significant.
//
// # What belongs to the reconciler
//
// Some quirks are not properties of a value and no string rule can handle
// them. Fields absent from desired are unmanaged and must not be compared at
// all (the boot order, MAC, vmgenid, smbios1, meta, LXC ostype and hostname
// that Proxmox fills in). Values read while a lock is set (a clone writes a
// temporary description) must not be compared. GET /config returns pending
// values: read /pending, or current=1, to tell "applied" from "in effect".
// Write-only or masked secrets (cipassword) need a side channel, such as a
// hash kept in the reconciler's state. Cluster settings (tag-style, cgroup
// version) are options of a Set.
//
// # Options and user rules
//
// [Set.With] derives a new Set: [WithCaseSensitiveTags], [WithCgroupV2],
// and [WithField] or [WithFamily] to register a [Rule] for a field or an
// indexed family the Set does not know, or to override a built-in one.
// Rules come from [FuncRule] (canonical form by a [Func]), [ValueRule]
// (scalars by [Type], with a default) and [PropertyRule], or are written by
// hand; a Rule may implement [Explainer] to say which part of a value
// differs.
//
// # Concurrency and cost
//
// A Set never changes once returned; QEMU, LXC and With return fresh values
// the caller owns, and one Set may serve any number of goroutines. Equal
// allocates nothing when desired and actual are identical, and nothing for
// the normalized-equal forms of the known fields either (values of up to 32
// items are parsed into fixed arrays of substrings), so comparing an
// in-sync guest costs no allocation. Normalize and Explain allocate; they
// are for reports.
package normalize
