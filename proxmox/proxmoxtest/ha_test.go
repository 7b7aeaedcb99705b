package proxmoxtest

import (
	"context"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// lrmTask returns the one running task the HA manager started for r.
func lrmTask(t *testing.T, s *Server, r proxmox.Ref) (Task, bool) {
	t.Helper()
	var found []Task
	for _, tk := range s.Tasks() {
		if tk.Guest == r && tk.User == "root@pam" && tk.Running {
			found = append(found, tk)
		}
	}
	if len(found) > 1 {
		t.Fatalf("%d HA tasks running for %s", len(found), r)
	}
	if len(found) == 0 {
		return Task{}, false
	}
	return found[0], true
}

func haState(t *testing.T, s *Server, r proxmox.Ref) map[string]any {
	t.Helper()
	ha, _ := do(t, s, "GET", guestPath(r)+"/status/current", nil).dataMap(t)["ha"].(map[string]any)
	return ha
}

func TestHAStartGoesThroughTheManager(t *testing.T) {
	s := Start(t, WithManualTasks())
	spec := vm100("")
	spec.HA = true
	r := mustAdd(t, s, spec)
	if ha := haState(t, s, r); ha["managed"] != 1.0 || ha["state"] != "stopped" {
		t.Fatalf("ha = %v", ha)
	}

	rp := do(t, s, "POST", guestPath(r)+"/status/start", nil)
	tk := taskOf(t, s, rp)
	id, _ := s.APIToken()
	if tk.Type != "hastart" || tk.User != id {
		t.Fatalf("request task %+v", tk)
	}
	if _, ok := lrmTask(t, s, r); ok {
		t.Fatal("the HA manager acted before the request was handed over")
	}
	if tk = finish(t, s, rp); tk.ExitStatus != "OK" || tk.Log[0] != "Requesting HA start for VM 100" {
		t.Fatalf("hastart: %q %q", tk.ExitStatus, tk.Log)
	}
	// Handed over: the service is started, the guest is not yet.
	if mustGuest(t, s, r).Running {
		t.Fatal("the hastart task itself started the guest")
	}
	if ha := haState(t, s, r); ha["state"] != "started" {
		t.Fatalf("ha = %v", ha)
	}
	res := do(t, s, "GET", "/cluster/resources?type=vm", nil).dataList(t)
	if len(res) != 1 || res[0]["hastate"] != "started" {
		t.Fatalf("resources %v", res)
	}
	lrm, ok := lrmTask(t, s, r)
	if !ok || lrm.Type != "qmstart" {
		t.Fatalf("HA manager task %+v, %v", lrm, ok)
	}
	if err := s.FinishTask(lrm.UPID); err != nil {
		t.Fatal(err)
	}
	if lrm, _ = s.Task(lrm.UPID); lrm.ExitStatus != "OK" || !mustGuest(t, s, r).Running {
		t.Fatalf("after the HA manager's task: %q, running %v", lrm.ExitStatus, mustGuest(t, s, r).Running)
	}

	// Starting a running HA guest hands the request over; the manager has
	// nothing to do.
	finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil))
	if _, ok := lrmTask(t, s, r); ok {
		t.Fatal("the HA manager started a running guest")
	}
	if n := s.TaskCount(r, "qmstart"); n != 1 {
		t.Fatalf("%d qmstart tasks", n)
	}
}

func TestHAStopAndShutdown(t *testing.T) {
	for _, tc := range []struct {
		name, action string
		ct           bool
		params       string
		lrmType      string
	}{
		{"qemu stop", "stop", false, "", "qmstop"},
		{"qemu shutdown", "shutdown", false, "", "qmshutdown"},
		{"qemu shutdown with timeout 0 stops hard", "shutdown", false, "?timeout=0", "qmstop"},
		{"lxc stop", "stop", true, "", "vzstop"},
		{"lxc shutdown", "shutdown", true, "?timeout=30", "vzshutdown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Start(t, WithManualTasks())
			spec := vm100("")
			if tc.ct {
				spec = ct200("")
			}
			spec.HA, spec.Running = true, true
			spec.IgnoreShutdown = !tc.ct // a QEMU HA shutdown forces the stop
			r := mustAdd(t, s, spec)
			rp := do(t, s, "POST", guestPath(r)+"/status/"+tc.action+tc.params, nil)
			if tk := finish(t, s, rp); tk.Type != "hastop" || tk.ExitStatus != "OK" {
				t.Fatalf("request task %+v", tk)
			}
			if ha := haState(t, s, r); ha["state"] != "request_stop" {
				t.Fatalf("ha = %v", ha)
			}
			lrm, ok := lrmTask(t, s, r)
			if !ok || lrm.Type != tc.lrmType {
				t.Fatalf("HA manager task %+v, want %s", lrm, tc.lrmType)
			}
			if !mustGuest(t, s, r).Running {
				t.Fatal("stopped before the HA manager's task ran")
			}
			_ = s.FinishTask(lrm.UPID)
			if lrm, _ = s.Task(lrm.UPID); lrm.ExitStatus != "OK" {
				t.Fatalf("HA manager task: %q", lrm.ExitStatus)
			}
			if st := mustGuest(t, s, r); st.Running || st.HAState != "stopped" {
				t.Fatalf("after: running %v, HA %q", st.Running, st.HAState)
			}
		})
	}
}

func TestHAHoldAndRelease(t *testing.T) {
	s := Start(t, WithManualTasks())
	var refs []proxmox.Ref
	for _, id := range []int{101, 100} {
		spec := vm100("")
		spec.VMID, spec.HA = id, true
		spec.Config["scsi0"] = "local-lvm:vm-" + itoa(id) + "-disk-0,size=32G"
		refs = append(refs, mustAdd(t, s, spec))
	}
	release := s.HoldHA()
	inner := s.HoldHA()
	for _, r := range refs {
		finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil))
		if st := mustGuest(t, s, r); st.HAState != "stopped" {
			t.Fatalf("%s: HA state %q while held", r, st.HAState)
		}
		if _, ok := lrmTask(t, s, r); ok {
			t.Fatalf("%s: the held HA manager acted", r)
		}
	}
	inner()
	inner() // idempotent
	if _, ok := lrmTask(t, s, refs[0]); ok {
		t.Fatal("released while an outer hold remains")
	}
	release()
	var order []int
	for _, tk := range s.Tasks() {
		if tk.User == "root@pam" {
			order = append(order, tk.Guest.VMID)
		}
	}
	if len(order) != 2 || order[0] != 100 || order[1] != 101 {
		t.Fatalf("HA manager tasks for %v, want [100 101]", order)
	}
	s.FinishTasks()
	for _, r := range refs {
		if st := mustGuest(t, s, r); !st.Running || st.HAState != "started" {
			t.Fatalf("%s: running %v, HA %q", r, st.Running, st.HAState)
		}
	}
}

func TestHAEdges(t *testing.T) {
	s := Start(t, WithManualTasks())
	vm := vm100("")
	vm.HA = true
	v := mustAdd(t, s, vm)
	ct := ct200("")
	ct.HA, ct.Running = true, true
	c := mustAdd(t, s, ct)

	// pve-container's running checks come before the HA branch.
	if rp := do(t, s, "POST", guestPath(c)+"/status/start", nil); rp.Code != 500 || rp.Status != "CT 200 already running" {
		t.Fatalf("lxc start: %d %q", rp.Code, rp.Status)
	}
	// overrule-shutdown is refused for HA resources.
	rp := do(t, s, "POST", guestPath(c)+"/status/stop", form("overrule-shutdown", "1"))
	if rp.Code != 400 || rp.errorsMap()["overrule-shutdown"] != "Not applicable for HA resources." {
		t.Fatalf("overrule-shutdown: %d %v", rp.Code, rp.errorsMap())
	}
	// A reboot is not routed through HA.
	if tk := taskOf(t, s, do(t, s, "POST", guestPath(c)+"/status/reboot", nil)); tk.Type != "vzreboot" {
		t.Fatalf("reboot task %+v", tk)
	}
	s.FinishTasks()

	// A lock fails the HA manager's start, not the request.
	_ = s.SetLock(v, "backup")
	h := s.Inject(Fault{Guest: v, LockTimeout: true, Times: 1})
	if tk := finish(t, s, do(t, s, "POST", guestPath(v)+"/status/start", nil)); tk.ExitStatus != "OK" {
		t.Fatalf("hastart %q; it takes no config lock", tk.ExitStatus)
	}
	if h.Hits() != 1 {
		t.Fatalf("fault hits %d", h.Hits())
	}
	lrm, _ := lrmTask(t, s, v)
	_ = s.FinishTask(lrm.UPID)
	if lrm, _ = s.Task(lrm.UPID); lrm.ExitStatus != "VM is locked (backup)" || mustGuest(t, s, v).HAState != "error" {
		t.Fatalf("HA start of a locked VM: %q, state %q", lrm.ExitStatus, mustGuest(t, s, v).HAState)
	}
	_ = s.SetLock(v, "")

	// A stop handed over while the manager's start still runs waits for it.
	_ = s.SetHA(v, false)
	_ = s.SetHA(v, true)
	finish(t, s, do(t, s, "POST", guestPath(v)+"/status/start", nil))
	start, _ := lrmTask(t, s, v)
	finish(t, s, do(t, s, "POST", guestPath(v)+"/status/stop", nil))
	if tk, _ := lrmTask(t, s, v); tk.UPID != start.UPID {
		t.Fatal("a second HA task started while the first runs")
	}
	_ = s.FinishTask(start.UPID)
	stop, ok := lrmTask(t, s, v)
	if !ok || stop.Type != "qmstop" {
		t.Fatalf("the waiting stop did not follow: %+v", stop)
	}
	_ = s.FinishTask(stop.UPID)
	if st := mustGuest(t, s, v); st.Running || st.HAState != "stopped" {
		t.Fatalf("running %v, HA %q", st.Running, st.HAState)
	}

	// A request handed over for a guest no longer managed fails its task.
	rp = do(t, s, "POST", guestPath(v)+"/status/start", nil)
	_ = s.SetHA(v, false)
	if tk := finish(t, s, rp); tk.ExitStatus != "command 'ha-manager set vm:100 --state started' failed: exit code 255" {
		t.Fatalf("exit %q", tk.ExitStatus)
	}
	if ha := haState(t, s, v); len(ha) != 1 || ha["managed"] != 0.0 {
		t.Fatalf("unmanaged ha = %v", ha)
	}
	if err := s.SetHA(qemu("pve", 999), true); err == nil {
		t.Fatal("SetHA of a missing guest")
	}
}

func TestHAStatusByVersion(t *testing.T) {
	for _, tc := range []struct {
		version   string
		withGroup bool
	}{{PVE74, true}, {PVE84, true}, {PVE90, true}, {"9.1.2", false}} {
		s := Start(t, WithVersion(tc.version))
		spec := ct200("")
		spec.HA = true
		r := mustAdd(t, s, spec)
		ha := haState(t, s, r)
		group, has := ha["group"]
		if ha["managed"] != 1.0 || ha["state"] != "stopped" || has != tc.withGroup || group != nil {
			t.Errorf("%s: ha = %v", tc.version, ha)
		}
	}
}

// TestHAWithTimedTasks: without manual tasks, the HA manager's task
// starts as the request's task ends, so waiting for idleness covers both.
func TestHAWithTimedTasks(t *testing.T) {
	s := Start(t)
	spec := vm100("")
	spec.HA = true
	r := mustAdd(t, s, spec)
	do(t, s, "POST", guestPath(r)+"/status/start", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tk, err := s.AwaitTask(ctx, func(tk Task) bool { return tk.Type == "qmstart" && !tk.Running })
	if err != nil || tk.User != "root@pam" || tk.ExitStatus != "OK" {
		t.Fatalf("HA manager task %+v, %v", tk, err)
	}
	waitIdle(t, s)
	if !mustGuest(t, s, r).Running {
		t.Fatal("not running after the HA manager's start")
	}
}

// TestHAErrorStateRefusesRequests: ha-manager refuses a service in state
// "error" (check_service_state), so the hastart or hastop task fails and
// the HA manager does nothing.
func TestHAErrorStateRefusesRequests(t *testing.T) {
	s := Start(t, WithManualTasks())
	spec := vm100("")
	spec.HA, spec.Lock = true, "backup"
	r := mustAdd(t, s, spec)
	finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil))
	lrm, ok := lrmTask(t, s, r)
	if !ok {
		t.Fatal("no HA manager task")
	}
	_ = s.FinishTask(lrm.UPID)
	if st := mustGuest(t, s, r); st.HAState != "error" {
		t.Fatalf("HA state %q after a failed start", st.HAState)
	}
	_ = s.SetLock(r, "")

	for _, tc := range []struct{ action, exit string }{
		{"start", "command 'ha-manager set vm:100 --state started' failed: exit code 255"},
		{"stop", "command 'ha-manager crm-command stop vm:100 0' failed: exit code 255"},
		{"shutdown", "command 'ha-manager crm-command stop vm:100 60' failed: exit code 255"},
	} {
		tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/"+tc.action, nil))
		if tk.ExitStatus != tc.exit {
			t.Errorf("%s: exit %q, want %q", tc.action, tk.ExitStatus, tc.exit)
		}
		if len(tk.Log) < 2 || tk.Log[1] != "service 'vm:100' in error state, must be disabled and fixed first" {
			t.Errorf("%s: log %q", tc.action, tk.Log)
		}
		if _, ok := lrmTask(t, s, r); ok {
			t.Fatalf("%s: the HA manager acted on a service in error", tc.action)
		}
	}
	if st := mustGuest(t, s, r); st.Running || st.HAState != "error" {
		t.Fatalf("running %v, HA %q", st.Running, st.HAState)
	}
}

// TestHAOneRoundForSeveralRequests: requests handed over before the
// manager's next round act as Proxmox's CRM makes them act. A stopped
// service ignores a stop and then starts, since its configuration asks
// for it (next_state_stopped); a started one takes on the stop, which
// also sets its configuration to stopped (next_state_started).
func TestHAOneRoundForSeveralRequests(t *testing.T) {
	for _, tc := range []struct {
		name    string
		running bool
		actions []string
		want    bool
		lrm     string
	}{
		{"stopped: start then stop", false, []string{"start", "stop"}, true, "qmstart"},
		{"stopped: stop then start", false, []string{"stop", "start"}, true, "qmstart"},
		{"started: stop then start", true, []string{"stop", "start"}, false, "qmstop"},
		{"started: start then shutdown", true, []string{"start", "shutdown"}, false, "qmshutdown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Start(t, WithManualTasks())
			spec := vm100("")
			spec.HA, spec.Running = true, tc.running
			r := mustAdd(t, s, spec)
			release := s.HoldHA()
			for _, a := range tc.actions {
				if tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/"+a, nil)); tk.ExitStatus != "OK" {
					t.Fatalf("%s: exit %q", a, tk.ExitStatus)
				}
			}
			release()
			lrm, ok := lrmTask(t, s, r)
			if !ok || lrm.Type != tc.lrm {
				t.Fatalf("HA manager task %+v, want %s", lrm, tc.lrm)
			}
			s.FinishTasks()
			want := map[bool]string{true: "started", false: "stopped"}[tc.want]
			if st := mustGuest(t, s, r); st.Running != tc.want || st.HAState != want {
				t.Fatalf("running %v, HA %q; want %v, %q", st.Running, st.HAState, tc.want, want)
			}
			if n := len(s.Tasks()); n != len(tc.actions)+1 {
				t.Fatalf("%d tasks; the manager acts once", n)
			}
		})
	}
}

// TestHARoundEnforcesTheState: a round finds a guest that changed behind
// the manager's back and puts it in the service's state, as the LRM does
// for "started" and "stopped" services alike.
func TestHARoundEnforcesTheState(t *testing.T) {
	s := Start(t, WithManualTasks())
	spec := vm100("")
	spec.HA = true
	r := mustAdd(t, s, spec)
	if err := s.SetRunning(r, true); err != nil {
		t.Fatal(err)
	}
	if _, ok := lrmTask(t, s, r); ok {
		t.Fatal("the manager noticed a change between rounds")
	}
	// A stop of the stopped service is ignored, but the round shuts the
	// running guest down, with the LRM's default timeout, forced.
	finish(t, s, do(t, s, "POST", guestPath(r)+"/status/stop", nil))
	lrm, ok := lrmTask(t, s, r)
	if !ok || lrm.Type != "qmshutdown" {
		t.Fatalf("HA manager task %+v", lrm)
	}
	_ = s.FinishTask(lrm.UPID)
	if st := mustGuest(t, s, r); st.Running || st.HAState != "stopped" {
		t.Fatalf("running %v, HA %q", st.Running, st.HAState)
	}
}
