package normalize_test

import (
	"testing"

	"github.com/guestward/guestward/normalize"
)

// ruleFields names at least one field of every built-in rule of both sets,
// plus an unknown field.
var ruleFields = []struct {
	guest, field string
}{
	{"qemu", "description"}, {"qemu", "tags"}, {"qemu", "onboot"}, {"qemu", "localtime"},
	{"qemu", "cores"}, {"qemu", "cpulimit"}, {"qemu", "memory"}, {"qemu", "ostype"},
	{"qemu", "hotplug"}, {"qemu", "nameserver"}, {"qemu", "agent"}, {"qemu", "cpu"},
	{"qemu", "boot"}, {"qemu", "startup"}, {"qemu", "smbios1"}, {"qemu", "meta"},
	{"qemu", "vga"}, {"qemu", "watchdog"}, {"qemu", "spice_enhancements"}, {"qemu", "audio0"},
	{"qemu", "cicustom"}, {"qemu", "efidisk0"}, {"qemu", "tpmstate0"}, {"qemu", "cdrom"},
	{"qemu", "sshkeys"}, {"qemu", "cipassword"}, {"qemu", "vmgenid"}, {"qemu", "net0"},
	{"qemu", "scsi0"}, {"qemu", "ide2"}, {"qemu", "unused0"}, {"qemu", "ipconfig0"},
	{"qemu", "numa0"}, {"qemu", "args"},
	{"lxc", "description"}, {"lxc", "tags"}, {"lxc", "console"}, {"lxc", "swap"},
	{"lxc", "cores"}, {"lxc", "arch"}, {"lxc", "searchdomain"}, {"lxc", "startup"},
	{"lxc", "features"}, {"lxc", "rootfs"}, {"lxc", "net0"}, {"lxc", "mp0"}, {"lxc", "hostname"},
}

// checkRuleProperties checks the contract every rule must keep, for one
// field and a pair of values.
func checkRuleProperties(t *testing.T, s *normalize.Set, field, x, y string) {
	t.Helper()
	if !s.Equal(field, x, x) {
		t.Fatalf("%s: Equal(x, x) is false for %q", field, x)
	}
	n := s.Normalize(field, x)
	if nn := s.Normalize(field, n); nn != n {
		t.Fatalf("%s: Normalize(%q) = %q, Normalize of that = %q", field, x, n, nn)
	}
	if !s.Equal(field, n, x) {
		t.Fatalf("%s: Equal(Normalize(x) = %q, x = %q) is false; %v", field, n, x, s.Explain(field, n, x))
	}
	eq := s.Equal(field, x, y)
	diffs := s.Explain(field, x, y)
	if eq != (len(diffs) == 0) {
		t.Fatalf("%s: Equal(%q, %q) = %v but Explain = %v", field, x, y, eq, diffs)
	}
}

// FuzzRules feeds arbitrary values to every built-in rule.
func FuzzRules(f *testing.F) {
	seeds := [][2]string{
		{"virtio,bridge=vmbr0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0"},
		{"local-lvm:32,iothread=1", "local-lvm:vm-100-disk-0,iothread=1,size=32G"},
		{"local-lvm:cloudinit", "local-lvm:vm-100-cloudinit,media=cdrom"},
		{"Web server\r\n", "Web server"},
		{"web,db", "db;web"},
		{"order=scsi0;net0", "cdn"},
		{"ssh-rsa AAAA a@b", "ssh-rsa%20AAAA%20a%40b%0A"},
		{"network,disk,usb", "1"},
		{"1", "c2a8ba0f-1d8e-4a46-9a33-2d1b8d1f3f0e"},
		{"yes", "1"},
		{"1.50", "1.5"},
		{"name=eth0,bridge=vmbr0", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:2A:3B:4C,type=veth"},
		{"local-lvm:8,mp=/data", "local-lvm:vm-101-disk-0,mp=/data,size=8G"},
		{"", " "},
		{"a=b=c,,d", "=,=x"},
	}
	for i, s := range seeds {
		f.Add(uint8(i), s[0], s[1])
	}
	sets := map[string]*normalize.Set{"qemu": normalize.QEMU(), "lxc": normalize.LXC()}
	f.Fuzz(func(t *testing.T, which uint8, x, y string) {
		rf := ruleFields[int(which)%len(ruleFields)]
		s := sets[rf.guest]
		checkRuleProperties(t, s, rf.field, x, y)
		checkRuleProperties(t, s, rf.field, y, x)
	})
}
