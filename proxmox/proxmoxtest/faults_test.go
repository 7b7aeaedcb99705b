package proxmoxtest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
)

func TestStatusFaults(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	h := s.Inject(Fault{Method: "GET", Path: "/nodes/*/qemu/*/config", Status: 595, Message: "No route to host", Times: 1})
	rp := do(t, s, "GET", guestPath(r)+"/config", nil)
	if rp.Code != 595 || rp.Status != "No route to host" || len(rp.Raw) != 0 {
		t.Fatalf("595: %d %q %q", rp.Code, rp.Status, rp.Raw)
	}
	if rp := do(t, s, "GET", guestPath(r)+"/config", nil); rp.Code != 200 {
		t.Fatalf("one-shot fault fired twice: %d", rp.Code)
	}
	if h.Hits() != 1 {
		t.Fatalf("hits %d", h.Hits())
	}
	// A repeated fault with the default message, after letting one through.
	h = s.Inject(Fault{Path: "/version", Status: 503, Skip: 1})
	if rp := do(t, s, "GET", "/version", nil); rp.Code != 200 {
		t.Fatalf("skipped request: %d", rp.Code)
	}
	for i := 0; i < 3; i++ {
		rp := do(t, s, "GET", "/version", nil)
		if rp.Code != 503 || rp.Status != "Service Unavailable" || string(rp.Raw) != `{"data":null,"message":"Service Unavailable\n"}` {
			t.Fatalf("503: %d %q %s", rp.Code, rp.Status, rp.Raw)
		}
	}
	h.Remove()
	if rp := do(t, s, "GET", "/version", nil); rp.Code != 200 || h.Hits() != 3 {
		t.Fatalf("after Remove: %d, hits %d", rp.Code, h.Hits())
	}
	// The recorded lock-timeout answer.
	s.Inject(Fault{Method: "PUT", Guest: r, Status: 500, Message: "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"})
	rp = do(t, s, "PUT", guestPath(r)+"/config", form("cores", "3"))
	if rp.Code != 500 || rp.Status != "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout" {
		t.Fatalf("lock timeout: %d %q", rp.Code, rp.Status)
	}
	if mustGuest(t, s, r).Config["cores"] != "2" {
		t.Fatal("a faulted request was executed")
	}
	s.ClearFaults()
	if rp := do(t, s, "PUT", guestPath(r)+"/config", form("cores", "3")); rp.Code != 200 {
		t.Fatalf("after ClearFaults: %d", rp.Code)
	}
}

func TestFaultMatching(t *testing.T) {
	s := Start(t, WithNodes("a", "b"), WithManualTasks())
	r1 := mustAdd(t, s, vm100("a"))
	r2 := mustAdd(t, s, GuestSpec{Node: "b", Type: proxmox.LXC, VMID: 201, Config: map[string]string{"memory": "512"}})
	s.Inject(Fault{Guest: proxmox.Ref{VMID: 201}, Status: 500, Message: "ct only"})
	if rp := do(t, s, "GET", guestPath(r1)+"/config", nil); rp.Code != 200 {
		t.Fatalf("other guest affected: %d", rp.Code)
	}
	if rp := do(t, s, "GET", guestPath(r2)+"/status/current", nil); rp.Status != "ct only" {
		t.Fatalf("guest fault missed: %q", rp.Status)
	}
	if rp := do(t, s, "GET", "/nodes/b/lxc", nil); rp.Code != 200 {
		t.Fatalf("guest fault hit a node endpoint: %d", rp.Code)
	}
	// Task endpoints belong to the task's guest.
	s.ClearFaults()
	upid := do(t, s, "POST", guestPath(r1)+"/status/start", nil).data().(string)
	s.Inject(Fault{Guest: proxmox.Ref{Type: proxmox.QEMU}, Method: "GET", Status: 502, Message: "bad gateway"})
	if rp := do(t, s, "GET", "/nodes/a/tasks/"+upid+"/status", nil); rp.Code != 502 {
		t.Fatalf("task endpoint not matched to its guest: %d", rp.Code)
	}
}

func TestWaitGateAndBefore(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	arrived, release := make(chan struct{}), make(chan struct{})
	s.Inject(Fault{Path: guestPath(r) + "/config", Before: func() { close(arrived) }, Wait: release, Times: 1})
	res := make(chan reply, 1)
	go func() {
		rp, _ := tryDo(s, "GET", guestPath(r)+"/config", nil)
		res <- rp
	}()
	<-arrived
	select {
	case rp := <-res:
		t.Fatalf("request answered while gated: %d", rp.Code)
	default:
	}
	// The server keeps serving other requests meanwhile.
	if rp := do(t, s, "GET", "/version", nil); rp.Code != 200 {
		t.Fatal(rp.Code)
	}
	close(release)
	if rp := <-res; rp.Code != 200 {
		t.Fatalf("after release: %d", rp.Code)
	}
}

func TestGateReleasedWhenClientGivesUp(t *testing.T) {
	s := Start(t)
	arrived := make(chan struct{})
	s.Inject(Fault{Path: "/version", Before: func() { close(arrived) }, Wait: make(chan struct{}), Times: 1})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		req, _ := httpNewRequest(ctx, "GET", s.URL+APIPath+"/version")
		id, sec := s.APIToken()
		req.Header.Set("Authorization", "PVEAPIToken="+id+"="+sec)
		resp, err := s.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-arrived
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("canceled request succeeded")
	}
	// The handler must have given up too: Close would otherwise hang.
	s.Close()
}

func TestDropBeforeAndAfterHandling(t *testing.T) {
	s := Start(t, WithManualTasks())
	r := mustAdd(t, s, vm100(""))
	s.Inject(Fault{Path: guestPath(r) + "/status/start", Drop: DropBeforeHandling, Times: 1})
	if _, err := tryDo(s, "POST", guestPath(r)+"/status/start", nil); err == nil {
		t.Fatal("dropped request got an answer")
	}
	if n := s.TaskCount(r, "qmstart"); n != 0 {
		t.Fatalf("DropBeforeHandling started %d tasks", n)
	}
	s.Inject(Fault{Path: guestPath(r) + "/status/start", Drop: DropAfterHandling, Times: 1})
	if _, err := tryDo(s, "POST", guestPath(r)+"/status/start", nil); err == nil {
		t.Fatal("dropped request got an answer")
	}
	if n := s.TaskCount(r, "qmstart"); n != 1 {
		t.Fatalf("DropAfterHandling started %d tasks, want 1", n)
	}
	reqs := s.Requests()
	last := reqs[len(reqs)-1]
	if !last.Dropped || !last.Handled || last.Status != 0 {
		t.Fatalf("log entry %+v", last)
	}
	if first := reqs[len(reqs)-2]; !first.Dropped || first.Handled {
		t.Fatalf("log entry %+v", first)
	}
}

func TestTaskFaults(t *testing.T) {
	s := Start(t, WithManualTasks())
	r := mustAdd(t, s, vm100(""))
	s.Inject(Fault{Guest: r, Path: "/nodes/*/qemu/*/status/start", TaskError: "start failed: QEMU exited with code 1", Times: 1})
	tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil))
	if tk.ExitStatus != "start failed: QEMU exited with code 1" || mustGuest(t, s, r).Running {
		t.Fatalf("failing task: %+v", tk)
	}
	s.Inject(Fault{Guest: r, TaskWarnings: 2, Times: 1})
	tk = finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil))
	if tk.ExitStatus != "WARNINGS: 2" || !mustGuest(t, s, r).Running {
		t.Fatalf("warning task: %+v", tk)
	}
}

func TestLockAppearsBetweenRequestAndTask(t *testing.T) {
	s := Start(t, WithManualTasks())
	r := mustAdd(t, s, vm100(""))
	s.Inject(Fault{Path: guestPath(r) + "/status/start", After: func() { s.SetLock(r, "backup") }, Times: 1})
	tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil))
	if tk.ExitStatus != "VM is locked (backup)" {
		t.Fatalf("exit %q", tk.ExitStatus)
	}
	// And disappears again.
	s.Inject(Fault{Path: guestPath(r) + "/status/start", Before: func() { s.SetLock(r, "") }, Times: 1})
	if tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil)); tk.ExitStatus != "OK" {
		t.Fatalf("exit %q", tk.ExitStatus)
	}
}

func TestDigestRace(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, ct200(""))
	digest := getConfig(t, s, r, "")["digest"].(string)
	s.Inject(Fault{Method: "PUT", Path: guestPath(r) + "/config", Times: 1, Before: func() {
		if err := s.UpdateConfig(r, map[string]string{"description": "changed by someone else"}, nil); err != nil {
			t.Error(err)
		}
	}})
	rp := do(t, s, "PUT", guestPath(r)+"/config", form("cores", "2", "digest", digest))
	if rp.Code != 500 || rp.Status != "detected modified configuration - file changed by other user? Try again." {
		t.Fatalf("race: %d %q", rp.Code, rp.Status)
	}
	st := mustGuest(t, s, r)
	if st.Config["cores"] != "" || st.Config["description"] != "changed by someone else\n" {
		t.Fatalf("config %v", st.Config)
	}
}

func TestNodeOffline(t *testing.T) {
	s := Start(t, WithNodes("pve1", "pve2"))
	r := mustAdd(t, s, vm100("pve2"))
	put(t, s, r, "tags", "prod")
	if err := s.SetNodeOnline("pve2", false); err != nil {
		t.Fatal(err)
	}
	rp := do(t, s, "POST", guestPath(r)+"/status/start", nil)
	if rp.Code != 595 || rp.Status != "No route to host" || len(rp.Raw) != 0 {
		t.Fatalf("offline node: %d %q %q", rp.Code, rp.Status, rp.Raw)
	}
	if s.TaskCount(r, "") != 0 {
		t.Fatal("a request to an offline node was executed")
	}
	var entry map[string]any
	for _, e := range do(t, s, "GET", "/cluster/resources", nil).dataList(t) {
		switch e["id"] {
		case "qemu/100":
			entry = e
		case "node/pve2":
			if e["status"] != "offline" {
				t.Errorf("node entry %v", e)
			}
		}
	}
	if entry["status"] != "unknown" || entry["tags"] != "prod" || entry["name"] != nil || len(entry) != 6 {
		t.Fatalf("guest on an offline node: %v", entry)
	}
	s.SetNodeOnline("pve2", true)
	if rp := do(t, s, "GET", guestPath(r)+"/status/current", nil); rp.Code != 200 {
		t.Fatalf("back online: %d", rp.Code)
	}
	if err := s.SetNodeOnline("nope", true); err == nil {
		t.Fatal("unknown node accepted")
	}
}

func TestStaleResources(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	s.SetResourcesStale(true)
	s.SetRunning(r, true)
	statusOf := func(q string) any {
		for _, e := range do(t, s, "GET", "/cluster/resources"+q, nil).dataList(t) {
			if e["id"] == "qemu/100" {
				return e["status"]
			}
		}
		return nil
	}
	if got := statusOf("?type=vm"); got != "stopped" {
		t.Fatalf("stale view: %v", got)
	}
	if got := do(t, s, "GET", guestPath(r)+"/status/current", nil).dataMap(t)["status"]; got != "running" {
		t.Fatalf("status/current must be live: %v", got)
	}
	s.SetResourcesStale(false)
	if got := statusOf(""); got != "running" {
		t.Fatalf("fresh view: %v", got)
	}
}

func TestConcurrentFaultsAndRequests(t *testing.T) {
	s := Start(t, WithTaskDuration(0))
	for i := 0; i < 8; i++ {
		mustAdd(t, s, GuestSpec{Type: proxmox.QEMU, VMID: 100 + i, Config: map[string]string{"cores": "1"}})
	}
	h := s.Inject(Fault{Method: "PUT", Status: 503, Times: 10})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := qemu("pve", 100+i)
			for j := 0; j < 10; j++ {
				_, _ = tryDo(s, "PUT", guestPath(r)+"/config", form("cores", itoa(j%4+1)))
				_, _ = tryDo(s, "POST", guestPath(r)+"/status/start", nil)
				_, _ = tryDo(s, "GET", guestPath(r)+"/pending", nil)
				_ = s.Tasks()
				_, _ = s.Guest(r)
			}
		}(i)
	}
	wg.Wait()
	waitIdle(t, s)
	if h.Hits() != 10 {
		t.Fatalf("fault hits %d, want 10", h.Hits())
	}
	if n := len(s.Requests()); n != 240 {
		t.Fatalf("%d requests logged, want 240", n)
	}
}

func TestFaultDelayIsRealTime(t *testing.T) {
	s := Start(t)
	s.Inject(Fault{Path: "/version", Delay: 20 * time.Millisecond})
	start := time.Now()
	do(t, s, "GET", "/version", nil)
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("delay not applied")
	}
}
