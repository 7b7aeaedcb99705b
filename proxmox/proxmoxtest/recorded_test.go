package proxmoxtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// recordedPath names a recorded Proxmox answer. The recordings live once, in
// package proxmox's testdata, whose README cites the source of each; the
// client's tests decode them, these compare the fake's answers with them.
func recordedPath(name string) string { return filepath.Join("..", "testdata", name) }

func loadRecorded(t *testing.T, name string) any {
	t.Helper()
	b, err := os.ReadFile(recordedPath(name))
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if m, ok := v.(map[string]any); ok {
		if d, ok := m["data"]; ok {
			return d
		}
	}
	return v
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// sameShape checks that got has exactly want's keys (minus ignore) with the
// same JSON types.
func sameShape(t *testing.T, what string, got, want map[string]any, ignore ...string) {
	t.Helper()
	skip := map[string]bool{}
	for _, k := range ignore {
		skip[k] = true
	}
	for k, wv := range want {
		if skip[k] {
			continue
		}
		gv, ok := got[k]
		if !ok {
			t.Errorf("%s: key %q missing (recorded %v)", what, k, wv)
			continue
		}
		if jsonType(gv) != jsonType(wv) {
			t.Errorf("%s: %q is %s (%v), recorded %s (%v)", what, k, jsonType(gv), gv, jsonType(wv), wv)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && !skip[k] {
			t.Errorf("%s: extra key %q = %v", what, k, got[k])
		}
	}
}

func TestRecordedV1QEMUConfig(t *testing.T) {
	rec := loadRecorded(t, "v01-qemu-config-pve7.json").(map[string]any)
	conf := map[string]string{}
	for k, v := range rec {
		if k == "digest" {
			continue
		}
		switch x := v.(type) {
		case string:
			conf[k] = x
		case float64:
			conf[k] = fmt.Sprint(x)
		}
	}
	conf["cipassword"] = "$5$salt$hash" // stored hashed, shown masked
	for _, tc := range []struct {
		version   string
		memString bool
	}{{PVE74, false}, {PVE80, false}, {PVE81, true}, {PVE84, true}} {
		s := Start(t, WithVersion(tc.version))
		r := mustAdd(t, s, GuestSpec{Type: proxmox.QEMU, VMID: 505, Config: conf})
		got := getConfig(t, s, r, "")
		want := map[string]any{}
		for k, v := range rec {
			want[k] = v
		}
		if tc.memString {
			want["memory"] = "2048"
		}
		sameShape(t, "V1 "+tc.version, got, want)
		for k, v := range want {
			if k != "digest" && fmt.Sprint(got[k]) != fmt.Sprint(v) {
				t.Errorf("V1 %s: %s = %v, recorded %v", tc.version, k, got[k], v)
			}
		}
		if d, _ := got["digest"].(string); !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(d) {
			t.Errorf("digest %q", d)
		}
	}
}

func TestRecordedV7LXCConfig(t *testing.T) {
	rec := loadRecorded(t, "v07-lxc-config-raw-keys.json").(map[string]any)
	conf := map[string]string{}
	for k, v := range rec {
		switch x := v.(type) {
		case string:
			conf[k] = x
		case float64:
			conf[k] = fmt.Sprint(x)
		}
	}
	delete(conf, "digest")
	// The source anonymised the MAC into a multicast one Proxmox would drop.
	conf["net0"] = strings.Replace(conf["net0"], "5D:CF", "5E:CF", 1)
	s := Start(t, WithVersion(PVE74))
	r := mustAdd(t, s, GuestSpec{Type: proxmox.LXC, VMID: 101, Config: conf})
	got := getConfig(t, s, r, "")
	sameShape(t, "V7", got, rec, "lxc")
}

func TestRecordedV2TaskStatusAndV9List(t *testing.T) {
	s := Start(t, WithVersion(PVE74), WithUser("root@pam", "pw"), WithManualTasks())
	r := mustAdd(t, s, GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"bios": "ovmf"}})
	ticket, csrf := login(t, s, "root@pam", "pw")
	rp := do(t, s, "POST", guestPath(r)+"/status/start", nil, cookie(ticket), withHeader("CSRFPreventionToken", csrf))
	tk := finish(t, s, rp)
	got := do(t, s, "GET", "/nodes/pve/tasks/"+string(tk.UPID)+"/status", nil, cookie(ticket)).dataMap(t)
	rec := loadRecorded(t, "v02-task-status-warnings.json").(map[string]any)
	sameShape(t, "V2", got, rec)
	if got["exitstatus"] != rec["exitstatus"] || got["status"] != "stopped" || got["type"] != "qmstart" || got["user"] != "root@pam" {
		t.Errorf("V2 values: %v", got)
	}
	list := do(t, s, "GET", "/nodes/pve/tasks", nil, cookie(ticket)).dataList(t)
	recList := loadRecorded(t, "v09-task-list-entries.json").([]any)
	sameShape(t, "V9", list[0], recList[0].(map[string]any))
}

func TestRecordedV3UnknownParameterOnPVE7(t *testing.T) {
	s := Start(t, WithVersion(PVE74))
	ct := ct200("")
	ct.Running = true
	ct.VMID = 102
	r := mustAdd(t, s, ct)
	rp := do(t, s, "POST", guestPath(r)+"/status/stop", form("overrule-shutdown", "1"))
	raw, err := os.ReadFile(recordedPath("v03-400-parameter-error.http"))
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := strings.Cut(string(raw), "\n\n")
	body = strings.TrimSpace(body)
	if line := strings.SplitN(head, "\n", 2)[0]; line != fmt.Sprintf("HTTP/1.1 %d %s", rp.Code, rp.Status) {
		t.Errorf("status line %d %q, recorded %q", rp.Code, rp.Status, line)
	}
	if string(rp.Raw) != body {
		t.Errorf("body\n %s\nrecorded\n %s", rp.Raw, body)
	}
	if got := rp.Header.Get("Content-Length"); !strings.Contains(head, "Content-Length: "+got) {
		t.Errorf("Content-Length %s", got)
	}
	if !rp.Close {
		t.Error("connection not closed")
	}
	// From 8.2 the parameter exists.
	s8 := Start(t, WithVersion(PVE82), WithManualTasks())
	mustAdd(t, s8, ct)
	if rp := do(t, s8, "POST", guestPath(r)+"/status/stop", form("overrule-shutdown", "1")); rp.Code != 200 {
		t.Errorf("8.2: %d %s", rp.Code, rp.Raw)
	}
}

func TestRecordedV4LXCList(t *testing.T) {
	rec := loadRecorded(t, "v04-lxc-list-string-vmid.json").([]any)
	for _, tc := range []struct {
		version string
		vmidStr bool
	}{{PVE74, true}, {PVE81, true}, {PVE82, false}} {
		s := Start(t, WithVersion(tc.version))
		mustAdd(t, s, GuestSpec{Type: proxmox.LXC, VMID: 106, Running: true, Config: map[string]string{
			"hostname": "test", "memory": "512", "cores": "1", "rootfs": "local-lvm:vm-106-disk-0,size=8G"}})
		mustAdd(t, s, GuestSpec{Type: proxmox.LXC, VMID: 101, Template: true, Config: map[string]string{
			"hostname": "test-container", "memory": "512", "rootfs": "local-lvm:base-101-disk-0,size=8G"}})
		list := do(t, s, "GET", "/nodes/pve/lxc", nil).dataList(t)
		byID := map[string]map[string]any{}
		for _, e := range list {
			byID[fmt.Sprint(e["vmid"])] = e
		}
		want106, want101 := copyMap(rec[0].(map[string]any)), copyMap(rec[2].(map[string]any))
		if !tc.vmidStr {
			want106["vmid"], want101["vmid"] = float64(106), float64(101)
		}
		sameShape(t, "V4 running "+tc.version, byID["106"], want106)
		sameShape(t, "V4 template "+tc.version, byID["101"], want101)
	}
}

func copyMap(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestRecordedV5V6ClusterResources(t *testing.T) {
	rec := loadRecorded(t, "v05-cluster-resources.json").([]any)
	recCT := loadRecorded(t, "v06-cluster-resources-lxc-entry.json").(map[string]any)
	s := Start(t, WithNodes("node1", "node2"))
	mustAdd(t, s, GuestSpec{Node: "node2", Type: proxmox.QEMU, VMID: 100, Running: true, Config: map[string]string{"name": "server1"}})
	mustAdd(t, s, GuestSpec{Node: "node1", Type: proxmox.QEMU, VMID: 101, Template: true, Config: map[string]string{"name": "leap154"}})
	mustAdd(t, s, GuestSpec{Node: "node1", Type: proxmox.LXC, VMID: 733, Running: true, Config: map[string]string{"hostname": "pbx", "memory": "2048"}})
	got := do(t, s, "GET", "/cluster/resources?type=vm", nil).dataList(t)
	if len(got) != 3 {
		t.Fatalf("%d entries", len(got))
	}
	sameShape(t, "V5 running", got[0], rec[0].(map[string]any))
	sameShape(t, "V5 template", got[1], rec[1].(map[string]any))
	sameShape(t, "V6", got[2], recCT)
	if got[1]["template"] != float64(1) || got[0]["template"] != float64(0) || got[2]["type"] != "lxc" {
		t.Errorf("entries %v", got)
	}
	// Without a type filter guests come sorted by vmid as strings: 1000 < 101.
	mustAdd(t, s, GuestSpec{Node: "node1", Type: proxmox.QEMU, VMID: 1000})
	all := do(t, s, "GET", "/cluster/resources", nil).dataList(t)
	var ids []string
	for _, e := range all {
		ids = append(ids, e["id"].(string))
	}
	want := "qemu/100 qemu/1000 qemu/101 lxc/733 node/node1 node/node2"
	if got := strings.Join(ids, " "); !strings.HasPrefix(got, want) {
		t.Errorf("order %s", got)
	}
}

func TestRecordedV8QEMUStatus(t *testing.T) {
	rec := loadRecorded(t, "v08-qemu-status-current.json").(map[string]any)
	s := Start(t)
	r := mustAdd(t, s, GuestSpec{Type: proxmox.QEMU, VMID: 101, Running: true, Config: map[string]string{
		"name": "matt", "agent": "1", "memory": "2000", "cores": "8"}})
	got := do(t, s, "GET", guestPath(r)+"/status/current", nil).dataMap(t)
	for k, v := range got {
		rv, ok := rec[k]
		if !ok {
			t.Errorf("V8: key %q not in the recorded response", k)
			continue
		}
		if jsonType(rv) != jsonType(v) {
			t.Errorf("V8: %q is %s, recorded %s", k, jsonType(v), jsonType(rv))
		}
	}
	for _, k := range []string{"status", "qmpstatus", "vmid", "ha", "pid", "uptime", "maxmem", "running-qemu", "agent"} {
		if _, ok := got[k]; !ok {
			t.Errorf("V8: %q missing", k)
		}
	}
}

func TestRecordedV11Ticket(t *testing.T) {
	rec := loadRecorded(t, "v11-ticket.json").(map[string]any)
	s := Start(t, WithUser("root@pam", "pw"), WithClock(NewManualClock(time.Unix(0x4EEC61E2, 0))))
	got := do(t, s, "POST", "/access/ticket", form("username", "root@pam", "password", "pw"), noAuth()).dataMap(t)
	sameShape(t, "V11", got, rec, "cap")
	if !strings.HasPrefix(got["ticket"].(string), "PVE:root@pam:4EEC61E2::") || !strings.HasPrefix(got["CSRFPreventionToken"].(string), "4EEC61E2:") {
		t.Errorf("V11 values %v", got)
	}
}

// V10 cannot arise by itself (the fake takes no file locks); a fault
// reproduces it, and the answer must match the recording byte for byte.
func TestRecordedV10LockTimeout(t *testing.T) {
	raw, err := os.ReadFile(recordedPath("v10-500-lock-timeout.http"))
	if err != nil {
		t.Fatal(err)
	}
	line, body, _ := strings.Cut(strings.TrimSpace(string(raw)), "\n")
	reason := strings.TrimPrefix(line, "HTTP/1.1 500 ")
	s := Start(t, WithVersion(PVE74))
	mustAdd(t, s, GuestSpec{Type: proxmox.QEMU, VMID: 203})
	s.Inject(Fault{Method: "PUT", Guest: proxmox.Ref{VMID: 203}, Status: 500, Message: reason})
	rp := do(t, s, "PUT", "/nodes/pve/qemu/203/config", form("cores", "2"))
	if got := fmt.Sprintf("HTTP/1.1 %d %s", rp.Code, rp.Status); got != line {
		t.Errorf("status line %q, recorded %q", got, line)
	}
	if string(rp.Raw) != strings.TrimSpace(body) {
		t.Errorf("body %s, recorded %s", rp.Raw, body)
	}
}
