package reconcile_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

// A Desired travels as one guest of the desired-state file, and reads back
// as what it was.
func TestDesiredJSONRoundTrip(t *testing.T) {
	for _, d := range []reconcile.Desired{
		{Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}, Power: reconcile.PowerRunning,
			Config: map[string]string{"memory": "4096", "net0": "virtio,bridge=vmbr0", "description": "a \"quoted\"\nline"},
			Delete: []string{"ide2"}},
		{Ref: proxmox.Ref{Node: "pve2", Type: proxmox.LXC, VMID: 200}},
	} {
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var got reconcile.Desired
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("Unmarshal(%s): %v", b, err)
		}
		if diff := cmp.Diff(d, got); diff != "" {
			t.Errorf("round trip of %s (-want +got):\n%s", b, diff)
		}
		// The same bytes are a valid guest of the file format.
		ds, err := reconcile.ParseDesiredJSON([]byte(`{"guests": [` + string(b) + `]}`))
		if err != nil || len(ds) != 1 || cmp.Diff(d, ds[0]) != "" {
			t.Errorf("the file format reads %s as %+v, %v", b, ds, err)
		}
	}
	b, _ := json.Marshal(reconcile.Desired{Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}})
	if string(b) != `{"node":"pve1","type":"qemu","vmid":100}` {
		t.Errorf("an empty declaration marshals as %s", b)
	}
}

// Unmarshal is as strict as the file parser, and decodes only: what it
// refuses leaves the value alone.
func TestDesiredUnmarshalJSONIsStrict(t *testing.T) {
	for _, c := range []struct {
		name, in, want string
	}{
		{"member in other case", `{"node":"pve1","type":"qemu","VMID":100}`, `keys are case-sensitive; write "vmid"`},
		{"unknown member", `{"node":"pve1","type":"qemu","vmid":100,"cores":2}`, `unknown key "cores"`},
		{"duplicate member", `{"node":"pve1","type":"qemu","vmid":100,"vmid":101}`, "duplicate key"},
		{"config option twice but for case", `{"node":"pve1","type":"qemu","vmid":100,"config":{"memory":1,"Memory":2}}`, "other letter case"},
		{"null guest", `null`, "the guest is null"},
		{"vmid not an integer", `{"node":"pve1","type":"qemu","vmid":"100"}`, "not an integer"},
		{"vmid missing", `{"node":"pve1","type":"qemu"}`, "vmid is missing"},
		{"null config value", `{"node":"pve1","type":"qemu","vmid":100,"config":{"memory":null}}`, "null is not a value"},
		{"not UTF-8", "{\"node\":\"pve\xff\",\"type\":\"qemu\",\"vmid\":100}", "invalid UTF-8"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := reconcile.Desired{Power: reconcile.PowerStopped}
			err := d.UnmarshalJSON([]byte(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("UnmarshalJSON(%s) = %v, want an error saying %q", c.in, err, c.want)
			}
			if d.Power != reconcile.PowerStopped || d.Ref.VMID != 0 {
				t.Errorf("a refused guest changed the value: %+v", d)
			}
		})
	}
	// Values are decoded as the file decodes them; validity is the
	// provider's business.
	var d reconcile.Desired
	if err := json.Unmarshal([]byte(`{"node":"pve1","type":"qemu","vmid":100,"config":{"memory":4096,"onboot":true,"lock":"backup"}}`), &d); err != nil {
		t.Fatal(err)
	}
	if d.Config["memory"] != "4096" || d.Config["onboot"] != "1" {
		t.Errorf("config decoded as %v", d.Config)
	}
	if err := d.Validate(); !errors.Is(err, reconcile.ErrForbiddenKey) {
		t.Errorf("Validate of a guest setting lock = %v, want ErrForbiddenKey", err)
	}
}
