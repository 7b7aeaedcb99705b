package normalize_test

import (
	"testing"

	"github.com/guestward/guestward/normalize"
)

// field is one declared field of a guest config and the value Proxmox
// reports for it.
type field struct{ name, desired, actual string }

// typicalQEMU is a 30-field QEMU config as a user declares it and as
// Proxmox reports it back once it is in sync: the values differ in every way
// Proxmox rewrites them, yet every pair is equal.
var typicalQEMU = []field{
	{"name", "web01", "web01"},
	{"description", "Web server\nowner: ops\n", "Web server\nowner: ops"},
	{"tags", "web,prod", "prod;web"},
	{"onboot", "true", "1"},
	{"protection", "0", ""},
	{"agent", "enabled=1,fstrim_cloned_disks=1", "1,fstrim_cloned_disks=1"},
	{"ostype", "l26", "l26"},
	{"bios", "ovmf", "ovmf"},
	{"cpu", "cputype=host,flags=+aes;+pcid", "host,flags=+pcid;+aes"},
	{"sockets", "1", ""},
	{"cores", "4", "4"},
	{"numa", "0", ""},
	{"memory", "current=4096", "4096"},
	{"balloon", "2048", "2048"},
	{"scsihw", "virtio-scsi-single", "virtio-scsi-single"},
	{"scsi0", "local-lvm:32,iothread=1,discard=on,ssd=true", "local-lvm:vm-100-disk-1,discard=on,iothread=1,size=32G,ssd=1"},
	{"scsi1", "local-lvm:vm-100-disk-2,size=100G,backup=0", "local-lvm:vm-100-disk-2,backup=0,size=100G"},
	{"efidisk0", "local-lvm:1,efitype=4m,pre-enrolled-keys=1", "local-lvm:vm-100-disk-0,efitype=4m,ms-cert=2023k,pre-enrolled-keys=1,size=4M"},
	{"ide2", "local-lvm:cloudinit", "local-lvm:vm-100-cloudinit,media=cdrom"},
	{"net0", "model=virtio,bridge=vmbr0,firewall=1", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0,firewall=1"},
	{"net1", "virtio,bridge=vmbr1,tag=20", "virtio=BC:24:11:5E:7A:02,bridge=vmbr1,tag=20"},
	{"boot", "order=scsi0;ide2;net0", "order=scsi0;ide2;net0"},
	{"ipconfig0", "gw=10.0.0.1,ip=10.0.0.5/24", "ip=10.0.0.5/24,gw=10.0.0.1"},
	{"nameserver", "1.1.1.1,8.8.8.8", "1.1.1.1 8.8.8.8"},
	{"searchdomain", "example.com", "example.com"},
	{"sshkeys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop", "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl%20alice%40laptop%0A"},
	{"ciuser", "ops", "ops"},
	{"startup", "order=1,up=30", "1,up=30"},
	{"hotplug", "network,disk,usb", ""},
	{"vmgenid", "1", "c2a8ba0f-1d8e-4a46-9a33-2d1b8d1f3f0e"},
}

// drifted returns the typical config with four real changes on the
// Proxmox side.
func drifted() []field {
	out := append([]field(nil), typicalQEMU...)
	for i := range out {
		switch out[i].name {
		case "cores":
			out[i].actual = "2"
		case "tags":
			out[i].actual = "prod;web;legacy"
		case "net0":
			out[i].actual = "virtio=BC:24:11:5E:7A:01,bridge=vmbr1,firewall=1"
		case "scsi0":
			out[i].actual = "local-lvm:vm-100-disk-1,discard=on,iothread=1,size=64G,ssd=1"
		}
	}
	return out
}

func identical() []field {
	out := append([]field(nil), typicalQEMU...)
	for i := range out {
		out[i].desired = out[i].actual
	}
	return out
}

// equalAll compares every field and returns how many differ.
func equalAll(s *normalize.Set, cfg []field) int {
	n := 0
	for _, f := range cfg {
		if !s.Equal(f.name, f.desired, f.actual) {
			n++
		}
	}
	return n
}

func TestTypicalConfig(t *testing.T) {
	s := normalize.QEMU()
	if len(typicalQEMU) != 30 {
		t.Fatalf("typical config has %d fields, want 30", len(typicalQEMU))
	}
	for _, f := range typicalQEMU {
		if !s.Equal(f.name, f.desired, f.actual) {
			t.Errorf("%s: Equal(%q, %q) = false, want true; %v", f.name, f.desired, f.actual, s.Explain(f.name, f.desired, f.actual))
		}
	}
	if n := equalAll(s, drifted()); n != 4 {
		t.Errorf("drifted config: %d fields differ, want 4", n)
	}
}

// BenchmarkEqualConfig compares a typical 30-field QEMU config: byte for
// byte identical, in sync through Proxmox's rewriting, and with four fields
// drifted. One op is the whole config.
func BenchmarkEqualConfig(b *testing.B) {
	s := normalize.QEMU()
	for _, bc := range []struct {
		name  string
		cfg   []field
		diffs int
	}{
		{"identical", identical(), 0},
		{"in-sync", typicalQEMU, 0},
		{"drift", drifted(), 4},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if n := equalAll(s, bc.cfg); n != bc.diffs {
					b.Fatalf("%d fields differ, want %d", n, bc.diffs)
				}
			}
			b.ReportMetric(float64(len(bc.cfg))*float64(b.N)/b.Elapsed().Seconds(), "fields/s")
		})
	}
}

// BenchmarkExplainDrift measures explaining the drifted fields, which only
// a plan report does.
func BenchmarkExplainDrift(b *testing.B) {
	s := normalize.QEMU()
	cfg := drifted()
	b.ReportAllocs()
	for b.Loop() {
		for _, f := range cfg {
			_ = s.Explain(f.name, f.desired, f.actual)
		}
	}
}
