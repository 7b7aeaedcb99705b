package normalize

import (
	"errors"
	"slices"
	"testing"
)

// builtinFormats are the property-string formats of the QEMU and LXC rules.
var builtinFormats = map[string]*Format{
	"qemu-net": qemuNICFormat,
	"drive":    driveFormat,
	"unused":   unusedFormat,
	"agent":    agentFormat,
	"cpu":      cpuFormat,
	"memory":   memoryFormat,
	"startup":  startupFormat,
	"ipconfig": ipconfigFormat,
	"smbios1":  smbios1Format,
	"meta":     metaFormat,
	"vga":      vgaFormat,
	"watchdog": watchdogFormat,
	"spice":    spiceFormat,
	"audio":    audioFormat,
	"cicustom": cicustomFormat,
	"numa":     numaNodeFormat,
	"boot":     bootFormat,
	"lxc-net":  lxcNICFormat,
	"rootfs":   rootfsFormat,
	"mp":       mpFormat,
	"features": featuresFormat,
}

func TestParseProperty(t *testing.T) {
	for _, c := range []struct {
		name   string
		format *Format
		in     string
		items  []Item
		print  string
		why    string
	}{
		{"nic folded", qemuNICFormat, "virtio=BC:24:11:5E:7A:01,bridge=vmbr0",
			[]Item{{"model", "virtio"}, {"macaddr", "BC:24:11:5E:7A:01"}, {"bridge", "vmbr0"}},
			"virtio=BC:24:11:5E:7A:01,bridge=vmbr0", "keyAlias splits into model and macaddr"},
		{"nic keys", qemuNICFormat, "tag=20,bridge=vmbr0,macaddr=bc:24:11:5e:7a:01,model=virtio",
			[]Item{{"tag", "20"}, {"bridge", "vmbr0"}, {"macaddr", "bc:24:11:5e:7a:01"}, {"model", "virtio"}},
			"virtio=BC:24:11:5E:7A:01,bridge=vmbr0,tag=20", "printed folded, MAC upper-case, default key first, rest sorted"},
		{"nic bare", qemuNICFormat, " bridge=vmbr0,,virtio, ",
			[]Item{{"bridge", "vmbr0"}, {"model", "virtio"}},
			"virtio,bridge=vmbr0", "blank items are skipped; the bare default key may come last"},
		{"drive", driveFormat, "volume=local-lvm:vm-100-disk-0,size=34359738368,iothread=on",
			[]Item{{"file", "local-lvm:vm-100-disk-0"}, {"size", "34359738368"}, {"iothread", "on"}},
			"local-lvm:vm-100-disk-0,iothread=1,size=32G", "alias, boolean and size canonical"},
		{"drive odd size", driveFormat, "local:iso/x.iso,media=cdrom,size=1000",
			[]Item{{"file", "local:iso/x.iso"}, {"media", "cdrom"}, {"size", "1000"}},
			"local:iso/x.iso,media=cdrom,size=1000", "sizes that are not KiB-aligned print as bytes"},
		{"lxc net", lxcNICFormat, "bridge=vmbr0,ip=dhcp,name=eth0",
			[]Item{{"bridge", "vmbr0"}, {"ip", "dhcp"}, {"name", "eth0"}},
			"name=eth0,bridge=vmbr0,ip=dhcp", "required keys before optional ones"},
		{"mount point", mpFormat, "mp=/data,local-lvm:vm-101-disk-1,backup=yes",
			[]Item{{"mp", "/data"}, {"volume", "local-lvm:vm-101-disk-1"}, {"backup", "yes"}},
			"local-lvm:vm-101-disk-1,mp=/data,backup=1", "default key, required, optional"},
		{"cpu flags", cpuFormat, "flags=+pcid;+aes;+pcid,host",
			[]Item{{"flags", "+pcid;+aes;+pcid"}, {"cputype", "host"}},
			"host,flags=+aes;+pcid", "sets print sorted without duplicates"},
		{"boot order", bootFormat, "order=scsi0;ide2 net0",
			[]Item{{"order", "scsi0;ide2 net0"}},
			"order=scsi0;ide2;net0", "lists join with ;"},
		{"agent alias", agentFormat, "1,freeze-fs-on-backup=0",
			[]Item{{"enabled", "1"}, {"freeze-fs", "0"}},
			"1,freeze-fs=0", "freeze-fs-on-backup is freeze-fs"},
		{"unknown key", qemuNICFormat, "virtio,zzz=1,bridge=vmbr0",
			[]Item{{"model", "virtio"}, {"zzz", "1"}, {"bridge", "vmbr0"}},
			"virtio,bridge=vmbr0,zzz=1", "unknown keys are kept as text"},
		{"default value with =", driveFormat, "file=a=b",
			[]Item{{"file", "a=b"}},
			"file=a=b", "a bare a=b would read back as key a"},
		{"value with =", smbios1Format, "serial=QUJD,base64=1,family=YQ==",
			[]Item{{"serial", "QUJD"}, {"base64", "1"}, {"family", "YQ=="}},
			"base64=1,family=YQ==,serial=QUJD", "values may contain ="},
		{"empty", featuresFormat, "  ", nil, "", "nothing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := ParseProperty(c.format, c.in)
			if err != nil {
				t.Fatalf("ParseProperty(%q): %v", c.in, err)
			}
			if got := p.Items(); !slices.Equal(got, c.items) {
				t.Errorf("items = %v, want %v (%s)", got, c.items, c.why)
			}
			if got := p.String(); got != c.print {
				t.Errorf("String() = %q, want %q (%s)", got, c.print, c.why)
			}
			for _, it := range c.items {
				if v, ok := p.Lookup(it.Key); !ok || v != it.Value {
					t.Errorf("Lookup(%q) = %q, %v", it.Key, v, ok)
				}
			}
			if _, ok := p.Lookup("no-such-key"); ok {
				t.Error("Lookup of a missing key succeeded")
			}
		})
	}
}

func TestParsePropertyErrors(t *testing.T) {
	for _, c := range []struct {
		format *Format
		in     string
	}{
		{qemuNICFormat, "=vmbr0"},
		{qemuNICFormat, "virtio,bridge="},
		{qemuNICFormat, "virtio,bridge=a,bridge=b"},
		{qemuNICFormat, "virtio,e1000"},
		{qemuNICFormat, "virtio=BC:24:11:5E:7A:01,model=e1000"},
		{qemuNICFormat, "virtio=BC:24:11:5E:7A:01,macaddr=BC:24:11:5E:7A:02"},
		{qemuNICFormat, "model=e1000,virtio=BC:24:11:5E:7A:01"},
		{driveFormat, "volume=a,file=b"},
		{featuresFormat, "nesting=1,bare"},
		{nil, "x"},
	} {
		if _, err := ParseProperty(c.format, c.in); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseProperty(%q) error = %v, want ErrSyntax", c.in, err)
		}
	}
	var zero Property
	if zero.String() != "" || len(zero.Items()) != 0 {
		t.Error("the zero Property is not empty")
	}
}

// FuzzParseProperty checks, for every built-in format, that parsing never
// panics and that parse-print-parse is stable: a printed property string
// parses again and prints the same.
func FuzzParseProperty(f *testing.F) {
	for _, s := range []string{
		"virtio=BC:24:11:5E:7A:01,bridge=vmbr0,firewall=1",
		"local-lvm:vm-100-disk-0,iothread=1,size=32G",
		"local-lvm:32,format=qcow2,import-from=local:import/x.qcow2",
		"name=eth0,bridge=vmbr0,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,type=veth",
		"local-lvm:vm-101-disk-1,mp=/data,backup=1,size=10G,mountoptions=noatime;nosuid",
		"host,flags=+pcid;+aes",
		"1,fstrim_cloned_disks=1,freeze-fs-on-backup=0",
		"order=scsi0;ide2;net0",
		"cdn",
		"mount=nfs;cifs,nesting=1",
		"file=a=b,,=,x=,=y",
		"uuid=7b9a64a2-4f8a-4bd5-a0a5-6d0e4c4d6b9b,base64=1,serial=QUJD",
		"size=1.5G,size=2",
	} {
		f.Add(s)
	}
	names := make([]string, 0, len(builtinFormats))
	for name := range builtinFormats {
		names = append(names, name)
	}
	slices.Sort(names)
	f.Fuzz(func(t *testing.T, s string) {
		for _, name := range names {
			format := builtinFormats[name]
			p, err := ParseProperty(format, s)
			if err != nil {
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("%s: error %v is not ErrSyntax", name, err)
				}
				continue
			}
			printed := p.String()
			q, err := ParseProperty(format, printed)
			if err != nil {
				t.Fatalf("%s: %q printed as %q, which does not parse: %v", name, s, printed, err)
			}
			if again := q.String(); again != printed {
				t.Fatalf("%s: %q printed as %q, then as %q", name, s, printed, again)
			}
			if len(q.Items()) != len(p.Items()) {
				t.Fatalf("%s: %q has %d items, its print %q has %d", name, s, len(p.Items()), printed, len(q.Items()))
			}
		}
	})
}
