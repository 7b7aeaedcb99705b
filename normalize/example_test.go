package normalize_test

import (
	"fmt"
	"strings"

	"github.com/guestward/guestward/normalize"
)

// A reconciler compares each declared field with the value Proxmox reports.
// Proxmox's rewriting (a generated MAC, sorted tags, an allocated disk) is
// not drift; a changed bridge is.
func ExampleSet_Equal() {
	s := normalize.QEMU()

	fmt.Println(s.Equal("net0", "virtio,bridge=vmbr0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0"))
	fmt.Println(s.Equal("tags", "web,Prod", "prod;web"))
	fmt.Println(s.Equal("scsi0", "local-lvm:32", "local-lvm:vm-100-disk-0,size=32G"))
	fmt.Println(s.Equal("onboot", "0", "")) // absent means the schema default
	fmt.Println(s.Equal("net0", "virtio,bridge=vmbr0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr1"))
	// Output:
	// true
	// true
	// true
	// true
	// false
}

// Explain tells a person which part of a value differs.
func ExampleSet_Explain() {
	s := normalize.QEMU()
	for _, d := range s.Explain("net0",
		"virtio,bridge=vmbr0,tag=10",
		"virtio=BC:24:11:5E:7A:01,bridge=vmbr1,tag=10,firewall=1") {
		fmt.Println(d)
	}
	for _, d := range s.Explain("scsi0", "local-lvm:32", "local-zfs:vm-100-disk-0,size=64G") {
		fmt.Println(d)
	}
	// Output:
	// net0 bridge: desired "vmbr0", actual "vmbr1"
	// net0 firewall: desired (absent), actual "1"
	// scsi0 storage: desired "local-lvm", actual "local-zfs"
	// scsi0 size: desired "32G", actual "64G"
}

// Normalize prints a value in canonical form: Proxmox's key order, the
// default key bare, canonical booleans and sizes, sorted sets.
func ExampleSet_Normalize() {
	s := normalize.QEMU()
	fmt.Println(s.Normalize("net0", "bridge=vmbr0,firewall=yes,macaddr=bc:24:11:5e:7a:01,model=virtio"))
	fmt.Println(s.Normalize("scsi0", "volume=local-lvm:vm-100-disk-0,size=34359738368,iothread=on"))
	fmt.Println(s.Normalize("tags", "Web, db;web"))
	fmt.Println(normalize.LXC().Normalize("description", "Web server\r\n\n"))
	// Output:
	// virtio=BC:24:11:5E:7A:01,bridge=vmbr0,firewall=1
	// local-lvm:vm-100-disk-0,iothread=1,size=32G
	// db;web
	// Web server
}

// Options adapt a Set to a cluster: case-sensitive tags (datacenter
// tag-style), cgroup v2 clamping of cpuunits, and rules for fields the Set
// does not know.
func ExampleSet_With() {
	usbFormat := &normalize.Format{
		DefaultKey: "host",
		Keys: map[string]normalize.Key{
			"host": {},
			"usb3": {Type: normalize.TypeBool, Default: "0"},
		},
	}
	s, err := normalize.QEMU().With(
		normalize.WithCaseSensitiveTags(),
		normalize.WithFamily("usb", normalize.PropertyRule(usbFormat, false)),
		normalize.WithField("args", normalize.FuncRule(strings.ToLower)),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.Equal("tags", "Web", "web"))
	fmt.Println(s.Equal("usb0", "host=1234:5678,usb3=no", "1234:5678"))
	fmt.Println(s.Equal("args", "-No-Reboot", "-no-reboot"))
	// Output:
	// false
	// true
	// true
}

// ParseProperty reads a property string the way Proxmox does, folded NIC
// model and MAC included; String prints it in Proxmox's order.
func ExampleParseProperty() {
	f := &normalize.Format{
		DefaultKey: "model",
		FoldKey:    "macaddr",
		FoldValues: []string{"virtio", "e1000"},
		Keys: map[string]normalize.Key{
			"macaddr":  {Type: normalize.TypeFold, Generated: true},
			"firewall": {Type: normalize.TypeBool},
		},
	}
	p, err := normalize.ParseProperty(f, "firewall=on,bridge=vmbr0,virtio=bc:24:11:5e:7a:01")
	if err != nil {
		fmt.Println(err)
		return
	}
	mac, _ := p.Lookup("macaddr")
	fmt.Println(mac)
	fmt.Println(p)
	// Output:
	// bc:24:11:5e:7a:01
	// virtio=BC:24:11:5E:7A:01,bridge=vmbr0,firewall=1
}

func ExampleParseSize() {
	n, _ := normalize.ParseSize("1.5G")
	fmt.Println(n, normalize.FormatSize(n))
	// Output: 1610612736 1536M
}

func ExampleDescription() {
	fmt.Printf("%q\n", normalize.Description("Owner: ops\r\nWeb server\r\n\n  "))
	// Output: "Owner: ops\nWeb server"
}
