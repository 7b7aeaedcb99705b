package reconcile_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/guestward/guestward/normalize"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

func obs(ref proxmox.Ref, status string, cfg map[string]string) reconcile.Observed {
	return reconcile.Observed{Ref: ref, Status: status, Config: cfg, Digest: strings.Repeat("a", 40)}
}

func TestPlanDecisions(t *testing.T) {
	cfg := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		desired reconcile.Desired
		actual  []reconcile.Observed
		verdict reconcile.Verdict
		reason  reconcile.SkipReason
		actions string // kinds in order
	}{
		{"in sync", reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning, Config: cfg("memory", "2048")},
			[]reconcile.Observed{obs(qemu(100), "running", cfg("memory", "2048"))}, reconcile.InSync, "", ""},
		{"quirks are not drift", reconcile.Desired{Ref: qemu(100), Config: cfg("tags", "b,a", "net0", "virtio,bridge=vmbr0", "onboot", "yes")},
			[]reconcile.Observed{obs(qemu(100), "stopped", cfg("tags", "a;b", "net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0", "onboot", "1"))}, reconcile.InSync, "", ""},
		{"unmanaged options are ignored", reconcile.Desired{Ref: qemu(100), Config: cfg("memory", "2048")},
			[]reconcile.Observed{obs(qemu(100), "stopped", cfg("memory", "2048", "cores", "16"))}, reconcile.InSync, "", ""},
		{"config only", reconcile.Desired{Ref: qemu(100), Config: cfg("memory", "4096")},
			[]reconcile.Observed{obs(qemu(100), "running", cfg("memory", "2048"))}, reconcile.Act, "", "set_config"},
		{"start after config", reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning, Config: cfg("memory", "4096")},
			[]reconcile.Observed{obs(qemu(100), "stopped", cfg("memory", "2048"))}, reconcile.Act, "", "set_config,start"},
		{"stop before config", reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerStopped, Config: cfg("memory", "4096")},
			[]reconcile.Observed{obs(qemu(100), "running", cfg("memory", "2048"))}, reconcile.Act, "", "stop,set_config"},
		{"power only", reconcile.Desired{Ref: lxc(200), Power: reconcile.PowerStopped},
			[]reconcile.Observed{obs(lxc(200), "running", cfg())}, reconcile.Act, "", "stop"},
		{"delete present", reconcile.Desired{Ref: qemu(100), Delete: []string{"args", "hookscript"}},
			[]reconcile.Observed{obs(qemu(100), "stopped", cfg("args", "-x"))}, reconcile.Act, "", "set_config"},
		{"delete absent", reconcile.Desired{Ref: qemu(100), Delete: []string{"args"}},
			[]reconcile.Observed{obs(qemu(100), "stopped", cfg())}, reconcile.InSync, "", ""},
		{"missing", reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning}, nil, reconcile.Skip, reconcile.SkipMissing, ""},
		{"wrong type", reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning},
			[]reconcile.Observed{obs(lxc(100), "stopped", cfg())}, reconcile.Skip, reconcile.SkipWrongType, ""},
		{"wrong node", reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning},
			[]reconcile.Observed{obs(proxmox.Ref{Node: "pve2", Type: proxmox.QEMU, VMID: 100}, "stopped", cfg())}, reconcile.Skip, reconcile.SkipWrongNode, ""},
		{"locked", reconcile.Desired{Ref: qemu(100), Config: cfg("memory", "1")},
			[]reconcile.Observed{{Ref: qemu(100), Status: "stopped", Lock: "backup", Config: cfg()}}, reconcile.Skip, reconcile.SkipLocked, ""},
		{"template asked to run", reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning},
			[]reconcile.Observed{{Ref: qemu(100), Status: "stopped", Template: true, Config: cfg()}}, reconcile.Skip, reconcile.SkipTemplate, ""},
		{"template config is fine", reconcile.Desired{Ref: qemu(100), Config: cfg("memory", "1024")},
			[]reconcile.Observed{{Ref: qemu(100), Status: "stopped", Template: true, Config: cfg("memory", "512")}}, reconcile.Act, "", "set_config"},
		{"pending", reconcile.Desired{Ref: qemu(100), Config: cfg("cores", "4")},
			[]reconcile.Observed{{Ref: qemu(100), Status: "running", Config: cfg("memory", "2048"), Pending: []proxmox.PendingItem{{Key: "memory", Value: "1024", HasValue: true, Pending: "2048", HasPending: true}}}},
			reconcile.Skip, reconcile.SkipPending, ""},
		{"pending value not re-sent", reconcile.Desired{Ref: qemu(100), Config: cfg("memory", "2048")},
			[]reconcile.Observed{{Ref: qemu(100), Status: "running", Config: cfg("memory", "2048"), Pending: []proxmox.PendingItem{{Key: "memory", Value: "1024", HasValue: true, Pending: "2048", HasPending: true}}}},
			reconcile.InSync, "", ""},
		{"unknown status", reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning},
			[]reconcile.Observed{obs(qemu(100), "unknown", cfg())}, reconcile.Skip, reconcile.SkipStatusUnknown, ""},
		{"not observed", reconcile.Desired{Ref: qemu(100), Config: cfg("memory", "1")},
			[]reconcile.Observed{{Ref: qemu(100), Status: "stopped"}}, reconcile.Skip, reconcile.SkipUnobserved, ""},
		{"invalid ref", reconcile.Desired{Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 5}}, nil, reconcile.Skip, reconcile.SkipInvalid, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := reconcile.Plan([]reconcile.Desired{tc.desired}, tc.actual, reconcile.PlanOptions{})
			if len(res.Guests) != 1 {
				t.Fatalf("%d guest plans", len(res.Guests))
			}
			g := res.Guests[0]
			if g.Verdict != tc.verdict || g.Reason != tc.reason {
				t.Fatalf("verdict %s (%s: %s), want %s (%s)", g.Verdict, g.Reason, g.Detail, tc.verdict, tc.reason)
			}
			if g.Verdict == reconcile.Skip && g.Detail == "" {
				t.Error("a skipped guest needs a detail for the person reading the report")
			}
			var kinds []string
			for _, a := range g.Actions {
				kinds = append(kinds, string(a.Kind))
			}
			if got := strings.Join(kinds, ","); got != tc.actions {
				t.Fatalf("actions %q, want %q", got, tc.actions)
			}
		})
	}
}

func TestPlanSetConfigCarriesOnlyTheDifferenceAndTheDigest(t *testing.T) {
	d := reconcile.Desired{Ref: qemu(100), Config: map[string]string{
		"memory": "4096", "cores": "2", "tags": "a,b", "net0": "virtio,bridge=vmbr1",
	}, Delete: []string{"args", "hookscript"}}
	o := obs(qemu(100), "stopped", map[string]string{
		"memory": "2048", "cores": "2", "tags": "b;a", "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0", "args": "-x",
	})
	res := reconcile.Plan([]reconcile.Desired{d}, []reconcile.Observed{o}, reconcile.PlanOptions{})
	a := res.Guests[0].Actions[0]
	want := reconcile.Action{Kind: reconcile.ActionSetConfig, Ref: qemu(100),
		Set:    map[string]string{"memory": "4096", "net0": "virtio,bridge=vmbr1"},
		Delete: []string{"args"}, Digest: o.Digest,
		// The prior values of exactly the options set and deleted.
		Class: reconcile.Reversible,
		Prior: map[string]string{"memory": "2048", "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0", "args": "-x"}}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Fatalf("action (-want +got):\n%s", diff)
	}
	text := res.String()
	for _, s := range []string{`memory current: desired "4096", actual "2048"`, `net0 bridge: desired "vmbr1", actual "vmbr0"`, `args: delete (now "-x")`, "1 guest: 0 in sync, 1 to change (1 action)"} {
		if !strings.Contains(text, s) {
			t.Errorf("rendered plan lacks %q:\n%s", s, text)
		}
	}
	var js struct {
		Summary map[string]int
		Guests  []map[string]any
	}
	b, err := json.Marshal(res)
	if err != nil || json.Unmarshal(b, &js) != nil {
		t.Fatalf("JSON: %s %v", b, err)
	}
	if js.Summary["act"] != 1 || js.Guests[0]["guest"] != "pve1/qemu/100" || js.Guests[0]["verdict"] != "act" {
		t.Fatalf("JSON: %s", b)
	}
}

func TestPlanOrdersByVMIDAndSkipsDuplicates(t *testing.T) {
	ds := []reconcile.Desired{{Ref: qemu(102)}, {Ref: qemu(100)}, {Ref: lxc(100)}, {Ref: qemu(101)}}
	res := reconcile.Plan(ds, nil, reconcile.PlanOptions{})
	var got []string
	for _, g := range res.Guests {
		got = append(got, fmt.Sprintf("%d:%s", g.Ref.VMID, g.Reason))
	}
	if want := "100:missing 100:invalid 101:missing 102:missing"; strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

// In-sync guests cost nothing beyond their entry in the result, which is one
// allocation for all of them.
func TestPlanInSyncGuestsDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds allocations")
	}
	set := reconcile.PlanOptions{QEMU: normalize.QEMU(), LXC: normalize.LXC()}
	allocs := func(n int) float64 {
		ds, os := syntheticFleet(n, 0)
		return testing.AllocsPerRun(20, func() { reconcile.Plan(ds, os, set) })
	}
	small, large := allocs(10), allocs(1000)
	if large > small+2 { // map growth steps for the index may differ by a step or two
		t.Fatalf("Plan allocates per in-sync guest: %v allocations for 10 guests, %v for 1000", small, large)
	}
}

// syntheticFleet makes n QEMU guests with 30 declared options each, in sync
// (as Proxmox reports them, rewriting included) except every drift-th one.
func syntheticFleet(n, drift int) ([]reconcile.Desired, []reconcile.Observed) {
	ds := make([]reconcile.Desired, n)
	os := make([]reconcile.Observed, n)
	for i := range n {
		ref := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100 + i}
		want, have := typicalConfig(i)
		if drift > 0 && i%drift == 0 {
			have["memory"] = "1024"
			have["net0"] = strings.Replace(have["net0"], "vmbr0", "vmbr9", 1)
		}
		ds[i] = reconcile.Desired{Ref: ref, Power: reconcile.PowerRunning, Config: want}
		os[i] = reconcile.Observed{Ref: ref, Status: "running", Config: have, Digest: strings.Repeat("b", 40)}
	}
	return ds, os
}

// typicalConfig returns a 30-option QEMU config as a person declares it and
// as Proxmox reports it.
func typicalConfig(i int) (declared, reported map[string]string) {
	declared = map[string]string{
		"name": fmt.Sprintf("vm%d", i), "memory": "4096", "cores": "4", "sockets": "1",
		"cpu": "host", "ostype": "l26", "scsihw": "virtio-scsi-single", "bios": "ovmf",
		"machine": "q35", "agent": "1", "onboot": "1", "boot": "order=scsi0;net0",
		"tags": "prod,web", "description": "web server\n",
		"net0":  "virtio,bridge=vmbr0,firewall=1",
		"scsi0": "local-lvm:vm-100-disk-0,iothread=1,size=32G,discard=on",
		"scsi1": "local-lvm:vm-100-disk-1,size=100G", "ide2": "none,media=cdrom",
		"efidisk0": "local-lvm:vm-100-disk-2,efitype=4m,size=4M", "balloon": "2048",
		"numa": "0", "hotplug": "disk,network,usb", "tablet": "0", "kvm": "1", "acpi": "1",
		"startup": "order=2,up=30", "protection": "0", "vga": "std", "localtime": "1",
		"serial0": "socket",
	}
	reported = maps.Clone(declared)
	reported["net0"] = "virtio=BC:24:11:12:34:56,bridge=vmbr0,firewall=1"
	reported["tags"] = "prod;web"
	reported["description"] = "web server"
	reported["agent"] = "enabled=1"
	reported["hotplug"] = "network,disk,usb"
	reported["scsi0"] = "local-lvm:vm-100-disk-0,discard=on,iothread=1,size=32G"
	return declared, reported
}

// Properties of Plan against a simple model of Proxmox: a map of options
// per guest and a power flag.
func TestPlanProperties(t *testing.T) {
	opts := reconcile.PlanOptions{QEMU: normalize.QEMU(), LXC: normalize.LXC()}
	// Values without a schema default, so that the naive planner below
	// may compare them exactly.
	options := []string{"memory", "cores", "name", "hookscript", "description", "args"}
	values := map[string][]string{
		"memory": {"1024", "2048", "4096"}, "cores": {"2", "4", "8"}, "name": {"a", "b"},
		"hookscript": {"local:snippets/a.sh", "local:snippets/b.sh"}, "description": {"x", "y"}, "args": {"-a", "-b"},
	}
	genFleet := func(t *rapid.T) ([]reconcile.Desired, []reconcile.Observed) {
		n := rapid.IntRange(0, 8).Draw(t, "n")
		var ds []reconcile.Desired
		var os []reconcile.Observed
		for i := range n {
			ref := proxmox.Ref{Node: "pve1", Type: rapid.SampledFrom([]proxmox.GuestType{proxmox.QEMU, proxmox.LXC}).Draw(t, "type"), VMID: 100 + i}
			o := reconcile.Observed{Ref: ref, Status: rapid.SampledFrom([]string{"running", "stopped"}).Draw(t, "status"),
				Config: map[string]string{}, Digest: fmt.Sprintf("%040d", i)}
			d := reconcile.Desired{Ref: ref, Power: rapid.SampledFrom([]reconcile.Power{"", "running", "stopped"}).Draw(t, "power")}
			for _, k := range options {
				if rapid.Bool().Draw(t, "has "+k) {
					o.Config[k] = rapid.SampledFrom(values[k]).Draw(t, "have "+k)
				}
				switch rapid.IntRange(0, 2).Draw(t, "declare "+k) {
				case 1:
					if d.Config == nil {
						d.Config = map[string]string{}
					}
					d.Config[k] = rapid.SampledFrom(values[k]).Draw(t, "want "+k)
				case 2:
					d.Delete = append(d.Delete, k)
				}
			}
			if rapid.IntRange(0, 9).Draw(t, "locked") == 0 {
				o.Lock = "backup"
			}
			if rapid.IntRange(0, 9).Draw(t, "missing") != 0 {
				os = append(os, o)
			}
			ds = append(ds, d)
		}
		return ds, os
	}

	t.Run("applying the plan leaves nothing to do", rapid.MakeCheck(func(t *rapid.T) {
		ds, os := genFleet(t)
		res := reconcile.Plan(ds, os, opts)
		after := applyModel(os, res)
		again := reconcile.Plan(ds, after, opts)
		for _, g := range again.Guests {
			if g.Verdict == reconcile.Act {
				t.Fatalf("%s still needs %v after its plan was applied", g.Ref, g.Actions)
			}
		}
	}))
	t.Run("in-sync guests get no action", rapid.MakeCheck(func(t *rapid.T) {
		ds, os := genFleet(t)
		synced := applyModel(os, reconcile.Plan(ds, os, opts))
		for _, g := range reconcile.Plan(ds, synced, opts).Guests {
			if len(g.Actions) != 0 {
				t.Fatalf("%s: %v", g.Ref, g.Actions)
			}
		}
	}))
	t.Run("same input same plan", rapid.MakeCheck(func(t *rapid.T) {
		ds, os := genFleet(t)
		a := reconcile.Plan(ds, os, opts)
		shuffled := slices.Clone(ds)
		slices.Reverse(shuffled)
		b := reconcile.Plan(shuffled, os, opts)
		if diff := cmp.Diff(a, b); diff != "" {
			t.Fatalf("plans differ with the input order (-a +b):\n%s", diff)
		}
	}))
	t.Run("empty desired state, no action", rapid.MakeCheck(func(t *rapid.T) {
		_, os := genFleet(t)
		if res := reconcile.Plan(nil, os, opts); len(res.Guests) != 0 || len(res.Actions()) != 0 {
			t.Fatalf("%+v", res)
		}
	}))
	t.Run("agrees with a naive planner", rapid.MakeCheck(func(t *rapid.T) {
		ds, os := genFleet(t)
		res := reconcile.Plan(ds, os, opts)
		for _, g := range res.Guests {
			want := naivePlan(ds, os, g.Ref.VMID)
			var got []string
			for _, a := range g.Actions {
				got = append(got, a.String())
			}
			if strings.Join(got, "; ") != strings.Join(want, "; ") {
				t.Fatalf("%s: plan %q, naive %q", g.Ref, got, want)
			}
		}
	}))
}

// applyModel applies a plan's actions to observed guests as Proxmox would
// (values stored as sent).
func applyModel(os []reconcile.Observed, res reconcile.PlanResult) []reconcile.Observed {
	out := make([]reconcile.Observed, len(os))
	idx := map[int]int{}
	for i, o := range os {
		o.Config = maps.Clone(o.Config)
		out[i] = o
		idx[o.Ref.VMID] = i
	}
	for _, a := range res.Actions() {
		o := &out[idx[a.Ref.VMID]]
		switch a.Kind {
		case reconcile.ActionStart:
			o.Status = "running"
		case reconcile.ActionStop:
			o.Status = "stopped"
		case reconcile.ActionSetConfig:
			maps.Copy(o.Config, a.Set)
			for _, k := range a.Delete {
				delete(o.Config, k)
			}
		}
	}
	return out
}

// naivePlan is the planner's contract written as plainly as possible, for
// the options of the property test (which compare exactly).
func naivePlan(ds []reconcile.Desired, os []reconcile.Observed, vmid int) []string {
	var d *reconcile.Desired
	for i := range ds {
		if ds[i].Ref.VMID == vmid {
			d = &ds[i]
		}
	}
	var o *reconcile.Observed
	for i := range os {
		if os[i].Ref.VMID == vmid {
			o = &os[i]
		}
	}
	if d == nil || o == nil || o.Lock != "" {
		return nil
	}
	var set []string
	for _, k := range slices.Sorted(maps.Keys(d.Config)) {
		if o.Config[k] != d.Config[k] {
			set = append(set, k+"="+d.Config[k])
		}
	}
	for _, k := range slices.Sorted(slices.Values(d.Delete)) {
		if _, ok := o.Config[k]; ok {
			set = append(set, "-"+k)
		}
	}
	var config []string
	if len(set) > 0 {
		config = []string{fmt.Sprintf("set_config %s %s", d.Ref, strings.Join(set, " "))}
	}
	switch {
	case d.Power == reconcile.PowerRunning && o.Status != "running":
		return append(config, "start "+d.Ref.String())
	case d.Power == reconcile.PowerStopped && o.Status == "running":
		return append([]string{"stop " + d.Ref.String()}, config...)
	}
	return config
}
