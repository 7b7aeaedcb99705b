package normalize_test

import (
	"strings"
	"testing"

	"github.com/guestward/guestward/normalize"
)

// quirkCase is a case beyond the shared vectors, drawn from the same
// Proxmox sources and labelled with the number, Q01 to Q45, of the Proxmox
// behaviour it exercises; the labels only group the cases.
type quirkCase struct {
	quirk   string
	guest   string
	field   string
	desired string
	actual  string
	equal   bool
	why     string
}

var quirkCases = []quirkCase{
	// Descriptions.
	{"Q01", "qemu", "description", "a\t \n", "a", true, "all trailing white space is stripped"},
	{"Q01", "qemu", "description", "a b", "a  b", false, "interior spaces are content"},
	{"Q02", "lxc", "description", "a\nb", "a\nb\n", true, "one newline per # line on read"},
	{"Q03", "lxc", "description", "a\r\r\nb", "a\nb\n", true, "a run of CRs before LF is a line ending"},
	{"Q03", "qemu", "description", "a\rb", "a\nb", false, "a lone CR is content"},
	{"Q04", "lxc", "description", "Grüße 100%", "Grüße 100%", true, "decoded text compares as is"},
	{"Q04", "lxc", "description", "Gr%C3%BC%C3%9Fe", "Grüße", false, "API values are never URL-decoded"},
	{"Q05", "lxc", "description", "  indented", "indented", false, "leading white space is kept (A2)"},
	{"Q05", "qemu", "description", "a\n\n\nb", "a\n\nb", false, "interior blank lines are content"},
	{"Q06", "qemu", "description", "Web", " qmclone temporary file\n", false, "the clone placeholder is drift here; the reconciler skips locked guests"},

	// Tags.
	{"Q07", "qemu", "tags", "web;web;db", "db;web", true, "duplicates collapse"},
	{"Q07", "lxc", "tags", " ,web,, ;db ", "db;web", true, "empty items are dropped"},
	{"Q07", "qemu", "tags", "web", "", false, "a tag against none"},
	{"Q08", "qemu", "tags", "Web,Prod", "prod;web", true, "create kept them verbatim; case folds"},
	{"Q09", "lxc", "tags", "", "\t ", true, "white space only is no tags"},
	{"Q09", "lxc", "tags", " ", "web", false, "no tags against one"},

	// Booleans.
	{"Q10", "qemu", "kvm", "ON", "", true, "kvm defaults to 1; spellings fold"},
	{"Q10", "qemu", "kvm", "no", "", false, "kvm=0 is not the default"},
	{"Q10", "qemu", "tablet", "0", "1", false, "a real change"},
	{"Q10", "qemu", "template", "False", "", true, "template defaults to 0"},
	{"Q10", "lxc", "console", "yes", "", true, "console defaults to 1"},
	{"Q10", "lxc", "console", "off", "", false, "console=0 against the default"},
	{"Q10", "qemu", "localtime", "0", "", false, "localtime has no schema default"},
	{"Q10", "qemu", "onboot", "maybe", "1", false, "not a boolean: compared exactly"},
	{"Q11", "lxc", "unprivileged", "true", "1", true, "spelling"},
	{"Q11", "lxc", "unprivileged", "", "1", false, "absent means privileged"},

	// QEMU NICs.
	{"Q12", "qemu", "net0", "virtio,bridge=vmbr0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0,queues=4", false, "queues set on the server"},
	{"Q12", "qemu", "net0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0", "virtio=BC:24:11:5E:7A:02,bridge=vmbr0", false, "a pinned MAC must match"},
	{"Q12", "qemu", "net0", "bridge=vmbr0,virtio", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0", true, "the bare model may come anywhere"},
	{"Q12", "qemu", "net0", "virtio,bridge=vmbr0", "", false, "no NIC at all"},
	{"Q12", "qemu", "net1", "e1000=bc:24:11:5e:7a:01,bridge=vmbr0,rate=12.50", "e1000=BC:24:11:5E:7A:01,bridge=vmbr0,rate=12.5", true, "indexed family, folded MAC, rate as a number"},
	{"Q12", "qemu", "net0", "virtio,bridge=vmbr0,trunks=20;10", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0,trunks=10;20", true, "trunks is a set of VLANs"},
	{"Q13", "qemu", "net0", "virtio,bridge=vmbr0,firewall=0,link_down=0,mtu=1", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0", true, "elided defaults; virtio mtu=1 is the bridge MTU"},
	{"Q13", "qemu", "net0", "e1000,bridge=vmbr0,mtu=1", "e1000=BC:24:11:5E:7A:01,bridge=vmbr0", false, "mtu=1 means bridge MTU only for virtio"},
	{"Q13", "qemu", "net0", "virtio,bridge=vmbr0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0,mtu=9000", false, "an explicit MTU is drift"},
	{"Q13", "qemu", "net0", "virtio,bridge=vmbr0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0,link_down=1", false, "the plug is pulled"},
	{"Q14", "qemu", "net0", "model=virtio,macaddr=bc:24:11:5e:7a:01,bridge=vmbr0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0", true, "MAC case"},

	// LXC NICs.
	{"Q15", "lxc", "net1", "name=eth1,bridge=vmbr0,ip=dhcp,type=veth", "name=eth1,bridge=vmbr0,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,type=veth", true, "type=veth is always set"},
	{"Q15", "lxc", "net0", "name=eth0,bridge=vmbr0,ip=dhcp", "name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,type=veth", false, "firewall on the server"},
	{"Q15", "lxc", "net0", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:2A:3B:4D,ip=dhcp", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,type=veth", false, "a pinned hwaddr must match"},
	{"Q15", "lxc", "net0", "name=eth0,bridge=vmbr0,ip=dhcp,link_down=no", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,type=veth", true, "link_down defaults to 0"},

	// QEMU disks.
	{"Q16", "qemu", "virtio0", "local-lvm:32", "local-zfs:vm-100-disk-0,size=32G", false, "a different storage"},
	{"Q16", "qemu", "virtio0", "local-lvm:32", "local-lvm:vm-100-disk-0,size=64G", false, "grown outside (A7): it differs"},
	{"Q16", "qemu", "sata1", "local:10,format=qcow2", "local:100/vm-100-disk-1.qcow2,size=10G", true, "format matches the volume's extension"},
	{"Q16", "qemu", "scsi2", "local-lvm:8,format=raw", "local-lvm:vm-100-disk-3,size=8G", true, "block storages are raw"},
	{"Q16", "qemu", "scsi0", "local-lvm:0,import-from=local:import/disk.qcow2", "local-lvm:vm-100-disk-0,size=10G", true, "imported: the size comes from the source"},
	{"Q16", "qemu", "scsi0", "local-lvm:32", "local-lvm:vm-100-disk-0", true, "no size reported: only the storage can be checked"},
	{"Q17", "qemu", "scsi0", "local-lvm:vm-100-disk-0,size=1024G", "local-lvm:vm-100-disk-0,size=1T", true, "the largest exact unit"},
	{"Q17", "qemu", "scsi0", "local-lvm:vm-100-disk-0,size=32G", "local-lvm:vm-100-disk-0,size=33G", false, "a different size"},
	{"Q17", "qemu", "scsi0", "local-lvm:vm-100-disk-0", "local-lvm:vm-100-disk-0,size=33G", true, "size is informational when not declared"},
	{"Q17", "lxc", "mp1", "local-lvm:vm-101-disk-2,mp=/srv,size=1.5G", "local-lvm:vm-101-disk-2,mp=/srv,size=1536M", true, "fractional units"},
	{"Q18", "qemu", "scsi0", "local-lvm:vm-100-disk-0,cache=writeback", "local-lvm:vm-100-disk-0,size=32G", false, "writeback against the cache.direct default"},
	{"Q18", "qemu", "scsi0", "local-lvm:vm-100-disk-0,discard=on", "local-lvm:vm-100-disk-0,size=32G", false, "discard on against ignore"},
	{"Q18", "qemu", "scsi0", "local-lvm:vm-100-disk-0,ssd=1", "local-lvm:vm-100-disk-0,size=32G", false, "ssd against absent"},
	{"Q18", "qemu", "scsi0", "local-lvm:vm-100-disk-0", "local-lvm:vm-100-disk-0,replicate=0,size=32G", false, "replication turned off on the server"},
	{"Q18", "qemu", "virtio1", "local-lvm:vm-100-disk-1,media=disk,backup=yes", "local-lvm:vm-100-disk-1,size=8G", true, "media and backup defaults"},
	{"Q18", "qemu", "scsi0", "local-lvm:vm-100-disk-0,aio=io_uring", "local-lvm:vm-100-disk-0,size=32G", false, "aio has no encoded default (A13)"},
	{"Q19", "qemu", "scsi0", "volume=local-lvm:vm-100-disk-0,iothread=true", "local-lvm:vm-100-disk-0,iothread=1,size=32G", true, "volume is an alias of file"},
	{"Q19", "qemu", "scsi0", "file=local-lvm:vm-100-disk-0", "local-lvm:vm-100-disk-1,size=32G", false, "a different volume"},
	{"Q19", "qemu", "scsi0", "local-lvm:vm-100-disk-0,iops_rd_length=5,iops_rd=100,iops_rd_max=200", "local-lvm:vm-100-disk-0,iops_rd=100,iops_rd_max=200,iops_rd_max_length=5,size=32G", true, "legacy throttle alias"},
	{"Q20", "qemu", "ide2", "local:iso/x.iso,media=cdrom,size=1M", "local:iso/x.iso,media=cdrom,size=631M", true, "a cdrom's size is the ISO's, never compared"},
	{"Q20", "qemu", "ide2", "none,media=cdrom", "none,media=cdrom", true, "an empty drive"},
	{"Q20", "qemu", "ide2", "local:iso/x.iso,media=cdrom", "local:iso/x.iso,size=631M", false, "cdrom against disk media"},
	{"Q20", "qemu", "cdrom", "local:iso/x.iso", "local:iso/x.iso,media=cdrom,size=631M", true, "the cdrom option is ide2 with media=cdrom"},
	{"Q21", "qemu", "ide2", "local:cloudinit", "local:100/vm-100-cloudinit.qcow2,media=cdrom", true, "cloud-init on a directory storage"},
	{"Q21", "qemu", "scsi1", "local-lvm:cloudinit,format=raw", "local-lvm:vm-100-cloudinit,media=cdrom", true, "format is dropped for cloud-init"},
	{"Q21", "qemu", "ide2", "local-lvm:cloudinit", "local-zfs:vm-100-cloudinit,media=cdrom", false, "cloud-init on another storage"},
	{"Q21", "qemu", "ide2", "local-lvm:cloudinit", "local-lvm:vm-100-disk-4,media=cdrom", false, "not a cloud-init volume"},
	{"Q22", "qemu", "efidisk0", "local-lvm:1,efitype=4m", "local-lvm:vm-100-disk-1,efitype=4m,size=528K", true, "EFI vars size is fixed by PVE"},
	{"Q22", "qemu", "efidisk0", "local-lvm:1,efitype=4m,pre-enrolled-keys=1", "local-lvm:vm-100-disk-1,efitype=4m,size=4M", false, "keys not enrolled"},
	{"Q22", "qemu", "efidisk0", "local-lvm:1", "local-lvm:vm-100-disk-1,efitype=4m,size=4M", false, "efitype defaults to 2m"},
	{"Q22", "qemu", "efidisk0", "local-lvm:1,efitype=4m,ms-cert=2023w", "local-lvm:vm-100-disk-1,efitype=4m,ms-cert=2023k,size=4M", false, "a declared ms-cert must match"},
	{"Q22", "qemu", "tpmstate0", "local-lvm:1", "local-lvm:vm-100-disk-2,size=4M,version=v2.0", false, "version defaults to v1.2"},

	// LXC mount points.
	{"Q23", "lxc", "rootfs", "local-lvm:8,mountoptions=noatime;nosuid", "local-lvm:vm-101-disk-0,mountoptions=nosuid;noatime,size=8G", true, "mountoptions is a set"},
	{"Q23", "lxc", "rootfs", "local-lvm:8,quota=0,ro=0,replicate=1,shared=0", "local-lvm:vm-101-disk-0,size=8G", true, "defaults"},
	{"Q23", "lxc", "mp0", "local-lvm:10,mp=/data", "local-lvm:vm-101-disk-1,mp=/data,backup=1,size=10G", false, "mp backup defaults to 0"},
	{"Q23", "lxc", "mp0", "local-lvm:10,mp=/data", "local-lvm:vm-101-disk-1,mp=/data,size=20G", false, "size differs"},
	{"Q23", "lxc", "rootfs", "local-lvm:vm-101-disk-0,acl=1", "local-lvm:vm-101-disk-0,size=8G", false, "acl has no default"},
	{"Q23", "lxc", "mp2", "/mnt/pve/share,mp=/share", "/mnt/pve/share2,mp=/share", false, "a different bind source"},

	// CPU and memory.
	{"Q24", "qemu", "cpu", "kvm64", "", true, "kvm64 is the default with KVM"},
	{"Q24", "qemu", "cpu", "host,hidden=0", "host", true, "hidden defaults to 0"},
	{"Q24", "qemu", "cpu", "host", "host,hidden=1", false, "hidden on the server"},
	{"Q24", "qemu", "cpu", "qemu64", "", false, "a tool's default is not PVE's"},
	{"Q24", "qemu", "cpu", "host,flags=+aes", "host", false, "a flag missing"},
	{"Q25", "qemu", "memory", "512", "", true, "512 is the default"},
	{"Q25", "qemu", "memory", "current=2048", "current=2048", true, "identical"},
	{"Q25", "qemu", "memory", "current=1024", "", false, "a declared size against the default"},
	{"Q26", "lxc", "memory", "1024", "", false, "not the default"},
	{"Q26", "lxc", "cores", "", "", true, "both unlimited"},
	{"Q26", "qemu", "sockets", "2", "", false, "2 sockets against the default 1"},
	{"Q27", "qemu", "balloon", "0", "", false, "balloon absent is enabled"},
	{"Q27", "qemu", "balloon", "", "0", false, "and the other way"},

	// Boot.
	{"Q28", "qemu", "boot", "cdn", "", true, "cdn is the fallback"},
	{"Q28", "qemu", "boot", "order=scsi0;net0", "legacy=cdn", false, "order against legacy"},
	{"Q28", "qemu", "boot", "order=scsi0,cdn", "order=scsi0", true, "order overrides legacy"},
	{"Q28", "qemu", "boot", "dc", "cdn", false, "another legacy order"},
	{"Q28", "qemu", "boot", "order=scsi0", "", false, "order against the absent default"},

	// Enums and hotplug.
	{"Q29", "qemu", "bios", "seabios", "", true, "schema default"},
	{"Q29", "qemu", "bios", "ovmf", "", false, "not the default"},
	{"Q29", "qemu", "scsihw", "virtio-scsi-pci", "", false, "bpg's default is not PVE's"},
	{"Q29", "qemu", "ostype", "l26", "", false, "the GUI's choice is not the default"},
	{"Q29", "lxc", "arch", "amd64", "", true, "LXC arch default"},
	{"Q30", "qemu", "hotplug", "1", "network,disk,usb", true, "1 is the default set"},
	{"Q30", "qemu", "hotplug", "network;disk usb", "", true, "split_list separators"},
	{"Q30", "qemu", "hotplug", "network,disk", "", false, "usb missing"},
	{"Q30", "qemu", "hotplug", "0", "0", true, "none"},
	{"Q30", "qemu", "hotplug", "network,disk,usb,cpu", "network,disk,usb", false, "cpu hotplug"},

	// Agent.
	{"Q31", "qemu", "agent", "enabled=true,type=virtio", "1", true, "type default and boolean spelling"},
	{"Q31", "qemu", "agent", "1,freeze-fs-on-backup=0", "1,freeze-fs=0", true, "freeze-fs alias (A12)"},
	{"Q31", "qemu", "agent", "1,guest-fsfreeze=1", "1", true, "freeze-fs defaults to 1"},
	{"Q31", "qemu", "agent", "1", "1,type=isa", false, "isa agent"},
	{"Q31", "qemu", "agent", "", "0", true, "absent is disabled"},

	// Startup.
	{"Q32", "lxc", "startup", "order=1,down=60", "down=60,order=1", true, "order of keys"},
	{"Q32", "qemu", "startup", "up=30", "up=31", false, "a different delay"},
	{"Q32", "qemu", "startup", "order=01", "1", true, "numbers compare as integers"},

	// Features.
	{"Q33", "lxc", "features", "nesting=true,keyctl=yes", "keyctl=1,nesting=1", true, "boolean spellings"},
	{"Q33", "lxc", "features", "mount=nfs", "mount=nfs;cifs", false, "an extra file system"},
	{"Q33", "lxc", "features", "", "nesting=1", false, "nesting on the server"},
	{"Q33", "lxc", "features", "nesting=0", "", true, "all default to 0"},

	// DNS.
	{"Q34", "lxc", "nameserver", "1.1.1.1, 8.8.8.8", "1.1.1.1 8.8.8.8", true, "separators"},
	{"Q34", "lxc", "searchdomain", "a.example b.example", "b.example a.example", false, "order is priority (A14)"},
	{"Q35", "qemu", "searchdomain", "example.com;corp.example.com", "example.com corp.example.com", true, "stored raw on QEMU"},
	{"Q35", "qemu", "nameserver", "8.8.8.8 1.1.1.1", "1.1.1.1 8.8.8.8", false, "order"},

	// ipconfig.
	{"Q36", "qemu", "ipconfig1", "ip=dhcp", "ip=dhcp,ip6=auto", false, "IPv6 added on the server"},
	{"Q36", "qemu", "ipconfig0", "ip=10.0.0.5/24,gw=10.0.0.1", "ip=10.0.0.5/24,gw=10.0.0.254", false, "another gateway"},

	// sshkeys.
	{"Q37", "qemu", "sshkeys", "ssh-ed25519 AAAA a@b\nssh-rsa BBBB c@d\n", "ssh-ed25519%20AAAA%20a%40b%0D%0Assh-rsa%20BBBB%20c%40d", true, "two keys, CRLF, trailing newline"},
	{"Q37", "qemu", "sshkeys", "ssh-ed25519  AAAA   a@b", "ssh-ed25519%20AAAA%20a%40b%0A%0A", true, "runs of blanks and empty lines"},
	{"Q37", "qemu", "sshkeys", "ssh-rsa BBBB c@d\nssh-ed25519 AAAA a@b", "ssh-ed25519%20AAAA%20a%40b%0Assh-rsa%20BBBB%20c%40d", false, "key order is kept"},
	{"Q37", "qemu", "sshkeys", "ssh-ed25519 AAAA a@b", "ssh-ed25519%20AAAA%20a%40b%0Assh-rsa%20BBBB%20c%40d", false, "an extra key on the server"},

	// cipassword.
	{"Q38", "qemu", "cipassword", "other", "**********", true, "masked: cannot be compared"},
	{"Q38", "qemu", "cipassword", "", "**********", false, "a password set, none declared"},
	{"Q38", "qemu", "cipassword", "s3cret", "", false, "no password on the server"},

	// Server-generated.
	{"Q39", "qemu", "vmgenid", "C2A8BA0F-1D8E-4A46-9A33-2D1B8D1F3F0E", "c2a8ba0f-1d8e-4a46-9a33-2d1b8d1f3f0e", true, "UUID case"},
	{"Q39", "qemu", "vmgenid", "1", "", false, "not generated yet"},
	{"Q39", "qemu", "vmgenid", "0", "", true, "disabled"},
	{"Q39", "qemu", "vmgenid", "c2a8ba0f-1d8e-4a46-9a33-2d1b8d1f3f0e", "d2a8ba0f-1d8e-4a46-9a33-2d1b8d1f3f0e", false, "a pinned ID"},
	{"Q39", "qemu", "smbios1", "manufacturer=ACME", "uuid=7b9a64a2-4f8a-4bd5-a0a5-6d0e4c4d6b9b,manufacturer=ACME", true, "generated uuid"},
	{"Q39", "qemu", "smbios1", "uuid=7B9A64A2-4F8A-4BD5-A0A5-6D0E4C4D6B9B", "uuid=7b9a64a2-4f8a-4bd5-a0a5-6d0e4c4d6b9b", true, "a pinned uuid, case"},
	{"Q39", "qemu", "smbios1", "manufacturer=ACME", "uuid=7b9a64a2-4f8a-4bd5-a0a5-6d0e4c4d6b9b,manufacturer=Other", false, "a declared key differs"},
	{"Q39", "qemu", "meta", "creation-qemu=9.0.2", "creation-qemu=9.0.2,ctime=1718000000", true, "meta is read-only information"},

	// Names and hook scripts.
	{"Q40", "lxc", "hostname", "CT-Web", "ct-web", false, "case is an edit (A11)"},
	{"Q40", "qemu", "name", " web01 ", "web01", true, "surrounding white space"},
	{"Q41", "qemu", "hookscript", "", "local:snippets/hook.pl", false, "absent is not set"},

	// cpuunits is compared as an integer without the cgroup v2 option (A6).
	{"Q42", "qemu", "cpuunits", "20000", "10000", false, "no clamping without WithCgroupV2"},
	{"Q42", "lxc", "cpuunits", "1024", "01024", true, "integers"},

	// Numbers as JSON strings.
	{"Q44", "qemu", "cores", "+4", "4", true, "integers compare numerically"},
	{"Q44", "qemu", "cpulimit", "1.50", "1.5", true, "numbers compare numerically"},
	{"Q44", "qemu", "cpulimit", "0", "", true, "cpulimit defaults to 0"},
	{"Q44", "qemu", "migrate_downtime", "0.10", "", true, "default 0.1"},
	{"Q44", "qemu", "cores", "four", "4", false, "not a number: compared exactly"},

	// Subsets are not equality.
	{"Q45", "lxc", "net0", "name=eth0,bridge=vmbr0", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:2A:3B:4C,tag=5,type=veth", false, "an extra VLAN tag"},
	{"Q45", "qemu", "tags", "web", "web;db", false, "an extra tag"},
	{"Q45", "qemu", "agent", "1", "1,fstrim_cloned_disks=1", false, "an extra agent option"},

	// Fields the sets do not know compare exactly after trimming.
	{"unknown", "qemu", "args", "-no-reboot ", "-no-reboot", true, "trimmed"},
	{"unknown", "qemu", "args", "-no-reboot", "-no-Reboot", false, "otherwise exact"},
	{"unknown", "lxc", "lxc.apparmor.profile", "unconfined", "unconfined", true, "exact"},
	{"unknown", "qemu", "usb0", "host=1234:5678", "host=1234:5678,usb3=1", false, "an unknown family compares exactly"},
}

func TestQuirks(t *testing.T) {
	for _, c := range quirkCases {
		name := c.quirk + "/" + c.field + "/" + strings.ReplaceAll(c.why, " ", "_")
		t.Run(name, func(t *testing.T) {
			s := setFor(t, c.guest)
			if got := s.Equal(c.field, c.desired, c.actual); got != c.equal {
				t.Fatalf("%s Equal(%q, %q, %q) = %v, want %v (%s)\nexplain: %v",
					c.guest, c.field, c.desired, c.actual, got, c.equal, c.why, s.Explain(c.field, c.desired, c.actual))
			}
			if diffs := s.Explain(c.field, c.desired, c.actual); c.equal != (len(diffs) == 0) {
				t.Fatalf("Explain = %v, but Equal = %v", diffs, c.equal)
			}
			for _, x := range []string{c.desired, c.actual} {
				n := s.Normalize(c.field, x)
				if nn := s.Normalize(c.field, n); nn != n {
					t.Errorf("Normalize not idempotent on %q: %q then %q", x, n, nn)
				}
				if !s.Equal(c.field, n, x) {
					t.Errorf("Equal(Normalize(%q) = %q, %q) = false", x, n, x)
				}
			}
		})
	}
}

// TestQuirkCoverage makes sure every label from Q01 to Q45 is exercised by a
// vector, a case above or a dedicated test.
func TestQuirkCoverage(t *testing.T) {
	covered := map[string]bool{}
	for _, c := range quirkCases {
		covered[c.quirk] = true
	}
	// Q43 (GET /config returns pending values) is not a property of any
	// value: the reconciler reads /pending. The package doc says so; no
	// string rule can cover it.
	covered["Q43"] = true
	for i := 1; i <= 45; i++ {
		q := "Q" + twoDigits(i)
		if !covered[q] {
			t.Errorf("quirk %s has no case", q)
		}
	}
}

func twoDigits(i int) string {
	return string([]byte{byte('0' + i/10), byte('0' + i%10)})
}

// TestCgroupV2 covers Q42: with WithCgroupV2, cpuunits clamp into
// [1, 10000] before they compare.
func TestCgroupV2(t *testing.T) {
	for _, base := range []*normalize.Set{normalize.QEMU(), normalize.LXC()} {
		s, err := base.With(normalize.WithCgroupV2())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			d, a string
			eq   bool
		}{
			{"20000", "10000", true},
			{"262144", "10000", true},
			{"9999", "10000", false},
			{"100", "100", true},
			{"0", "1", true},
			{"abc", "10000", false},
		} {
			if got := s.Equal("cpuunits", c.d, c.a); got != c.eq {
				t.Errorf("Equal(cpuunits, %q, %q) = %v, want %v", c.d, c.a, got, c.eq)
			}
		}
		if got := s.Normalize("cpuunits", "20000"); got != "10000" {
			t.Errorf("Normalize(cpuunits, 20000) = %q, want 10000", got)
		}
		if base.Equal("cpuunits", "20000", "10000") {
			t.Error("the base set must not clamp")
		}
	}
}
