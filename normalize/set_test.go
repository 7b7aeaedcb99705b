package normalize_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/guestward/guestward/normalize"
)

func TestWithErrors(t *testing.T) {
	r := normalize.FuncRule(nil)
	for name, opt := range map[string]normalize.Option{
		"empty field":       normalize.WithField("", r),
		"space in field":    normalize.WithField("my field", r),
		"leading digit":     normalize.WithField("0net", r),
		"nil rule":          normalize.WithField("x", nil),
		"empty prefix":      normalize.WithFamily("", r),
		"prefix with digit": normalize.WithFamily("net0", r),
		"nil family rule":   normalize.WithFamily("usb", nil),
		"comma in family":   normalize.WithFamily("a,b", r),
		"nil option":        nil,
	} {
		if _, err := normalize.QEMU().With(opt); !errors.Is(err, normalize.ErrInvalidOption) {
			t.Errorf("%s: error = %v, want ErrInvalidOption", name, err)
		}
	}
	if _, err := normalize.QEMU().With(normalize.WithField("lxc.apparmor.profile", r), normalize.WithFamily("x-dev", r)); err != nil {
		t.Errorf("valid names rejected: %v", err)
	}
}

func TestWithDerivesANewSet(t *testing.T) {
	base := normalize.QEMU()
	lower := normalize.FuncRule(strings.ToLower)
	derived, err := base.With(
		normalize.WithField("name", lower),                   // overrides a built-in
		normalize.WithFamily("usb", lower),                   // a family the set does not know
		normalize.WithField("usb1", normalize.FuncRule(nil)), // a member beats its family
	)
	if err != nil {
		t.Fatal(err)
	}
	again, err := derived.With(normalize.WithCaseSensitiveTags())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		set                 *normalize.Set
		field, desired, act string
		want                bool
	}{
		{base, "name", "Web01", "web01", false},
		{derived, "name", "Web01", "web01", true},
		{base, "usb0", "HOST=1", "host=1", false},
		{derived, "usb0", "HOST=1", "host=1", true},
		{derived, "usb7", "HOST=1", "host=1", true},
		{derived, "usb1", "HOST=1", "host=1", false},
		{derived, "tags", "Web", "web", true},
		{again, "tags", "Web", "web", false},
		{again, "name", "Web01", "web01", true}, // options accumulate
		{base, "tags", "Web", "web", true},      // the base never changes
	} {
		if got := c.set.Equal(c.field, c.desired, c.act); got != c.want {
			t.Errorf("Equal(%q, %q, %q) = %v, want %v", c.field, c.desired, c.act, got, c.want)
		}
	}
}

func TestZeroSet(t *testing.T) {
	var zero normalize.Set
	var nilSet *normalize.Set
	for _, s := range []*normalize.Set{&zero, nilSet} {
		if !s.Equal("tags", " web ", "web") {
			t.Error("the zero Set trims")
		}
		if s.Equal("tags", "web,db", "db;web") {
			t.Error("the zero Set knows no field")
		}
		if got := s.Normalize("onboot", " yes "); got != "yes" {
			t.Errorf("Normalize = %q", got)
		}
		if d := s.Explain("x", "a", "b"); len(d) != 1 || d[0].Field != "x" {
			t.Errorf("Explain = %v", d)
		}
	}
	derived, err := nilSet.With(normalize.WithField("x", normalize.FuncRule(strings.ToLower)))
	if err != nil || !derived.Equal("x", "A", "a") {
		t.Errorf("With on a nil Set: %v", err)
	}
}

func TestRulesFromConstructors(t *testing.T) {
	b := normalize.ValueRule(normalize.Key{Type: normalize.TypeBool, Default: "1"})
	if !b.Equal("", "yes") || b.Equal("off", "") || b.Normalize("TRUE") != "1" {
		t.Error("ValueRule bool")
	}
	set := normalize.ValueRule(normalize.Key{Type: normalize.TypeSet})
	if !set.Equal("a b", "b;a;a") || set.Equal("a", "") || set.Normalize("b,a") != "a;b" {
		t.Error("ValueRule set")
	}
	size := normalize.ValueRule(normalize.Key{Type: normalize.TypeSize, Default: "1G"})
	if !size.Equal("", "1024M") || size.Equal("2G", "") {
		t.Error("ValueRule size")
	}

	f := &normalize.Format{DefaultKey: "type", Keys: map[string]normalize.Key{"type": {Default: "a"}, "n": {Type: normalize.TypeInt}}}
	implicit := normalize.PropertyRule(f, true)
	explicit := normalize.PropertyRule(f, false)
	f.Keys["type"] = normalize.Key{Default: "changed"} // a rule keeps its own copy
	if !implicit.Equal("", "a") || !implicit.Equal("type=a,n=01", "a,n=1") {
		t.Error("PropertyRule with absent meaning defaults")
	}
	if explicit.Equal("", "a") || !explicit.Equal("n=2", "a,n=2") {
		t.Error("PropertyRule with absent meaning absent")
	}
	if explicit.Equal("n=2", "n=2,extra=1") {
		t.Error("an unknown key only Proxmox reports is drift")
	}
	if got := normalize.QEMU().Rule("net0"); !got.Equal("virtio,bridge=vmbr0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0") {
		t.Error("Rule(net0) is not the NIC rule")
	}
}

func TestExplain(t *testing.T) {
	s := normalize.QEMU()
	cases := []struct {
		field, desired, actual string
		want                   []string
	}{
		{"cipassword", "s3cret", "", []string{`cipassword: desired "**********", actual (absent)`}},
		{"tags", "web", "db;web", []string{`tags: desired "web", actual "db;web"`}},
		{"onboot", "yes", "", []string{`onboot: desired "1", actual (absent)`}},
		{"scsi0", "local-lvm:vm-100-disk-0,iothread=1", "local-lvm:vm-100-disk-0,size=32G,ssd=1", []string{
			`scsi0 iothread: desired "1", actual (absent)`,
			`scsi0 ssd: desired (absent), actual "1"`,
		}},
		{"scsi0", "local:32,format=qcow2", "local:100/vm-100-disk-0.raw,size=32G", []string{`scsi0 format: desired "qcow2", actual "raw"`}},
		{"ide2", "local:iso/a.iso,media=cdrom", "local:iso/b.iso,media=cdrom,size=1G", []string{`ide2 file: desired "local:iso/a.iso", actual "local:iso/b.iso"`}},
		{"boot", "order=scsi0;net0", "order=net0;scsi0", []string{`boot order: desired "scsi0;net0", actual "net0;scsi0"`}},
		{"sshkeys", "ssh-rsa A a@b", "ssh-rsa%20B%20a%40b", []string{`sshkeys: desired "ssh-rsa A a@b", actual "ssh-rsa B a@b"`}},
		{"net0", "virtio,bridge=vmbr0", "", []string{`net0: desired "virtio,bridge=vmbr0", actual (absent)`}},
		{"net0", "virtio,bridge=vmbr0,,bridge=x", "virtio", []string{`net0: desired "virtio,bridge=vmbr0,,bridge=x", actual "virtio"`}},
		{"name", "a", "a", nil},
	}
	for _, c := range cases {
		var got []string
		for _, d := range s.Explain(c.field, c.desired, c.actual) {
			got = append(got, d.String())
		}
		if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("Explain(%q, %q, %q):\n got %q\nwant %q", c.field, c.desired, c.actual, got, c.want)
		}
	}
}

// TestConcurrentUse shares one Set between goroutines; run under -race.
func TestConcurrentUse(t *testing.T) {
	s, err := normalize.QEMU().With(normalize.WithCgroupV2())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if n := equalAll(s, typicalQEMU); n != 0 {
					t.Errorf("%d fields differ", n)
					return
				}
				_ = s.Explain("net0", "virtio,bridge=vmbr0", "e1000")
				_ = s.Normalize("scsi0", "local-lvm:32,ssd=on")
			}
		}()
	}
	wg.Wait()
}

// TestEqualAllocations holds the performance contract: comparing an
// in-sync config allocates nothing, for identical values and for the
// normalized-equal forms of the typical config alike.
func TestEqualAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	s := normalize.QEMU()
	for name, cfg := range map[string][]field{"identical": identical(), "in-sync": typicalQEMU, "drift": drifted()} {
		if n := testing.AllocsPerRun(100, func() { equalAll(s, cfg) }); n != 0 {
			t.Errorf("%s: %v allocations per config, want 0", name, n)
		}
	}
	for _, v := range loadVectors(t) {
		s := vectorSet(t, v)
		if n := testing.AllocsPerRun(20, func() { s.Equal(v.Field, v.Desired, v.Actual) }); n != 0 {
			t.Errorf("vector %s: %v allocations", v.ID, n)
		}
	}
	for _, c := range quirkCases {
		s := setFor(t, c.guest)
		if n := testing.AllocsPerRun(20, func() { s.Equal(c.field, c.desired, c.actual) }); n != 0 {
			t.Errorf("%s %s Equal(%q, %q): %v allocations", c.quirk, c.field, c.desired, c.actual, n)
		}
	}
}

// TestNormalizeForms pins the canonical form of each kind of field.
func TestNormalizeForms(t *testing.T) {
	for _, c := range []struct {
		guest, field, in, want string
	}{
		{"qemu", "description", "a\r\nb \n\n", "a\nb"},
		{"qemu", "tags", "Web, db;web", "db;web"},
		{"qemu", "onboot", "Yes", "1"},
		{"qemu", "cores", "+04", "4"},
		{"qemu", "cpulimit", "1.50", "1.5"},
		{"qemu", "memory", "current=2048", "2048"},
		{"qemu", "ostype", " l26 ", "l26"},
		{"qemu", "hotplug", "1", "disk,network,usb"},
		{"qemu", "hotplug", "usb;network", "network,usb"},
		{"qemu", "hotplug", "0", "0"},
		{"qemu", "nameserver", "1.1.1.1,8.8.8.8;9.9.9.9", "1.1.1.1 8.8.8.8 9.9.9.9"},
		{"lxc", "searchdomain", "a.example; b.example", "a.example b.example"},
		{"qemu", "agent", "enabled=yes,freeze-fs-on-backup=0", "1,freeze-fs=0"},
		{"qemu", "cpu", "flags=+pcid;+aes,cputype=host", "host,flags=+aes;+pcid"},
		{"qemu", "boot", "legacy=cdn", "cdn"},
		{"qemu", "boot", "cdn,order=scsi0 net0", "order=scsi0;net0"},
		{"qemu", "startup", "up=30,order=1", "1,up=30"},
		{"qemu", "net0", "bridge=vmbr0,model=virtio,macaddr=bc:24:11:5e:7a:01,firewall=on", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0,firewall=1"},
		{"qemu", "scsi0", "iothread=true,volume=local-lvm:vm-100-disk-0,size=34359738368", "local-lvm:vm-100-disk-0,iothread=1,size=32G"},
		{"qemu", "scsi0", "local-lvm:32,ssd=on", "local-lvm:32,ssd=1"},
		{"qemu", "sshkeys", "ssh-ed25519 AAAA a@b\r\n", "ssh-ed25519%20AAAA%20a%40b"},
		{"qemu", "vmgenid", "C2A8BA0F-1D8E-4A46-9A33-2D1B8D1F3F0E", "c2a8ba0f-1d8e-4a46-9a33-2d1b8d1f3f0e"},
		{"qemu", "cipassword", " secret ", "secret"},
		{"lxc", "net0", "bridge=vmbr0,name=eth0,ip=dhcp,type=veth", "name=eth0,bridge=vmbr0,ip=dhcp,type=veth"},
		{"lxc", "mp0", "mp=/data,backup=yes,local-lvm:vm-101-disk-1,size=10240M", "local-lvm:vm-101-disk-1,mp=/data,backup=1,size=10G"},
		{"lxc", "features", "nesting=true,mount=nfs;cifs", "mount=cifs;nfs,nesting=1"},
		{"qemu", "net0", "not,a,valid,,nic=", "not,a,valid,,nic="},
	} {
		if got := setFor(t, c.guest).Normalize(c.field, c.in); got != c.want {
			t.Errorf("%s Normalize(%q, %q) = %q, want %q", c.guest, c.field, c.in, got, c.want)
		}
	}
}
