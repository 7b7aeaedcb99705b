package reconcile_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

func TestValidateDesired(t *testing.T) {
	for _, tc := range []struct {
		name string
		ds   []reconcile.Desired
		want string // substring of the error; "" for valid
	}{
		{"valid", []reconcile.Desired{{Ref: qemu(100), Power: reconcile.PowerRunning, Config: map[string]string{"memory": "1"}, Delete: []string{"ide2"}}}, ""},
		{"duplicate", []reconcile.Desired{{Ref: qemu(100)}, {Ref: lxc(100)}}, "declared twice"},
		{"bad node", []reconcile.Desired{{Ref: proxmox.Ref{Node: "-x", Type: proxmox.QEMU, VMID: 100}}}, "node name"},
		{"bad type", []reconcile.Desired{{Ref: proxmox.Ref{Node: "pve1", Type: "vm", VMID: 100}}}, "guest type"},
		{"bad vmid", []reconcile.Desired{{Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 99}}}, "vmid"},
		{"bad power", []reconcile.Desired{{Ref: qemu(100), Power: "paused"}}, "power"},
		{"set and deleted", []reconcile.Desired{{Ref: qemu(100), Config: map[string]string{"args": "-x"}, Delete: []string{"args"}}}, "both set and deleted"},
		{"deleted twice", []reconcile.Desired{{Ref: qemu(100), Delete: []string{"args", "args"}}}, "deleted twice"},
		{"empty value", []reconcile.Desired{{Ref: qemu(100), Config: map[string]string{"description": ""}}}, "empty value"},
		{"newline", []reconcile.Desired{{Ref: qemu(100), Config: map[string]string{"name": "a\nb"}}}, "name"},
		{"bad option name", []reconcile.Desired{{Ref: qemu(100), Config: map[string]string{"bad name": "1"}}}, "bad name"},
		{"control parameter", []reconcile.Desired{{Ref: qemu(100), Config: map[string]string{"digest": "x"}}}, "digest"},
	} {
		err := reconcile.ValidateDesired(tc.ds)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (!errors.Is(err, reconcile.ErrInvalidDesired) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an ErrInvalidDesired mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestStaticProviderKeepsLastValidStateAndCopies(t *testing.T) {
	ds := []reconcile.Desired{{Ref: qemu(100), Config: map[string]string{"memory": "1024"}}}
	p, err := reconcile.NewStaticProvider(ds)
	if err != nil {
		t.Fatal(err)
	}
	ds[0].Config["memory"] = "1" // the provider holds its own copy
	if err := p.Set([]reconcile.Desired{{Ref: qemu(100)}, {Ref: qemu(100)}}); err == nil {
		t.Fatal("duplicate accepted")
	}
	got, _ := p.Desired(ctxT(t))
	if len(got) != 1 || got[0].Config["memory"] != "1024" {
		t.Fatalf("%+v", got)
	}
	// Safe to update while passes read it.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_ = p.Set([]reconcile.Desired{{Ref: qemu(100 + i)}})
		}()
		go func() {
			defer wg.Done()
			if ds, _ := p.Desired(ctxT(t)); len(ds) != 1 {
				t.Error("torn state")
			}
		}()
	}
	wg.Wait()
}

const goodFile = `{"guests": [
  {"node": "pve1", "type": "qemu", "vmid": 100, "power": "running",
   "config": {"memory": 4096, "onboot": true, "balloon": 0, "cpulimit": 1.5, "tags": "web;prod"},
   "delete": ["ide2"]},
  {"node": "pve1", "type": "lxc", "vmid": 200, "power": "stopped"}
]}`

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	// Write and rename, as an editor or a deploy tool does.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFileProvider(t *testing.T) {
	path := filepath.Join(t.TempDir(), "desired.json")
	p, err := reconcile.NewFileProvider(path)
	if err != nil {
		t.Fatal(err)
	}
	// No file yet: an error and no state; the engine does nothing.
	if ds, err := p.Desired(ctxT(t)); err == nil || ds != nil {
		t.Fatalf("missing file: %v %v", ds, err)
	}

	writeFile(t, path, goodFile)
	ds, err := p.Desired(ctxT(t))
	if err != nil || len(ds) != 2 {
		t.Fatalf("%+v %v", ds, err)
	}
	want := map[string]string{"memory": "4096", "onboot": "1", "balloon": "0", "cpulimit": "1.5", "tags": "web;prod"}
	for k, v := range want {
		if ds[0].Config[k] != v {
			t.Errorf("%s = %q, want %q", k, ds[0].Config[k], v)
		}
	}
	if ds[0].Delete[0] != "ide2" || ds[1].Power != reconcile.PowerStopped || ds[1].Ref != lxc(200) {
		t.Fatalf("%+v", ds)
	}

	// A half-written file: the last good state stands, with ErrStale.
	writeFile(t, path, goodFile[:len(goodFile)/2])
	stale, err := p.Desired(ctxT(t))
	if !errors.Is(err, reconcile.ErrStale) || len(stale) != 2 || p.Err() == nil {
		t.Fatalf("half-written: %d guests, %v", len(stale), err)
	}

	// A new good version is picked up.
	writeFile(t, path, `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 101}]}`)
	ds, err = p.Desired(ctxT(t))
	if err != nil || len(ds) != 1 || ds[0].Ref.VMID != 101 || p.Err() != nil {
		t.Fatalf("%+v %v", ds, err)
	}

	// Deleted: stale again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if ds, err := p.Desired(ctxT(t)); !errors.Is(err, reconcile.ErrStale) || len(ds) != 1 {
		t.Fatalf("deleted: %v %v", ds, err)
	}
}

func TestParseDesiredJSONRejects(t *testing.T) {
	for name, data := range map[string]string{
		"not json":       `{"guests": [`,
		"unknown field":  `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "confg": {}}]}`,
		"top-level typo": `{"guest": []}`,
		"null value":     `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "config": {"memory": null}}]}`,
		"object value":   `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "config": {"net0": {"bridge": "vmbr0"}}}]}`,
		"vmid string":    `{"guests": [{"node": "pve1", "type": "qemu", "vmid": "100"}]}`,
		"vmid float":     `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100.5}]}`,
		"trailing data":  `{"guests": []} {"guests": []}`,
		"duplicate":      `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100}, {"node": "pve2", "type": "qemu", "vmid": 100}]}`,
		"bad value":      `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "config": {"name": "a\u0000b"}}]}`,
	} {
		if _, err := reconcile.ParseDesiredJSON([]byte(data)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if ds, err := reconcile.ParseDesiredJSON([]byte(`{"guests": []}`)); err != nil || len(ds) != 0 {
		t.Fatalf("empty: %v %v", ds, err)
	}
}

func FuzzParseDesiredJSON(f *testing.F) {
	f.Add([]byte(goodFile))
	f.Add([]byte(`{"guests": []}`))
	f.Add([]byte(`{"guests": [{"node": "pve1", "type": "lxc", "vmid": 1e3, "config": {"a": true}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := reconcile.ParseDesiredJSON(data)
		if err != nil {
			return
		}
		// Whatever parses is valid: it can be handed to an engine as is.
		if err := reconcile.ValidateDesired(ds); err != nil {
			t.Fatalf("parsed but invalid: %v", err)
		}
	})
}
