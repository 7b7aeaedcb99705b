package proxmoxtest

import (
	"testing"

	"github.com/guestward/guestward/proxmox"
)

func TestVersionParsing(t *testing.T) {
	for _, ok := range []string{"7.4-17", "8.1.4", "8.2", "9", "9.0.10"} {
		if _, err := applyVersion(ok); err != nil {
			t.Errorf("%q rejected: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "6.4-1", "10.0", "eight", "8.x", "8.1.2.3", "-1"} {
		if _, err := applyVersion(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// applyVersion applies WithVersion alone, without starting a server.
func applyVersion(v string) (*config, error) {
	c := defaultConfig()
	return c, WithVersion(v).apply(c)
}

func TestTypingPerVersion(t *testing.T) {
	for _, tc := range []struct {
		version                     string
		memory, pendingMemory       any
		lxcListVMID, lxcStatusVMID  any
		resourcesVMID               any
		messageField, overruleParam bool
	}{
		{PVE74, float64(1024), float64(2048), "200", float64(200), float64(100), false, false},
		{PVE80, float64(1024), float64(2048), "200", float64(200), float64(100), false, false},
		{PVE81, "1024", "2048", "200", float64(200), float64(100), false, false},
		{PVE82, "1024", "2048", float64(200), float64(200), float64(100), false, true},
		{PVE83, "1024", "2048", float64(200), float64(200), float64(100), true, true},
		{PVE90, "1024", "2048", float64(200), float64(200), float64(100), true, true},
	} {
		t.Run(tc.version, func(t *testing.T) {
			s := Start(t, WithVersion(tc.version))
			vm := mustAdd(t, s, GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true, Config: map[string]string{"memory": "1024"}})
			ct := mustAdd(t, s, GuestSpec{Type: proxmox.LXC, VMID: 200, Running: true, Config: map[string]string{"memory": "512"}})
			put(t, s, vm, "memory", "2048") // not hotpluggable by default: pending
			if got := getConfig(t, s, vm, "?current=1")["memory"]; got != tc.memory {
				t.Errorf("memory %#v, want %#v", got, tc.memory)
			}
			for _, it := range do(t, s, "GET", guestPath(vm)+"/pending", nil).dataList(t) {
				if it["key"] == "memory" && (it["pending"] != tc.pendingMemory || it["value"] != tc.memory) {
					t.Errorf("pending memory item %v", it)
				}
			}
			if got := do(t, s, "GET", "/nodes/pve/lxc", nil).dataList(t)[0]["vmid"]; got != tc.lxcListVMID {
				t.Errorf("lxc list vmid %#v", got)
			}
			if got := do(t, s, "GET", guestPath(ct)+"/status/current", nil).dataMap(t)["vmid"]; got != tc.lxcStatusVMID {
				t.Errorf("lxc status vmid %#v", got)
			}
			if got := do(t, s, "GET", "/cluster/resources?type=vm", nil).dataList(t)[0]["vmid"]; got != tc.resourcesVMID {
				t.Errorf("resources vmid %#v", got)
			}
			rp := do(t, s, "GET", "/nodes/pve/qemu/999/config", nil)
			if _, has := rp.Body["message"]; has != tc.messageField {
				t.Errorf("message field present=%v: %s", has, rp.Raw)
			}
			rp = do(t, s, "POST", guestPath(ct)+"/status/stop", form("overrule-shutdown", "1"))
			if (rp.Code == 200) != tc.overruleParam {
				t.Errorf("overrule-shutdown: %d", rp.Code)
			}
			// The memory property string is accepted from 8.1 only.
			rp = do(t, s, "PUT", guestPath(vm)+"/config", form("memory", "current=4096"))
			if (rp.Code == 200) != (tc.memory == "1024") {
				t.Errorf("memory=current=4096: %d %s", rp.Code, rp.Raw)
			}
		})
	}
}
