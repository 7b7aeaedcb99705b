package gauntlet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// The bad-input battery feeds the engine malformed and hostile input from
// both sides: desired-state files and guest references from its user, and
// answers from a Proxmox that misbehaves. Each must get a clear error (one
// that names what is wrong and where), nothing malformed may reach Proxmox
// (the fake server's request log is the witness), and nothing may crash.

// good is a valid desired-state file for the battery's cluster.
const good = `{"guests": [
  {"node": "pve1", "type": "qemu", "vmid": 100, "power": "running",
   "config": {"memory": 1024, "description": "web", "onboot": true}},
  {"node": "pve1", "type": "lxc", "vmid": 200, "config": {"memory": 512}}
]}`

// guestJSON wraps one guest's JSON in a desired-state file.
func guestJSON(g string) string { return `{"guests": [` + g + `]}` }

// qemuWith is a QEMU guest declaring config (a JSON object's members).
func qemuWith(config string) string {
	return guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100, "config": {` + config + `}}`)
}

type desiredCase struct {
	name string
	file string
	// want lists what the error must mention, so that a person can find
	// the problem from the message alone.
	want []string
	// invalid: the file decodes, and its content is refused
	// (ErrInvalidDesired); otherwise it is malformed.
	invalid bool
}

func desiredCases() []desiredCase {
	long := strings.Repeat("x", proxmox.MaxDescription+1)
	var nested strings.Builder
	nested.WriteString(`{"guests": `)
	for range 20000 {
		nested.WriteByte('[')
	}
	return []desiredCase{
		// Malformed JSON.
		{name: "empty file", file: "", want: []string{"malformed", "EOF"}},
		{name: "not an object", file: `[{"node": "pve1"}]`, want: []string{"malformed", "array"}},
		{name: "truncated", file: good[:60], want: []string{"malformed", "EOF"}},
		{name: "trailing data", file: good + `{"guests": []}`, want: []string{"after the top-level object"}},
		{name: "yaml", file: "guests:\n  - node: pve1\n", want: []string{"malformed JSON at byte 1"}},
		{name: "byte order mark", file: "\ufeff" + good, want: []string{"malformed JSON at byte 1"}},
		{name: "deeply nested", file: nested.String(), want: []string{"malformed", "depth"}},
		{name: "invalid UTF-8", file: qemuWith(`"description": "caf` + "\xe9" + `"`), want: []string{"UTF-8", "byte"}},
		{name: "duplicate guests", file: `{"guests": [], "guests": []}`, want: []string{"duplicate", `"guests"`}},
		{name: "duplicate option", file: qemuWith(`"memory": 1024, "memory": 99999999`), want: []string{"duplicate", `"memory"`}},
		{name: "duplicate vmid key", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100, "vmid": 101}`), want: []string{"duplicate", `"vmid"`}},
		{name: "unknown top-level key", file: `{"guest": []}`, want: []string{`"guest"`}},
		{name: "unknown guest key", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100, "confg": {}}`), want: []string{`"confg"`}},
		{name: "config is a list", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100, "config": ["memory"]}`), want: []string{"config"}},
		{name: "node is a number", file: guestJSON(`{"node": 5, "type": "qemu", "vmid": 100}`), want: []string{"node"}},
		{name: "power is a number", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100, "power": 1}`), want: []string{"power"}},
		{name: "delete is a string", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100, "delete": "args"}`), want: []string{"delete"}},

		// Well-formed, but no guest could be declared so.
		{name: "vmid as a string", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": "100"}`), want: []string{"vmid", "integer"}, invalid: true},
		{name: "vmid fractional", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100.5}`), want: []string{"vmid", "100.5"}, invalid: true},
		{name: "vmid huge", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 99999999999999999999999}`), want: []string{"vmid"}, invalid: true},
		{name: "vmid below range", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 99}`), want: []string{"vmid 99"}, invalid: true},
		{name: "vmid negative", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": -100}`), want: []string{"vmid -100"}, invalid: true},
		{name: "vmid missing", file: guestJSON(`{"node": "pve1", "type": "qemu"}`), want: []string{"vmid is missing"}, invalid: true},
		{name: "node missing", file: guestJSON(`{"type": "qemu", "vmid": 100}`), want: []string{"node name"}, invalid: true},
		{name: "node with a path", file: guestJSON(`{"node": "../../access", "type": "qemu", "vmid": 100}`), want: []string{"node name", "../../access"}, invalid: true},
		{name: "node with a NUL", file: guestJSON(`{"node": "pve1\u0000", "type": "qemu", "vmid": 100}`), want: []string{"node name"}, invalid: true},
		{name: "node with a space", file: guestJSON(`{"node": "pve 1", "type": "qemu", "vmid": 100}`), want: []string{"node name"}, invalid: true},
		{name: "type unknown", file: guestJSON(`{"node": "pve1", "type": "vmware", "vmid": 100}`), want: []string{"vmware"}, invalid: true},
		{name: "type in capitals", file: guestJSON(`{"node": "pve1", "type": "QEMU", "vmid": 100}`), want: []string{"QEMU"}, invalid: true},
		{name: "power unknown", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100, "power": "on"}`), want: []string{`power "on"`}, invalid: true},
		{name: "guest declared twice", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100}, {"node": "pve2", "type": "qemu", "vmid": 100}`), want: []string{"declared twice"}, invalid: true},
		{name: "value is an object", file: qemuWith(`"net0": {"bridge": "vmbr0"}`), want: []string{`"net0"`, "objects"}, invalid: true},
		{name: "value is null", file: qemuWith(`"memory": null`), want: []string{`"memory"`, "null"}, invalid: true},
		{name: "value is empty", file: qemuWith(`"memory": ""`), want: []string{`"memory"`, "empty"}, invalid: true},
		{name: "option name with a separator", file: qemuWith(`"memory;delete": "1"`), want: []string{"memory;delete", "option name"}, invalid: true},
		{name: "option name with an ampersand", file: qemuWith(`"a&b": "1"`), want: []string{"a&b"}, invalid: true},
		{name: "option name empty", file: qemuWith(`"": "1"`), want: []string{"option name"}, invalid: true},
		{name: "option name with a line break", file: qemuWith(`"net0\n": "virtio"`), want: []string{"option name"}, invalid: true},
		{name: "option delete", file: qemuWith(`"delete": "net0"`), want: []string{`"delete"`, "not an option"}, invalid: true},
		{name: "option digest", file: qemuWith(`"digest": "0000000000000000000000000000000000000000"`), want: []string{`"digest"`, "not an option"}, invalid: true},
		{name: "option skiplock", file: qemuWith(`"skiplock": 1`), want: []string{`"skiplock"`, "not an option"}, invalid: true},
		{name: "option background_delay", file: qemuWith(`"background_delay": 30`), want: []string{`"background_delay"`}, invalid: true},
		{name: "option vmid", file: qemuWith(`"vmid": 101`), want: []string{`"vmid"`, "not an option"}, invalid: true},
		{name: "value with a line break", file: qemuWith(`"name": "web\nmemory: 1"`), want: []string{`"name"`, "line break"}, invalid: true},
		{name: "value with a NUL", file: qemuWith(`"description": "a\u0000b"`), want: []string{`"description"`, "NUL"}, invalid: true},
		{name: "description too long", file: qemuWith(`"description": "` + long + `"`), want: []string{"description", "8192"}, invalid: true},
		{name: "change too large", file: qemuWith(`"args": "` + strings.Repeat("-x ", 200000) + `"`), want: []string{"bytes", "at most"}, invalid: true},
		{name: "set and deleted", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100, "config": {"memory": 1}, "delete": ["memory"]}`), want: []string{"both set and deleted"}, invalid: true},
		{name: "delete with a comma", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100, "delete": ["net0,net1"]}`), want: []string{"net0,net1"}, invalid: true},
		{name: "delete digest", file: guestJSON(`{"node": "pve1", "type": "qemu", "vmid": 100, "delete": ["digest"]}`), want: []string{`"digest"`}, invalid: true},
	}
}

// batteryCluster is the fake cluster the battery's desired states name.
func batteryCluster(t *testing.T, opts ...proxmoxtest.Option) *proxmoxtest.Server {
	t.Helper()
	srv := proxmoxtest.Start(t, append([]proxmoxtest.Option{proxmoxtest.WithNodes("pve1", "pve2")}, opts...)...)
	for _, g := range []proxmoxtest.GuestSpec{
		{Node: "pve1", Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"name": "web", "memory": "512", "description": "old"}},
		{Node: "pve1", Type: proxmox.LXC, VMID: 200, Config: map[string]string{"hostname": "ct", "memory": "256"}},
	} {
		if err := srv.AddGuest(g); err != nil {
			t.Fatal(err)
		}
	}
	return srv
}

func newBatteryEngine(t *testing.T, px reconcile.Proxmox, prov reconcile.DesiredProvider) *reconcile.Engine {
	t.Helper()
	e, err := reconcile.NewEngine(reconcile.Config{
		Proxmox: px, Journal: journal.NewMemory(), Provider: prov,
		RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond, SettleDelay: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Queue().Close(ctxFor(t, 10*time.Second)) })
	return e
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Through a rename, as an editor or a deployment would replace it.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestBadDesiredFiles(t *testing.T) {
	fig := newFigures(t)
	srv := batteryCluster(t)
	client := newClient(t, srv)
	ctx := ctxFor(t, 2*time.Minute)
	dir := t.TempDir()

	for _, c := range desiredCases() {
		t.Run(c.name, func(t *testing.T) {
			fig.add("desired_files", 1)
			// The parser says what is wrong, in words a person can act on.
			ds, err := reconcile.ParseDesiredJSON([]byte(c.file))
			if err == nil {
				t.Fatalf("accepted: %+v", ds)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if got := errors.Is(err, reconcile.ErrInvalidDesired); got != c.invalid {
				t.Errorf("errors.Is(err, ErrInvalidDesired) = %v, want %v (%v)", got, c.invalid, err)
			}

			// An engine that never read a good state does nothing, and
			// sends nothing at all.
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".json")
			writeFile(t, path, c.file)
			prov, err := reconcile.NewFileProvider(path)
			if err != nil {
				t.Fatal(err)
			}
			srv.ResetRequests()
			_, err = newBatteryEngine(t, client, prov).ReconcileOnce(ctx)
			if !errors.Is(err, reconcile.ErrPassAborted) {
				t.Fatalf("pass on a bad file: %v", err)
			}
			if reqs := srv.Requests(); len(reqs) != 0 {
				t.Fatalf("a bad desired state caused %d requests, first %s %s", len(reqs), reqs[0].Method, reqs[0].Path)
			}
		})
	}

	// An engine that did read a good state keeps acting on it, and only on
	// it, while the file is bad: what it sends comes from the good state.
	path := filepath.Join(dir, "desired.json")
	writeFile(t, path, good)
	prov, err := reconcile.NewFileProvider(path)
	if err != nil {
		t.Fatal(err)
	}
	e := newBatteryEngine(t, client, prov)
	if rep, err := e.ReconcileOnce(ctx); err != nil || !rep.Converged() {
		t.Fatalf("good state: %v\n%s", err, rep)
	}
	goodValues := map[string]bool{"description=web": true}
	for i, c := range desiredCases() {
		writeFile(t, path, c.file)
		// Someone edits the declared description, so the pass has a
		// change to make, from the last good state.
		if err := srv.UpdateConfig(proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}, map[string]string{"description": fmt.Sprintf("drift %d", i)}, nil); err != nil {
			t.Fatal(err)
		}
		srv.ResetRequests()
		rep, err := e.ReconcileOnce(ctx)
		if err != nil || rep.DesiredErr == "" || prov.Err() == nil {
			t.Fatalf("%s: pass on a bad file after a good one: %v (desired error %q)", c.name, err, rep.DesiredErr)
		}
		if !rep.Converged() {
			t.Errorf("%s: the last good state was not kept:\n%s", c.name, rep)
		}
		for _, r := range srv.Requests() {
			if r.Method == "GET" {
				continue
			}
			for k, v := range r.Params {
				if k != "digest" && !goodValues[k+"="+v] {
					t.Errorf("%s: %s %s sent %s=%.60q, which the good state does not hold", c.name, r.Method, r.Path, k, v)
				}
			}
		}
	}

	// A file too large to be a desired state is refused before it is read.
	huge := filepath.Join(dir, "huge.json")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(reconcile.DefaultMaxDesiredFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	hp, err := reconcile.NewFileProvider(huge)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hp.Desired(ctx); err == nil || !strings.Contains(err.Error(), "allowed") {
		t.Fatalf("a %d-byte file: %v", reconcile.DefaultMaxDesiredFileSize+1, err)
	}
	fig.add("desired_files", 1)
}

// TestInvalidRefs gives hostile guest references to everything that takes
// one: the parser, a one-shot operation, and each client call. Each is
// refused with ErrInvalidRef before anything is sent.
func TestInvalidRefs(t *testing.T) {
	fig := newFigures(t)
	srv := batteryCluster(t)
	client := newClient(t, srv)
	ctx := ctxFor(t, time.Minute)
	e := newBatteryEngine(t, client, reconcile.EmptyProvider{})
	srv.ResetRequests()
	for _, s := range []string{
		"", "pve1", "pve1/qemu", "pve1/qemu/100/extra", "/qemu/100", "pve1//100", "pve1/qemu/",
		"../qemu/100", "pve1/../100", "pve1/qemu/../../access", "pve1%2F..%2F/qemu/100",
		"pve 1/qemu/100", "pve1\x00/qemu/100", "pve1\n/qemu/100", "pvé/qemu/100",
		"-pve/qemu/100", "pve-/qemu/100", "pve_1/qemu/100",
		"pve1/vmware/100", "pve1/QEMU/100", "pve1/qemu/99", "pve1/qemu/0", "pve1/qemu/-100",
		"pve1/qemu/1000000000", "pve1/qemu/0x64", "pve1/qemu/1e2", "pve1/qemu/100.0", "pve1/qemu/ 100",
		"pve1/qemu/99999999999999999999999",
	} {
		fig.add("refs", 1)
		ref, err := proxmox.ParseRef(s)
		if err == nil {
			t.Errorf("ParseRef(%q) = %v", s, ref)
			continue
		}
		if !errors.Is(err, proxmox.ErrInvalidRef) {
			t.Errorf("ParseRef(%q): %v does not match ErrInvalidRef", s, err)
		}
	}
	bad := []proxmox.Ref{
		{},
		{Node: "pve1", Type: proxmox.QEMU},
		{Node: "pve1/../x", Type: proxmox.QEMU, VMID: 100},
		{Node: "pve1?x=1", Type: proxmox.QEMU, VMID: 100},
		{Node: "pve1", Type: "lxc/../qemu", VMID: 100},
		{Node: "pve1", Type: proxmox.LXC, VMID: 99},
		{Node: "pve1", Type: proxmox.LXC, VMID: 1 << 40},
		{Node: "pve1.example.com", Type: proxmox.QEMU, VMID: 100},
		{Node: "pve1\u202e", Type: proxmox.QEMU, VMID: 100},
	}
	for _, ref := range bad {
		fig.add("refs", 1)
		for _, kind := range []reconcile.ActionKind{reconcile.ActionStart, reconcile.ActionSetConfig} {
			shot := reconcile.OneShot{Key: "k-" + ref.String(), Ref: ref, Kind: kind}
			if kind == reconcile.ActionSetConfig {
				shot.Set = map[string]string{"memory": "1024"}
			}
			if _, err := e.Apply(ctx, shot); !errors.Is(err, proxmox.ErrInvalidRef) {
				t.Errorf("Apply(%s %q): %v", kind, ref.String(), err)
			}
		}
		calls := map[string]func() error{
			"Status":   func() error { _, err := client.Status(ctx, ref); return err },
			"Config":   func() error { _, err := client.Config(ctx, ref); return err },
			"Pending":  func() error { _, err := client.Pending(ctx, ref); return err },
			"Start":    func() error { _, err := client.Start(ctx, ref); return err },
			"Stop":     func() error { _, err := client.Stop(ctx, ref); return err },
			"Reboot":   func() error { _, err := client.Reboot(ctx, ref); return err },
			"Shutdown": func() error { _, err := client.Shutdown(ctx, ref, time.Second); return err },
			"SetConfig": func() error {
				_, err := client.SetConfig(ctx, ref, proxmox.ConfigChange{Set: map[string]string{"memory": "1"}})
				return err
			},
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, proxmox.ErrInvalidRef) {
				t.Errorf("%s(%q): %v", name, ref.String(), err)
			}
		}
		if err := reconcile.ValidateDesired([]reconcile.Desired{{Ref: ref}}); !errors.Is(err, reconcile.ErrInvalidDesired) || !strings.Contains(err.Error(), "guest") {
			t.Errorf("ValidateDesired(%q): %v", ref.String(), err)
		}
	}
	if reqs := srv.Requests(); len(reqs) != 0 {
		t.Fatalf("invalid references caused %d requests, first %s %s", len(reqs), reqs[0].Method, reqs[0].Path)
	}
	// Nothing was journaled for them: the keys are unused.
	if inflight, err := e.Recover(ctx); err != nil || len(inflight.Ops) != 0 {
		t.Fatalf("%+v %v", inflight, err)
	}
}

// TestHostileValuesArriveIntact declares values full of the characters
// that break form encodings and config files (&, ;, =, %00, line breaks,
// quotes, markup, bidirectional controls): each must reach Proxmox as
// exactly the one option it is, byte for byte, with no parameter smuggled
// beside it, and the guest must be in sync on the next pass. A value
// Proxmox's schema refuses gets Proxmox's clear error, and changes nothing.
func TestHostileValuesArriveIntact(t *testing.T) {
	fig := newFigures(t)
	srv := batteryCluster(t)
	client := newClient(t, srv)
	ctx := ctxFor(t, 2*time.Minute)
	prov, err := reconcile.NewStaticProvider(nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newBatteryEngine(t, client, prov)
	refs := []proxmox.Ref{{Node: "pve1", Type: proxmox.QEMU, VMID: 100}, {Node: "pve1", Type: proxmox.LXC, VMID: 200}}
	values := []string{
		"a&b", "a;b", "a=b", "100%00", "%", "%zz", "x&delete=net0&skiplock=1", "x;delete=net0;digest=0",
		"line 1\nline 2", "tab\there", "emoji 🚀 ünïcödé", "\u202eevil", "'; DROP TABLE vms; --",
		"<script>alert(1)</script>", "a+b c", "#not a comment", "back\\slash", "[PENDING]\nmemory: 1",
		strings.Repeat("ü", proxmox.MaxDescription),
	}
	for i, v := range values {
		for _, ref := range refs {
			fig.add("values", 1)
			if err := prov.Set([]reconcile.Desired{{Ref: ref, Config: map[string]string{"description": v}}}); err != nil {
				t.Fatalf("%.40q: %v", v, err)
			}
			srv.ResetRequests()
			rep, err := e.ReconcileOnce(ctx)
			if err != nil || !rep.Converged() {
				t.Fatalf("%s, value %d %.40q: %v\n%s", ref, i, v, err, rep)
			}
			writes := 0
			for _, r := range srv.Requests() {
				if r.Method == "GET" {
					continue
				}
				writes++
				for k := range r.Params {
					if k != "description" && k != "digest" {
						t.Errorf("%s, value %.40q: parameter %q smuggled in", ref, v, k)
					}
				}
				if got := r.Params["description"]; got != v {
					t.Errorf("%s: sent %.60q, declared %.60q", ref, got, v)
				}
			}
			if writes != 1 {
				t.Errorf("%s, value %.40q: %d writes, want 1", ref, v, writes)
			}
			if err := srv.WaitIdle(ctx); err != nil {
				t.Fatal(err)
			}
			srv.ResetRequests()
			rep, err = e.ReconcileOnce(ctx)
			if sent, _ := rep.Actions(); err != nil || sent != 0 || !rep.Converged() {
				t.Errorf("%s, value %.40q: not in sync on the next pass: %v\n%s", ref, v, err, rep)
			}
		}
	}

	// A value that Proxmox's schema refuses: its error, and nothing
	// changed.
	ref := refs[0]
	before, _ := srv.Guest(ref)
	if err := prov.Set([]reconcile.Desired{{Ref: ref, Config: map[string]string{"name": "web&x=1", "description": "never"}}}); err != nil {
		t.Fatal(err)
	}
	rep, err := e.ReconcileOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g := rep.Guests[0]; g.Outcome != reconcile.GuestFailed || !strings.Contains(g.Detail, "name") || !strings.Contains(g.Detail, "DNS name") {
		t.Fatalf("%s %s", g.Outcome, g.Detail)
	}
	if err := srv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if after, _ := srv.Guest(ref); after.Digest != before.Digest {
		t.Fatalf("a refused change changed the guest:\n%s\n%s", before.File, after.File)
	}
}
