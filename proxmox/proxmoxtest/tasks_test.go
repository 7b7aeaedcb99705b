package proxmoxtest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
)

func taskStatus(t *testing.T, s *Server, upid proxmox.UPID) reply {
	t.Helper()
	info, err := proxmox.ParseUPID(string(upid))
	if err != nil {
		t.Fatalf("ParseUPID(%q): %v", upid, err)
	}
	return do(t, s, "GET", "/nodes/"+info.Node+"/tasks/"+string(upid)+"/status", nil)
}

func TestTaskLifecycleManual(t *testing.T) {
	clk := NewManualClock(time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC))
	s := Start(t, WithManualTasks(), WithClock(clk), WithNodes("pve1"))
	r := mustAdd(t, s, vm100("pve1"))
	rp := do(t, s, "POST", guestPath(r)+"/status/start", nil)
	upid := proxmox.UPID(rp.data().(string))
	info, err := upid.Parse()
	if err != nil {
		t.Fatal(err)
	}
	if info.Node != "pve1" || info.Type != "qmstart" || info.ID != "100" || info.User != "root@pam!guestward" ||
		!info.StartTime.Equal(clk.Now()) || info.Format() != upid {
		t.Fatalf("UPID %s decodes to %+v", upid, info)
	}
	st := taskStatus(t, s, upid).dataMap(t)
	if st["status"] != "running" || st["exitstatus"] != nil {
		t.Fatalf("running task status %v", st)
	}
	if st["user"] != "root@pam" || st["tokenid"] != "guestward" || st["id"] != "100" || st["type"] != "qmstart" ||
		st["upid"] != string(upid) || st["node"] != "pve1" || st["starttime"] != float64(clk.Now().Unix()) {
		t.Fatalf("status fields %v", st)
	}
	if _, ok := st["endtime"]; ok {
		t.Fatal("task status has endtime; Proxmox's does not")
	}
	if mustGuest(t, s, r).Running {
		t.Fatal("guest running before its start task did its work")
	}
	clk.Advance(3 * time.Second)
	if err := s.FinishTask(upid); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishTask(upid); err == nil {
		t.Fatal("finished twice")
	}
	st = taskStatus(t, s, upid).dataMap(t)
	if st["status"] != "stopped" || st["exitstatus"] != "OK" {
		t.Fatalf("stopped task status %v", st)
	}
	if !mustGuest(t, s, r).Running {
		t.Fatal("guest not running after its start task")
	}
	lg := do(t, s, "GET", "/nodes/pve1/tasks/"+string(upid)+"/log", nil)
	lines := lg.dataList(t)
	if len(lines) != 1 || lines[0]["n"] != float64(1) || lines[0]["t"] != "TASK OK" || lg.Body["total"] != float64(1) {
		t.Fatalf("log %s", lg.Raw)
	}
}

func TestTaskAutoCompletes(t *testing.T) {
	s := Start(t, WithTaskDuration(0))
	r := mustAdd(t, s, ct200(""))
	tk := taskOf(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil))
	if tk.Type != "vzstart" {
		t.Fatalf("type %s", tk.Type)
	}
	waitIdle(t, s)
	tk, _ = s.Task(tk.UPID)
	if tk.Running || tk.ExitStatus != "OK" || !mustGuest(t, s, r).Running {
		t.Fatalf("task %+v", tk)
	}
}

func TestPowerErrorsWhereProxmoxPutsThem(t *testing.T) {
	s := Start(t, WithManualTasks())
	vm := vm100("")
	vm.Running = true
	rvm := mustAdd(t, s, vm)
	ct := ct200("")
	ct.Running = true
	rct := mustAdd(t, s, ct)
	tmpl := mustAdd(t, s, GuestSpec{Type: proxmox.QEMU, VMID: 900, Template: true})
	ctmpl := mustAdd(t, s, GuestSpec{Type: proxmox.LXC, VMID: 901, Template: true})
	stopped := mustAdd(t, s, GuestSpec{Type: proxmox.QEMU, VMID: 102})
	ctStopped := mustAdd(t, s, GuestSpec{Type: proxmox.LXC, VMID: 202})

	type want struct {
		code   int
		reason string // sync error
		exit   string // task exit status
	}
	for _, tc := range []struct {
		name, path string
		want       want
	}{
		{"qemu start running", guestPath(rvm) + "/status/start", want{200, "", "VM 100 already running"}},
		{"lxc start running", guestPath(rct) + "/status/start", want{500, "CT 200 already running", ""}},
		{"qemu start template", guestPath(tmpl) + "/status/start", want{200, "", "you can't start a vm if it's a template"}},
		{"lxc start template", guestPath(ctmpl) + "/status/start", want{200, "", "you can't start a CT if it's a template"}},
		{"qemu start missing", "/nodes/pve/qemu/555/status/start", want{200, "", "Configuration file 'nodes/pve/qemu-server/555.conf' does not exist"}},
		{"lxc start missing", "/nodes/pve/lxc/555/status/start", want{200, "", "Configuration file 'nodes/pve/lxc/555.conf' does not exist"}},
		{"qemu stop stopped", guestPath(stopped) + "/status/stop", want{200, "", "OK"}},
		{"qemu shutdown stopped", guestPath(stopped) + "/status/shutdown", want{200, "", "OK"}},
		{"qemu stop missing", "/nodes/pve/qemu/555/status/stop", want{200, "", "unable to find configuration file for VM 555 on node 'pve'"}},
		{"lxc stop stopped", guestPath(ctStopped) + "/status/stop", want{500, "CT 202 not running", ""}},
		{"lxc stop missing", "/nodes/pve/lxc/555/status/stop", want{500, "CT 555 not running", ""}},
		{"lxc shutdown stopped", guestPath(ctStopped) + "/status/shutdown", want{500, "CT 202 not running", ""}},
		{"qemu reboot stopped", guestPath(stopped) + "/status/reboot", want{500, "VM 102 not running", ""}},
		{"qemu reboot missing", "/nodes/pve/qemu/555/status/reboot", want{500, "unable to find configuration file for VM 555 on node 'pve'", ""}},
		{"lxc reboot stopped", guestPath(ctStopped) + "/status/reboot", want{500, "VM 202 not running", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp := do(t, s, "POST", tc.path, nil)
			if rp.Code != tc.want.code {
				t.Fatalf("got %d %q", rp.Code, rp.Status)
			}
			if tc.want.code != 200 {
				if rp.Status != tc.want.reason {
					t.Fatalf("reason %q, want %q", rp.Status, tc.want.reason)
				}
				return
			}
			tk := finish(t, s, rp)
			if tk.ExitStatus != tc.want.exit {
				t.Fatalf("exit status %q, want %q", tk.ExitStatus, tc.want.exit)
			}
			if tc.want.exit != "OK" && tk.Log[len(tk.Log)-1] != "TASK ERROR: "+tc.want.exit {
				t.Fatalf("log %q", tk.Log)
			}
		})
	}
}

func TestLockedPowerActionsFailInTask(t *testing.T) {
	s := Start(t, WithManualTasks(), WithUser("root@pam", "pw"))
	rvm := mustAdd(t, s, GuestSpec{Type: proxmox.QEMU, VMID: 100, Lock: "backup"})
	rct := mustAdd(t, s, GuestSpec{Type: proxmox.LXC, VMID: 200, Lock: "backup", Config: map[string]string{"memory": "512"}})
	if tk := finish(t, s, do(t, s, "POST", guestPath(rvm)+"/status/start", nil)); tk.ExitStatus != "VM is locked (backup)" {
		t.Errorf("qemu: %q", tk.ExitStatus)
	}
	if tk := finish(t, s, do(t, s, "POST", guestPath(rct)+"/status/start", nil)); tk.ExitStatus != "CT is locked (backup)" {
		t.Errorf("lxc: %q", tk.ExitStatus)
	}
	// skiplock from root@pam starts anyway.
	ticket, csrf := login(t, s, "root@pam", "pw")
	rp := do(t, s, "POST", guestPath(rvm)+"/status/start", form("skiplock", "1"), cookie(ticket), withHeader("CSRFPreventionToken", csrf))
	if tk := finish(t, s, rp); tk.ExitStatus != "OK" || tk.User != "root@pam" {
		t.Errorf("skiplock start: %+v", tk)
	}
	// A "mounted" lock does not block a container start.
	s.SetLock(rct, "mounted")
	if tk := finish(t, s, do(t, s, "POST", guestPath(rct)+"/status/start", nil)); tk.ExitStatus != "OK" {
		t.Errorf("mounted: %q", tk.ExitStatus)
	}
}

func TestShutdownIgnoredAndReboot(t *testing.T) {
	s := Start(t, WithManualTasks())
	spec := vm100("")
	spec.Running = true
	spec.IgnoreShutdown = true
	r := mustAdd(t, s, spec)
	if tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/shutdown", nil)); tk.ExitStatus != "VM quit/powerdown failed - got timeout" {
		t.Fatalf("shutdown: %q", tk.ExitStatus)
	}
	if !mustGuest(t, s, r).Running {
		t.Fatal("guest stopped although it ignored the shutdown")
	}
	tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/shutdown", form("forceStop", "1")))
	if tk.ExitStatus != "OK" || mustGuest(t, s, r).Running {
		t.Fatalf("forced shutdown: %+v", tk)
	}
	s.SetIgnoreShutdown(r, false)
	s.SetRunning(r, true)
	put(t, s, r, "cores", "8")
	if _, ok := mustGuest(t, s, r).Pending["cores"]; !ok {
		t.Fatal("cores not pending")
	}
	tk = finish(t, s, do(t, s, "POST", guestPath(r)+"/status/reboot", nil))
	st := mustGuest(t, s, r)
	if tk.Type != "qmreboot" || tk.ExitStatus != "OK" || !st.Running || st.Config["cores"] != "8" {
		t.Fatalf("reboot: %+v, config %v", tk, st.Config)
	}
	ct := ct200("")
	ct.Running, ct.IgnoreShutdown = true, true
	rc := mustAdd(t, s, ct)
	tk = finish(t, s, do(t, s, "POST", guestPath(rc)+"/status/shutdown", form("timeout", "30")))
	if tk.ExitStatus != "command 'lxc-stop -n 200 --nokill --timeout 30' failed: exit code 1" {
		t.Fatalf("lxc shutdown: %q", tk.ExitStatus)
	}
}

func TestOVMFWarning(t *testing.T) {
	s := Start(t, WithManualTasks())
	r := mustAdd(t, s, GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"bios": "ovmf"}})
	tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil))
	if tk.ExitStatus != "WARNINGS: 1" || !mustGuest(t, s, r).Running {
		t.Fatalf("task %+v", tk)
	}
	want := []string{"WARN: no efidisk configured! Using temporary efivars disk.", "TASK WARNINGS: 1"}
	if strings.Join(tk.Log, "|") != strings.Join(want, "|") {
		t.Fatalf("log %q", tk.Log)
	}
}

func TestQEMUConfigPostIsATask(t *testing.T) {
	s := Start(t, WithManualTasks())
	r := mustAdd(t, s, vm100(""))
	d0 := mustGuest(t, s, r).Digest
	rp := do(t, s, "POST", guestPath(r)+"/config", form("cores", "4", "delete", "onboot", "cipassword", "x", "digest", d0))
	tk := taskOf(t, s, rp)
	if tk.Type != "qmconfig" {
		t.Fatalf("type %s", tk.Type)
	}
	if st := mustGuest(t, s, r); st.Config["cores"] != "2" || st.Digest != d0 {
		t.Fatal("config changed before the qmconfig task ran")
	}
	tk = finish(t, s, rp)
	want := []string{
		"update VM 100: -cipassword <hidden> -cores 4 -delete onboot",
		"cannot delete 'onboot' - not set in current configuration!",
		"TASK OK",
	}
	if strings.Join(tk.Log, "|") != strings.Join(want, "|") {
		t.Fatalf("log %q", tk.Log)
	}
	if st := mustGuest(t, s, r); st.Config["cores"] != "4" || st.Digest == d0 {
		t.Fatal("qmconfig task did not write")
	}
	// Digest and lock are checked before the fork: synchronous errors.
	rp = do(t, s, "POST", guestPath(r)+"/config", form("cores", "5", "digest", d0))
	if rp.Code != 500 || rp.Status != "checksum mismatch (file change by other user?)" {
		t.Fatalf("stale digest: %d %q", rp.Code, rp.Status)
	}
	// Errors of the worker fail the task.
	tk = finish(t, s, do(t, s, "POST", guestPath(r)+"/config", form("boot", "order=virtio7")))
	if tk.ExitStatus != "invalid bootorder: device 'virtio7' does not exist'" {
		t.Fatalf("worker error: %q", tk.ExitStatus)
	}
}

func TestBackgroundDelay(t *testing.T) {
	s := Start(t, WithTaskDuration(0))
	r := mustAdd(t, s, vm100(""))
	rp := do(t, s, "POST", guestPath(r)+"/config", form("cores", "4", "background_delay", "30"))
	if rp.Code != 200 || string(rp.Raw) != `{"data":null}` {
		t.Fatalf("finished in time: %d %s", rp.Code, rp.Raw)
	}
	s.Inject(Fault{Path: guestPath(r) + "/config", Method: "POST", TaskError: "storage full", Times: 1})
	rp = do(t, s, "POST", guestPath(r)+"/config", form("cores", "5", "background_delay", "30"))
	if rp.Code != 500 || rp.Status != "failed to update VM 100: storage full" {
		t.Fatalf("failed in time: %d %q", rp.Code, rp.Status)
	}
	m := Start(t, WithManualTasks())
	r = mustAdd(t, m, vm100(""))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		tk, err := m.AwaitTask(ctx, func(tk Task) bool { return tk.Type == "qmconfig" })
		if err == nil {
			m.FinishTask(tk.UPID)
		}
	}()
	rp = do(t, m, "POST", guestPath(r)+"/config", form("cores", "6", "background_delay", "30"))
	if rp.Code != 200 || string(rp.Raw) != `{"data":null}` {
		t.Fatalf("finished while waiting: %d %s", rp.Code, rp.Raw)
	}
}

func TestTaskVisibilityDelay(t *testing.T) {
	s := Start(t, WithTaskVisibilityDelay(2), WithManualTasks())
	r := mustAdd(t, s, vm100(""))
	upid := proxmox.UPID(do(t, s, "POST", guestPath(r)+"/status/start", nil).data().(string))
	for i := 0; i < 2; i++ {
		rp := taskStatus(t, s, upid)
		if rp.Code != 400 || rp.errorsMap()["upid"] != "no such task" {
			t.Fatalf("poll %d: %d %s", i, rp.Code, rp.Raw)
		}
	}
	if rp := taskStatus(t, s, upid); rp.Code != 200 {
		t.Fatalf("third poll: %d %s", rp.Code, rp.Raw)
	}
}

func TestTaskEndpointsErrors(t *testing.T) {
	s := Start(t, WithNodes("pve1", "pve2"), WithManualTasks())
	r := mustAdd(t, s, vm100("pve1"))
	upid := proxmox.UPID(do(t, s, "POST", guestPath(r)+"/status/start", nil).data().(string))
	rp := do(t, s, "GET", "/nodes/pve1/tasks/UPID:garbage/status", nil)
	if rp.Code != 400 || rp.errorsMap()["upid"] != "unable to parse worker upid" {
		t.Fatalf("garbage: %d %s", rp.Code, rp.Raw)
	}
	rp = do(t, s, "GET", "/nodes/pve2/tasks/"+string(upid)+"/status", nil)
	if rp.Code != 400 || rp.errorsMap()["upid"] != "no such task" {
		t.Fatalf("wrong node: %d %s", rp.Code, rp.Raw)
	}
	other := strings.Replace(string(upid), ":qmstart:", ":qmstop:", 1)
	rp = do(t, s, "GET", "/nodes/pve1/tasks/"+other+"/log", nil)
	if rp.Code != 200 || rp.dataList(t)[0]["t"] != "unable to open file - No such file or directory" {
		t.Fatalf("log of unknown task: %d %s", rp.Code, rp.Raw)
	}
	rp = do(t, s, "GET", "/nodes/pve1/tasks/"+string(upid)+"/log", nil)
	if l := rp.dataList(t); len(l) != 1 || l[0]["t"] != "no content" || rp.Body["total"] != float64(1) {
		t.Fatalf("empty log: %s", rp.Raw)
	}
	rp = do(t, s, "DELETE", "/nodes/pve1/tasks/"+string(upid), nil)
	if rp.Code != 200 {
		t.Fatalf("stop task: %d %q", rp.Code, rp.Status)
	}
	tk, _ := s.Task(upid)
	if tk.Running || tk.ExitStatus != "received interrupt" || mustGuest(t, s, r).Running {
		t.Fatalf("stopped task %+v", tk)
	}
}

func TestTaskLogPaging(t *testing.T) {
	s := Start(t, WithManualTasks())
	r := mustAdd(t, s, vm100(""))
	s.Inject(Fault{Path: "/nodes/*/qemu/*/status/start", TaskWarnings: 4})
	tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil))
	if len(tk.Log) != 5 {
		t.Fatalf("log %q", tk.Log)
	}
	rp := do(t, s, "GET", "/nodes/pve/tasks/"+string(tk.UPID)+"/log?start=1&limit=2", nil)
	l := rp.dataList(t)
	if len(l) != 2 || l[0]["n"] != float64(2) || l[1]["n"] != float64(3) || rp.Body["total"] != float64(5) {
		t.Fatalf("paged: %s", rp.Raw)
	}
	rp = do(t, s, "GET", "/nodes/pve/tasks/"+string(tk.UPID)+"/log?limit=0", nil)
	if len(rp.dataList(t)) != 5 {
		t.Fatalf("limit=0: %s", rp.Raw)
	}
}

func TestTaskList(t *testing.T) {
	clk := NewManualClock(time.Unix(1_700_000_000, 0))
	s := Start(t, WithManualTasks(), WithClock(clk), WithNodes("pve1", "pve2"))
	a := mustAdd(t, s, vm100("pve1"))
	b := mustAdd(t, s, GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 101})
	c := mustAdd(t, s, GuestSpec{Node: "pve2", Type: proxmox.QEMU, VMID: 102})
	t1 := finish(t, s, do(t, s, "POST", guestPath(a)+"/status/start", nil))
	clk.Advance(10 * time.Second)
	s.Inject(Fault{Guest: b, TaskError: "boom", Times: 1})
	t2 := finish(t, s, do(t, s, "POST", guestPath(b)+"/status/start", nil))
	clk.Advance(10 * time.Second)
	t3 := taskOf(t, s, do(t, s, "POST", guestPath(a)+"/status/stop", nil)) // left running
	finish(t, s, do(t, s, "POST", guestPath(c)+"/status/start", nil))      // on pve2

	list := func(q string) ([]string, float64) {
		t.Helper()
		rp := do(t, s, "GET", "/nodes/pve1/tasks"+q, nil)
		var ids []string
		for _, e := range rp.dataList(t) {
			ids = append(ids, e["upid"].(string))
		}
		return ids, rp.Body["total"].(float64)
	}
	eq := func(got []string, want ...Task) bool {
		if len(got) != len(want) {
			return false
		}
		for i := range got {
			if got[i] != string(want[i].UPID) {
				return false
			}
		}
		return true
	}
	if got, total := list(""); !eq(got, t2, t1) || total != 2 {
		t.Errorf("archive: %v total %v", got, total)
	}
	if got, _ := list("?source=all"); !eq(got, t3, t2, t1) {
		t.Errorf("all: %v", got)
	}
	if got, _ := list("?source=active"); !eq(got, t3) {
		t.Errorf("active: %v", got)
	}
	if got, _ := list("?source=all&vmid=100"); !eq(got, t3, t1) {
		t.Errorf("vmid: %v", got)
	}
	if got, _ := list("?source=all&typefilter=qmstop"); !eq(got, t3) {
		t.Errorf("typefilter: %v", got)
	}
	if got, _ := list("?source=all&since=" + itoa(int(t2.Start.Unix()))); !eq(got, t3, t2) {
		t.Errorf("since: %v", got)
	}
	if got, _ := list("?errors=1"); !eq(got, t2) {
		t.Errorf("errors: %v", got)
	}
	if got, _ := list("?statusfilter=ok"); !eq(got, t1) {
		t.Errorf("statusfilter: %v", got)
	}
	if got, total := list("?source=all&start=1&limit=1"); !eq(got, t2) || total != 3 {
		t.Errorf("paging: %v total %v", got, total)
	}
	rp := do(t, s, "GET", "/nodes/pve1/tasks?source=all", nil)
	for _, e := range rp.dataList(t) {
		switch e["upid"] {
		case string(t3.UPID):
			if e["status"] != "RUNNING" || e["endtime"] != nil {
				t.Errorf("running entry %v", e)
			}
		case string(t2.UPID):
			if e["status"] != "boom" || e["endtime"] == nil || e["user"] != "root@pam" || e["tokenid"] != "guestward" {
				t.Errorf("failed entry %v", e)
			}
		}
	}
	if n := s.TaskCount(proxmox.Ref{VMID: 100}, ""); n != 2 {
		t.Errorf("TaskCount(100) = %d", n)
	}
	if n := s.TaskCount(proxmox.Ref{}, "qmstart"); n != 3 {
		t.Errorf("TaskCount(qmstart) = %d", n)
	}
	if n := s.TaskCount(a, "qmstop"); n != 1 {
		t.Errorf("TaskCount(a, qmstop) = %d", n)
	}
}

func TestWaitIdleAndAwaitTask(t *testing.T) {
	s := Start(t, WithManualTasks())
	r := mustAdd(t, s, vm100(""))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.WaitIdle(ctx); err != nil {
		t.Fatalf("idle server: %v", err)
	}
	do(t, s, "POST", guestPath(r)+"/status/start", nil)
	if err := s.WaitIdle(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitIdle with a running manual task: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.WaitIdle(context.Background()) }()
	if n := s.FinishTasks(); n != 1 {
		t.Fatalf("FinishTasks = %d", n)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	tk, err := s.AwaitTask(context.Background(), func(tk Task) bool { return tk.Type == "qmstart" && !tk.Running })
	if err != nil || tk.ExitStatus != "OK" {
		t.Fatalf("AwaitTask: %+v %v", tk, err)
	}
	go func() { done <- s.WaitIdle(context.Background()) }()
	do(t, s, "POST", guestPath(r)+"/status/stop", nil)
	s.Close()
	if err := <-done; err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitIdle after Close: %v", err)
	}
	if _, err := s.AwaitTask(context.Background(), func(Task) bool { return false }); !errors.Is(err, ErrClosed) {
		t.Fatalf("AwaitTask after Close: %v", err)
	}
}
