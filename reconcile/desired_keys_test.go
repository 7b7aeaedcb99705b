package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// neverKeys are the options no ValidateOptions can allow, one of each
// family, with a value a careless caller might write.
var neverKeys = map[string]string{
	"lock": "backup", "template": "1", "parent": "snap1", "snaptime": "1700000000",
	"snapstate": "prepare", "vmstate": "local:100/vm-100-state-s.raw",
	"runningmachine": "pc-q35-9.0+pve0", "runningcpu": "host,+kvm_pv_eoi",
	"running-nets-host-mtu": "net0=1500", "meta": "creation-qemu=9.0.0,ctime=1",
	"unused0": "local-lvm:vm-100-disk-1", "unused255": "local:100/x.raw",
	"unprivileged": "0", "pending": "x", "snapshots": "x",
	"lxc": "x", "lxc.apparmor.profile": "unconfined", "lxc.cgroup2.devices.allow": "a",
}

func TestValidateDesiredForbiddenKeys(t *testing.T) {
	type tc struct {
		name  string
		ref   proxmox.Ref
		set   map[string]string
		del   []string
		allow []string
		// want: "" valid; "forbidden" refused as ErrForbiddenKey;
		// "invalid" refused, but not as a forbidden option.
		want    string
		mention string // the error names this
	}
	set := func(k, v string) map[string]string { return map[string]string{k: v} }
	cases := []tc{
		// Root-only QEMU options, by name.
		{name: "args", ref: qemu(100), set: set("args", "-no-reboot"), want: "forbidden", mention: `"args"`},
		{name: "delete args", ref: qemu(100), del: []string{"args"}, want: "forbidden", mention: `"args" may not be deleted`},
		{name: "args allowed", ref: qemu(100), set: set("args", "-no-reboot"), allow: []string{"args"}},
		{name: "delete args allowed", ref: qemu(100), del: []string{"args"}, allow: []string{"args"}},
		{name: "args allowed, not hookscript", ref: qemu(100), set: map[string]string{"args": "-x", "hookscript": "local:snippets/h.sh"}, allow: []string{"args"}, want: "forbidden", mention: `"hookscript"`},
		{name: "qemu hookscript", ref: qemu(100), set: set("hookscript", "local:snippets/h.sh"), want: "forbidden", mention: "root-only"},
		{name: "lxc hookscript", ref: lxc(200), set: set("hookscript", "local:snippets/h.sh"), want: "forbidden", mention: "hookscript"},
		{name: "lxc hookscript allowed", ref: lxc(200), del: []string{"hookscript"}, allow: []string{"hookscript"}},
		{name: "ivshmem", ref: qemu(100), set: set("ivshmem", "size=32"), want: "forbidden"},
		{name: "affinity", ref: qemu(100), set: set("affinity", "0-3"), want: "forbidden"},
		{name: "hugepages", ref: qemu(100), set: set("hugepages", "1024"), want: "forbidden"},
		{name: "keephugepages", ref: qemu(100), set: set("keephugepages", "1"), want: "forbidden"},
		{name: "amd-sev", ref: qemu(100), set: set("amd-sev", "type=std"), want: "forbidden"},
		{name: "intel-tdx", ref: qemu(100), del: []string{"intel-tdx"}, want: "forbidden"},
		{name: "qemu arch", ref: qemu(100), set: set("arch", "aarch64"), want: "forbidden"},
		{name: "lxc arch is open", ref: lxc(200), set: set("arch", "amd64")},
		{name: "vmgenid", ref: qemu(100), set: set("vmgenid", "1"), want: "forbidden"},
		{name: "spice_enhancements", ref: qemu(100), set: set("spice_enhancements", "foldersharing=1"), want: "forbidden"},
		{name: "parallel", ref: qemu(100), set: set("parallel0", "/dev/parport0"), want: "forbidden", mention: "parallel0"},
		{name: "delete parallel", ref: qemu(100), del: []string{"parallel2"}, want: "forbidden"},
		{name: "parallel allowed", ref: qemu(100), set: set("parallel0", "/dev/parport0"), allow: []string{"parallel"}},

		// QEMU device options, by value.
		{name: "hostpci host", ref: qemu(100), set: set("hostpci0", "0000:01:00.0,pcie=1"), want: "forbidden", mention: "hostpci0"},
		{name: "hostpci host key", ref: qemu(100), set: set("hostpci3", "host=0000:01:00.0"), want: "forbidden"},
		{name: "hostpci mapping", ref: qemu(100), set: set("hostpci0", "mapping=gpu,pcie=1")},
		{name: "hostpci mapping with romfile", ref: qemu(100), set: set("hostpci0", "mapping=gpu,romfile=vbios.bin"), want: "forbidden"},
		{name: "hostpci mapping and host", ref: qemu(100), set: set("hostpci0", "mapping=gpu,host=0000:01:00.0"), want: "forbidden"},
		{name: "hostpci nothing", ref: qemu(100), set: set("hostpci0", "pcie=1"), want: "forbidden"},
		{name: "hostpci quoted", ref: qemu(100), set: set("hostpci0", `mapping="gpu"`), want: "forbidden"},
		{name: "hostpci allowed", ref: qemu(100), set: set("hostpci0", "0000:01:00.0"), allow: []string{"hostpci"}},
		{name: "usb host device", ref: qemu(100), set: set("usb0", "host=1234:5678"), want: "forbidden", mention: "usb0"},
		{name: "usb port", ref: qemu(100), set: set("usb1", "1-2.3,usb3=1"), want: "forbidden"},
		{name: "usb spice", ref: qemu(100), set: set("usb0", "spice")},
		{name: "usb spice key, other case", ref: qemu(100), set: set("usb0", "host=SPICE,usb3=1")},
		{name: "usb mapping", ref: qemu(100), set: set("usb0", "mapping=token")},
		{name: "usb host given twice", ref: qemu(100), set: set("usb0", "spice,host=1234:5678"), want: "forbidden"},
		{name: "usb key given twice", ref: qemu(100), set: set("usb0", "host=spice,host=1234:5678"), want: "forbidden"},
		{name: "usb allowed", ref: qemu(100), set: set("usb0", "host=1234:5678"), allow: []string{"usb"}},
		{name: "usb not allowed by hostpci", ref: qemu(100), set: set("usb0", "host=1234:5678"), allow: []string{"hostpci"}, want: "forbidden"},
		{name: "serial device", ref: qemu(100), set: set("serial0", "/dev/ttyS0"), want: "forbidden"},
		{name: "serial socket", ref: qemu(100), set: set("serial0", "socket")},
		{name: "delete device by value", ref: qemu(100), del: []string{"hostpci0", "usb1", "serial2"}},

		// Container options.
		{name: "dev", ref: lxc(200), set: set("dev0", "/dev/kvm"), want: "forbidden", mention: "dev0"},
		{name: "delete dev", ref: lxc(200), del: []string{"dev7"}, want: "forbidden"},
		{name: "dev allowed", ref: lxc(200), set: set("dev0", "/dev/kvm"), allow: []string{"dev"}},
		{name: "mp volume", ref: lxc(200), set: set("mp0", "local-lvm:8,mp=/data")},
		{name: "mp volume key last", ref: lxc(200), set: set("mp0", "mp=/data,volume=local-lvm:vm-200-disk-1")},
		{name: "mp bind", ref: lxc(200), set: set("mp0", "/srv/data,mp=/data"), want: "forbidden", mention: "mp0"},
		{name: "mp device", ref: lxc(200), set: set("mp1", "volume=/dev/sdb1,mp=/x"), want: "forbidden"},
		{name: "mp without source", ref: lxc(200), set: set("mp1", "mp=/x"), want: "forbidden"},
		{name: "mp bind allowed", ref: lxc(200), set: set("mp0", "/srv/data,mp=/data"), allow: []string{"mp"}},
		{name: "delete mp", ref: lxc(200), del: []string{"mp0"}},
		{name: "rootfs volume", ref: lxc(200), set: set("rootfs", "local-lvm:vm-200-disk-0,size=8G")},
		{name: "rootfs bind", ref: lxc(200), set: set("rootfs", "/srv/root"), want: "forbidden", mention: "rootfs"},
		{name: "rootfs not allowed by mp", ref: lxc(200), set: set("rootfs", "/srv/root"), allow: []string{"mp"}, want: "forbidden"},
		{name: "features nesting", ref: lxc(200), set: set("features", "nesting=1")},
		{name: "features keyctl", ref: lxc(200), set: set("features", "nesting=1,keyctl=1"), want: "forbidden", mention: "features"},
		{name: "features fuse", ref: lxc(200), set: set("features", "fuse=1"), want: "forbidden"},
		{name: "features bare value", ref: lxc(200), set: set("features", "1"), want: "forbidden"},
		{name: "delete features", ref: lxc(200), del: []string{"features"}},
		{name: "features allowed", ref: lxc(200), set: set("features", "fuse=1,mknod=1"), allow: []string{"features"}},

		// Options of the other guest type are Proxmox's to refuse.
		{name: "qemu features", ref: qemu(100), set: set("features", "fuse=1")},
		{name: "qemu dev", ref: qemu(100), set: set("dev0", "/dev/kvm")},
		{name: "lxc args", ref: lxc(200), set: set("args", "-x")},
		{name: "lxc usb", ref: lxc(200), set: set("usb0", "host=1234:5678")},

		// Letter case: Proxmox's names are lower-case.
		{name: "Args", ref: qemu(100), set: set("Args", "-x"), want: "forbidden", mention: `"Args"`},
		{name: "ARGS deleted", ref: qemu(100), del: []string{"ARGS"}, want: "forbidden", mention: `"ARGS"`},
		{name: "HookScript on lxc", ref: lxc(200), set: set("HookScript", "local:snippets/h.sh"), want: "forbidden"},
		{name: "HOSTPCI0", ref: qemu(100), set: set("HOSTPCI0", "0000:01:00.0"), want: "forbidden"},
		{name: "LOCK", ref: qemu(100), del: []string{"LOCK"}, want: "forbidden"},
		{name: "Unused0", ref: lxc(200), del: []string{"Unused0"}, want: "forbidden"},
		{name: "Args allowed is still not an option", ref: qemu(100), set: set("Args", "-x"), allow: []string{"args"}, want: "invalid", mention: "lower-case"},
		{name: "Memory", ref: qemu(100), set: set("Memory", "1024"), want: "invalid", mention: `"Memory" is not lower-case`},
		{name: "memory and Memory", ref: qemu(100), set: map[string]string{"memory": "1024", "Memory": "64"}, want: "invalid", mention: `"Memory"`},
		{name: "NET0 deleted", ref: qemu(100), del: []string{"NET0"}, want: "invalid", mention: "lower-case"},

		// Plain options stay open.
		{name: "plain", ref: qemu(100), set: map[string]string{"memory": "1024", "net0": "virtio,bridge=vmbr0", "tags": "a;b"}, del: []string{"ide2", "scsi1"}},
		{name: "unused bare stem", ref: qemu(100), del: []string{"unused"}},
	}
	for k, v := range neverKeys {
		for _, ref := range []proxmox.Ref{qemu(100), lxc(200)} {
			cases = append(cases,
				tc{name: "set " + k + " on " + string(ref.Type), ref: ref, set: set(k, v), allow: reconcile.RootOnlyKeys(), want: "forbidden", mention: "not configuration"},
				tc{name: "delete " + k + " on " + string(ref.Type), ref: ref, del: []string{k}, allow: reconcile.RootOnlyKeys(), want: "forbidden", mention: fmt.Sprintf("%q may not be deleted", k)})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := reconcile.Desired{Ref: c.ref, Config: c.set, Delete: c.del}
			opts := reconcile.ValidateOptions{AllowRootOnly: c.allow}
			err := reconcile.ValidateDesiredWith([]reconcile.Desired{d}, opts)
			if one := d.ValidateWith(opts); (one == nil) != (err == nil) {
				t.Fatalf("ValidateDesiredWith: %v, but Desired.ValidateWith: %v", err, one)
			}
			if c.allow == nil {
				if def := reconcile.ValidateDesired([]reconcile.Desired{d}); (def == nil) != (err == nil) {
					t.Fatalf("ValidateDesiredWith: %v, but ValidateDesired: %v", err, def)
				}
				if def := d.Validate(); (def == nil) != (err == nil) {
					t.Fatalf("ValidateDesiredWith: %v, but Desired.Validate: %v", err, def)
				}
			}
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want == "":
				return
			case err == nil:
				t.Fatal("accepted")
			}
			var de *reconcile.DesiredError
			if !errors.As(err, &de) || !errors.Is(err, reconcile.ErrInvalidDesired) {
				t.Errorf("%v is not a *DesiredError wrapping ErrInvalidDesired", err)
			}
			if got := errors.Is(err, reconcile.ErrForbiddenKey); got != (c.want == "forbidden") {
				t.Errorf("errors.Is(err, ErrForbiddenKey) = %v, want %v: %v", got, !got, err)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Errorf("error %q does not mention %q", err, c.mention)
			}
			if !strings.Contains(err.Error(), c.ref.String()) {
				t.Errorf("error %q does not name the guest", err)
			}
		})
	}
}

// Every spelling of a key that is not configuration is refused, whatever
// the options allow: letter case cannot smuggle one past the check.
func TestValidateDesiredNeverKeysInEveryCase(t *testing.T) {
	all := reconcile.ValidateOptions{AllowRootOnly: reconcile.RootOnlyKeys()}
	for k := range neverKeys {
		letters := 0
		for _, r := range k {
			if r >= 'a' && r <= 'z' {
				letters++
			}
		}
		variants := 1 << min(letters, 10)
		for mask := range variants {
			var b strings.Builder
			i := 0
			for _, r := range k {
				if r >= 'a' && r <= 'z' {
					if i < 10 && mask&(1<<i) != 0 {
						r -= 'a' - 'A'
					}
					i++
				}
				b.WriteRune(r)
			}
			name := b.String()
			for _, d := range []reconcile.Desired{
				{Ref: qemu(100), Config: map[string]string{name: "1"}},
				{Ref: lxc(200), Delete: []string{name}},
			} {
				if err := d.ValidateWith(all); !errors.Is(err, reconcile.ErrForbiddenKey) {
					t.Fatalf("%q on %s: %v", name, d.Ref, err)
				}
			}
		}
	}
}

func TestValidateOptions(t *testing.T) {
	for _, c := range []struct {
		name      string
		allow     []string
		forbidden bool   // a never-managed key: ErrForbiddenKey
		mention   string // "" for valid
	}{
		{name: "zero"},
		{name: "every root-only key", allow: reconcile.RootOnlyKeys()},
		{name: "misspelt", allow: []string{"args", "hostcpi"}, mention: `"hostcpi" is not a root-only option`},
		{name: "indexed name instead of stem", allow: []string{"hostpci0"}, mention: "hostpci0"},
		{name: "upper case", allow: []string{"Args"}, mention: `"Args"`},
		{name: "plain option", allow: []string{"memory"}, mention: `"memory"`},
		{name: "empty", allow: []string{""}, mention: `""`},
		{name: "lock", allow: []string{"lock"}, forbidden: true, mention: `"lock" can never be managed`},
		{name: "unused", allow: []string{"unused"}, forbidden: true, mention: `"unused"`},
		{name: "raw lxc", allow: []string{"lxc"}, forbidden: true, mention: `"lxc"`},
		{name: "template", allow: []string{"template"}, forbidden: true, mention: `"template"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := reconcile.ValidateOptions{AllowRootOnly: c.allow}
			errs := map[string]error{"Validate": opts.Validate()}
			// Every guard refuses invalid options, even for a state that
			// declares nothing: a misspelt allowance must not go unseen.
			errs["ValidateDesiredWith"] = reconcile.ValidateDesiredWith(nil, opts)
			errs["Desired.ValidateWith"] = reconcile.Desired{Ref: qemu(100)}.ValidateWith(opts)
			_, errs["ParseDesiredJSONWith"] = reconcile.ParseDesiredJSONWith([]byte(`{"guests": []}`), opts)
			_, errs["NewStaticProviderWith"] = reconcile.NewStaticProviderWith(nil, opts)
			_, errs["NewFileProviderWith"] = reconcile.NewFileProviderWith("desired.json", opts)
			for fn, err := range errs {
				if c.mention == "" {
					if err != nil {
						t.Errorf("%s: %v", fn, err)
					}
					continue
				}
				if err == nil || !errors.Is(err, reconcile.ErrInvalidDesired) || !strings.Contains(err.Error(), c.mention) {
					t.Errorf("%s: %v, want an ErrInvalidDesired mentioning %q", fn, err, c.mention)
				}
				if got := errors.Is(err, reconcile.ErrForbiddenKey); got != c.forbidden {
					t.Errorf("%s: errors.Is(err, ErrForbiddenKey) = %v: %v", fn, got, err)
				}
			}
		})
	}
}

func TestRootOnlyKeys(t *testing.T) {
	keys := reconcile.RootOnlyKeys()
	if !slices.IsSorted(keys) {
		t.Errorf("not sorted: %q", keys)
	}
	for _, k := range []string{"args", "hookscript", "hostpci", "usb", "serial", "parallel", "dev", "mp", "rootfs", "features", "affinity", "vmgenid"} {
		if !slices.Contains(keys, k) {
			t.Errorf("%q missing from %q", k, keys)
		}
	}
	for k := range neverKeys {
		if slices.Contains(keys, k) {
			t.Errorf("%q can never be managed, yet RootOnlyKeys lists it", k)
		}
	}
	for _, k := range []string{"unused", "memory", "net"} {
		if slices.Contains(keys, k) {
			t.Errorf("%q listed", k)
		}
	}
	// The caller owns the result.
	keys[0] = "lock"
	if reconcile.RootOnlyKeys()[0] == "lock" {
		t.Error("RootOnlyKeys shares its slice")
	}
}

func TestStaticProviderForbiddenKeys(t *testing.T) {
	args := []reconcile.Desired{{Ref: qemu(100), Config: map[string]string{"args": "-no-reboot"}}}
	if _, err := reconcile.NewStaticProvider(args); !errors.Is(err, reconcile.ErrForbiddenKey) {
		t.Fatalf("NewStaticProvider: %v", err)
	}
	var zero reconcile.StaticProvider // the zero value guards too
	if err := zero.Set(args); !errors.Is(err, reconcile.ErrForbiddenKey) {
		t.Fatalf("zero StaticProvider: %v", err)
	}

	allow := []string{"args"}
	p, err := reconcile.NewStaticProviderWith(args, reconcile.ValidateOptions{AllowRootOnly: allow})
	if err != nil {
		t.Fatal(err)
	}
	// The provider keeps its own copy of the options.
	allow[0] = "hookscript"
	if err := p.Set(args); err != nil {
		t.Fatalf("the caller's slice changed what the provider allows: %v", err)
	}
	// Only what was allowed: the previous state stands.
	hook := []reconcile.Desired{{Ref: qemu(101), Config: map[string]string{"hookscript": "local:snippets/h.sh"}}}
	if err := p.Set(hook); !errors.Is(err, reconcile.ErrForbiddenKey) {
		t.Fatalf("hookscript: %v", err)
	}
	if got, _ := p.Desired(ctxT(t)); len(got) != 1 || got[0].Ref != qemu(100) {
		t.Fatalf("%+v", got)
	}
}

func TestFileProviderForbiddenKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "desired.json")
	writeFile(t, path, `{"guests": [{"node": "pve1", "type": "lxc", "vmid": 200, "config": {"hookscript": "local:snippets/h.sh"}}]}`)

	p, err := reconcile.NewFileProvider(path)
	if err != nil {
		t.Fatal(err)
	}
	if ds, err := p.Desired(ctxT(t)); ds != nil || !errors.Is(err, reconcile.ErrForbiddenKey) || !strings.Contains(err.Error(), path) {
		t.Fatalf("%+v %v", ds, err)
	}

	allow := []string{"hookscript"}
	p, err = reconcile.NewFileProviderWith(path, reconcile.ValidateOptions{AllowRootOnly: allow})
	if err != nil {
		t.Fatal(err)
	}
	allow[0] = "args"
	ds, err := p.Desired(ctxT(t))
	if err != nil || len(ds) != 1 || ds[0].Config["hookscript"] != "local:snippets/h.sh" {
		t.Fatalf("%+v %v", ds, err)
	}
	// A later version that declares more than was allowed is stale.
	writeFile(t, path, `{"guests": [{"node": "pve1", "type": "lxc", "vmid": 200, "config": {"dev0": "/dev/kvm"}}]}`)
	if ds, err := p.Desired(ctxT(t)); !errors.Is(err, reconcile.ErrStale) || !errors.Is(err, reconcile.ErrForbiddenKey) || len(ds) != 1 {
		t.Fatalf("%+v %v", ds, err)
	}
}

// rawProvider hands the engine a desired state no provider validated, as
// a provider of the embedder's own might.
type rawProvider []reconcile.Desired

func (p rawProvider) Desired(context.Context) ([]reconcile.Desired, error) { return p, nil }

// The pass is the last guard: whatever the provider let through, a
// forbidden option aborts it before anything is sent, unless the engine's
// own options allow it. (Invalid options never get that far: NewEngine
// refuses them, see TestEngineRefusesInvalidValidation.)
func TestPassRefusesForbiddenKeys(t *testing.T) {
	ref := qemu(100)
	declared := rawProvider{{Ref: ref, Config: map[string]string{"args": "-no-reboot"}}}
	for _, c := range []struct {
		name   string
		opts   reconcile.ValidateOptions
		refuse error // nil: the pass sets args
	}{
		{name: "default", refuse: reconcile.ErrForbiddenKey},
		{name: "other key allowed", opts: reconcile.ValidateOptions{AllowRootOnly: []string{"hookscript"}}, refuse: reconcile.ErrForbiddenKey},
		{name: "allowed", opts: reconcile.ValidateOptions{AllowRootOnly: []string{"args"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, nil, func(cfg *reconcile.Config) {
				cfg.Provider = declared
				cfg.Validation = c.opts
			})
			f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
			f.srv.ResetRequests()
			_, err := f.eng.ReconcileOnce(ctxT(t))
			if c.refuse == nil {
				if err != nil {
					t.Fatal(err)
				}
				if got := f.guest(ref).Config["args"]; got != "-no-reboot" {
					t.Fatalf("args = %q", got)
				}
				return
			}
			if !errors.Is(err, reconcile.ErrPassAborted) || !errors.Is(err, c.refuse) {
				t.Fatalf("%v, want ErrPassAborted and %v", err, c.refuse)
			}
			if n := len(f.srv.Requests()); n != 0 {
				t.Fatalf("%d requests sent for a refused desired state", n)
			}
			if _, ok := f.guest(ref).Config["args"]; ok {
				t.Fatal("args was set")
			}
		})
	}
}

func ExampleValidateDesiredWith() {
	ds := []reconcile.Desired{{
		Ref:    proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100},
		Config: map[string]string{"hostpci0": "0000:01:00.0,pcie=1"},
	}}
	// By default a desired state may not pass host devices through.
	err := reconcile.ValidateDesired(ds)
	fmt.Println(errors.Is(err, reconcile.ErrForbiddenKey))

	// An embedder acting as root@pam that manages passthrough allows it.
	err = reconcile.ValidateDesiredWith(ds, reconcile.ValidateOptions{AllowRootOnly: []string{"hostpci"}})
	fmt.Println(err)

	// What is not configuration stays out of reach.
	ds[0].Delete = []string{"lock"}
	err = reconcile.ValidateDesiredWith(ds, reconcile.ValidateOptions{AllowRootOnly: []string{"hostpci"}})
	fmt.Println(errors.Is(err, reconcile.ErrForbiddenKey))
	// Output:
	// true
	// <nil>
	// true
}
