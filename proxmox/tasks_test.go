package proxmox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// taskScript serves a task's status from a script of answers; the last
// one repeats.
func taskScript(t *testing.T, s *srv, upid UPID, steps ...func(http.ResponseWriter)) *atomic.Int32 {
	t.Helper()
	info, err := ParseUPID(string(upid))
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	s.handle("GET /nodes/"+info.Node+"/tasks/"+string(upid)+"/status", func(w http.ResponseWriter, r *http.Request) {
		i := min(int(n.Add(1))-1, len(steps)-1)
		steps[i](w)
	})
	return &n
}

func taskAnswer(upid UPID, status, exit string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		info, _ := ParseUPID(string(upid))
		d := map[string]any{"upid": upid, "node": info.Node, "pid": info.PID, "pstart": info.PStart,
			"starttime": info.StartTime.Unix(), "type": info.Type, "id": info.ID, "user": "guestward@pve",
			"tokenid": "ci", "status": status}
		if status == "stopped" {
			d["exitstatus"] = exit
		}
		reply(w, d)
	}
}

func noSuchTask(w http.ResponseWriter) {
	rawReply(w, 400, "Parameter verification failed.", `{"data":null,"errors":{"upid":"no such task"}}`)
}

func TestWaitTask(t *testing.T) {
	running := taskAnswer(testUPID, "running", "")
	tests := []struct {
		name     string
		steps    []func(http.ResponseWriter)
		opts     []Option
		polls    int32
		wantErr  []error
		warnings int
	}{
		{"ok after running", []func(http.ResponseWriter){running, running, taskAnswer(testUPID, "stopped", "OK")}, nil, 3, nil, 0},
		{"warnings are success", []func(http.ResponseWriter){taskAnswer(testUPID, "stopped", "WARNINGS: 3")}, nil, 1, nil, 3},
		{"no such task right after creation", []func(http.ResponseWriter){noSuchTask, noSuchTask, running, taskAnswer(testUPID, "stopped", "OK")},
			[]Option{WithTaskNotFoundGrace(time.Hour)}, 4, nil, 0},
		{"no such task beyond the grace", []func(http.ResponseWriter){noSuchTask}, []Option{WithTaskNotFoundGrace(0)}, 1, []error{ErrNotFound}, 0},
		{"locked", []func(http.ResponseWriter){running, taskAnswer(testUPID, "stopped", "VM is locked (backup)")}, nil, 2,
			[]error{ErrTaskFailed, ErrLocked}, 0},
		{"already running", []func(http.ResponseWriter){taskAnswer(testUPID, "stopped", "VM 100 already running")}, nil, 1,
			[]error{ErrTaskFailed, ErrAlreadyRunning}, 0},
		{"transient status errors do not end the wait", []func(http.ResponseWriter){
			func(w http.ResponseWriter) { rawReply(w, 595, "No route to host", "") },
			func(w http.ResponseWriter) { rawReply(w, 503, "Service Unavailable", "") },
			taskAnswer(testUPID, "stopped", "OK")},
			[]Option{WithRetry(0, 0, 0)}, 3, nil, 0},
		{"forbidden ends the wait", []func(http.ResponseWriter){
			func(w http.ResponseWriter) { rawReply(w, 403, "Permission check failed (/nodes/pve1, Sys.Audit)", "") }},
			nil, 1, []error{ErrForbidden}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSrv(t)
			n := taskScript(t, s, testUPID, tt.steps...)
			st, err := s.tokenClient(t, tt.opts...).WaitTask(context.Background(), testUPID)
			if got := n.Load(); got != tt.polls {
				t.Errorf("%d polls, want %d", got, tt.polls)
			}
			if tt.wantErr != nil {
				wantErr(t, err, tt.wantErr...)
				return
			}
			if err != nil {
				t.Fatal(checkErr(t, err))
			}
			if !st.Succeeded() || st.Warnings() != tt.warnings || st.UPID != testUPID || st.TokenID != "ci" || st.User != "guestward@pve" {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

// TestWaitTaskHonoursContext: the wait stops when ctx ends, returning the
// last status seen.
func TestWaitTaskHonoursContext(t *testing.T) {
	s := newSrv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n atomic.Int32
	s.handle("GET /nodes/pve1/tasks/"+string(testUPID)+"/status", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 3 {
			cancel()
		}
		taskAnswer(testUPID, "running", "")(w)
	})
	st, err := s.tokenClient(t, WithTaskPolling(time.Millisecond, time.Millisecond)).WaitTask(ctx, testUPID)
	wantErr(t, err, context.Canceled)
	if st.Status != "running" || st.UPID != testUPID {
		t.Fatalf("last status = %+v", st)
	}
}

// taskListServer pages a task list the way PVE's node_tasks does: one
// count over running tasks first, then finished ones, skipping "start"
// matches, returning "limit", with "total" the number of matches.
func taskListServer(t *testing.T, s *srv, list func(call int) []map[string]any) *[]url.Values {
	var queries []url.Values
	s.handle("GET /nodes/pve1/tasks", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		queries = append(queries, q)
		all := list(len(queries))
		start, _ := strconv.Atoi(q.Get("start"))
		limit, _ := strconv.Atoi(q.Get("limit"))
		page := all[min(start, len(all)):min(start+limit, len(all))]
		b, _ := json.Marshal(map[string]any{"data": page, "total": len(all)})
		replyRaw(w, string(b))
	})
	return &queries
}

func finishedTask(i int) map[string]any {
	upid := fmt.Sprintf("UPID:pve1:%08X:%08X:%08X:qmstart:100:root@pam:", i+1, 1, 1700000000+i)
	return map[string]any{"upid": upid, "node": "pve1", "status": "OK", "endtime": 1700000001 + i,
		"starttime": 1700000000 + i, "type": "qmstart", "id": "100", "pid": i + 1, "pstart": 1, "user": "root@pam"}
}

func TestTasksFilterAndPaging(t *testing.T) {
	s := newSrv(t)
	const finished = 1234
	// Every task starts within the filter's hour: the client checks.
	running := fmt.Sprintf("UPID:pve1:%08X:%08X:%08X:qmstart:100:root@pam:", 99999, 1, 1700002000)
	queries := taskListServer(t, s, func(int) []map[string]any {
		all := []map[string]any{{"upid": running, "node": "pve1", "status": "RUNNING", "starttime": 1700002000, "type": "qmstart", "id": "100"}}
		for i := finished - 1; i >= 0; i-- {
			all = append(all, finishedTask(i))
		}
		return all
	})
	c := s.tokenClient(t)
	since := time.Unix(1700000000, 999_000_000)
	got, err := c.Tasks(context.Background(), "pve1", TaskFilter{VMID: 100, Type: "qmstart", Since: since, Until: since.Add(time.Hour), User: "root@pam", ErrorsOnly: true})
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	if len(got) != finished+1 {
		t.Fatalf("got %d tasks, want %d", len(got), finished+1)
	}
	if !got[0].Running || got[0].ExitStatus != "" || got[0].UPID != UPID(running) {
		t.Fatalf("running task = %+v", got[0])
	}
	if got[1].Running || !got[1].Succeeded() || got[1].EndTime.IsZero() || got[1].StartTime.Unix() != 1700000000+finished-1 {
		t.Fatalf("newest finished task = %+v", got[1])
	}
	q := (*queries)[0]
	want := map[string]string{"source": "all", "vmid": "100", "typefilter": "qmstart", "since": "1700000000",
		"until": "1700003600", "userfilter": "root@pam", "errors": "1", "start": "0", "limit": "500"}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("query %s = %q, want %q", k, q.Get(k), v)
		}
	}
	if len(*queries) != 3 {
		t.Fatalf("%d pages, want 3", len(*queries))
	}
	for i, q := range *queries {
		if q.Get("start") != strconv.Itoa(i*500) {
			t.Errorf("page %d start = %s", i, q.Get("start"))
		}
	}

	*queries = nil
	got, err = c.Tasks(context.Background(), "pve1", TaskFilter{Limit: 10})
	if err != nil || len(got) != 10 || len(*queries) != 1 || (*queries)[0].Get("limit") != "10" {
		t.Fatalf("Limit 10: %d tasks, %d pages, %v", len(got), len(*queries), err)
	}
}

// TestTasksListShiftsBetweenPages: a task started between two page reads
// pushes the list down by one; the repeated entry is dropped.
func TestTasksListShiftsBetweenPages(t *testing.T) {
	s := newSrv(t)
	taskListServer(t, s, func(call int) []map[string]any {
		n := 600 + call // one more task on every read
		var all []map[string]any
		for i := n - 1; i >= 0; i-- {
			all = append(all, finishedTask(i))
		}
		return all
	})
	got, err := s.tokenClient(t).Tasks(context.Background(), "pve1", TaskFilter{})
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	seen := map[UPID]bool{}
	for _, ti := range got {
		if seen[ti.UPID] {
			t.Fatalf("duplicate %s", ti.UPID)
		}
		seen[ti.UPID] = true
	}
	if len(got) != 601 {
		t.Fatalf("got %d tasks, want the 601 of the first read", len(got))
	}
}

func TestStatusAndVersion(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /nodes/pve1/lxc/200/status/current", func(w http.ResponseWriter, r *http.Request) {
		replyRaw(w, `{"data":{"vmid":200,"status":"stopped","name":"ct","lock":"backup","tags":"a;b","ha":{"managed":1,"state":"started","group":"g"},"template":"1"}}`)
	})
	s.handle("GET /version", func(w http.ResponseWriter, r *http.Request) {
		replyRaw(w, `{"data":{"version":"8.1.4","release":"8.1","repoid":"ec5affc9e41f1d79","console":"html5"}}`)
	})
	s.handle("GET /nodes/pve1/qemu/100/status/current", func(w http.ResponseWriter, r *http.Request) {
		rawReply(w, 500, "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist", `{"data":null}`)
	})
	c := s.tokenClient(t)
	ctx := context.Background()
	st, err := c.Status(ctx, testLXCRef)
	if err != nil || st.Running() || st.Lock != "backup" || !st.HAManaged || st.HAState != "started" || !st.Template || len(st.Tags) != 2 {
		t.Fatalf("Status = %+v, %v", st, checkErr(t, err))
	}
	v, err := c.Version(ctx)
	if err != nil || v != (VersionInfo{Version: "8.1.4", Release: "8.1", RepoID: "ec5affc9e41f1d79"}) {
		t.Fatalf("Version = %+v, %v", v, err)
	}
	_, err = c.Status(ctx, testRef)
	wantErr(t, err, ErrNotFound)
}

func TestPending(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /nodes/pve1/qemu/100/pending", func(w http.ResponseWriter, r *http.Request) {
		replyRaw(w, `{"data":[{"key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"},
			{"key":"cores","value":2,"pending":4},{"key":"memory","value":"2048"},
			{"key":"net1","value":"virtio=BC:24:11:2E:C5:4A,bridge=vmbr1","delete":1},
			{"key":"tablet","value":1,"delete":2},{"key":"onboot","pending":1}]}`)
	})
	got, err := s.tokenClient(t).Pending(context.Background(), testRef)
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	want := []PendingItem{
		{Key: "cores", Value: "2", HasValue: true, Pending: "4", HasPending: true},
		{Key: "memory", Value: "2048", HasValue: true},
		{Key: "net1", Value: "virtio=BC:24:11:2E:C5:4A,bridge=vmbr1", HasValue: true, Delete: true},
		{Key: "onboot", Pending: "1", HasPending: true},
		{Key: "tablet", Value: "1", HasValue: true, Delete: true, Force: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("item %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if got[1].IsPending() || !got[0].IsPending() || !got[2].IsPending() || !got[3].IsPending() {
		t.Error("IsPending wrong")
	}
}

func TestGuestsRejectsMalformedEntries(t *testing.T) {
	for _, body := range []string{
		`{"data":[{"id":"qemu/100","type":"qemu","vmid":100,"node":"bad node"}]}`,
		`{"data":[{"id":"qemu/5","type":"qemu","vmid":5,"node":"pve"}]}`,
		`{"data":[{"id":"qemu/100","type":"qemu","vmid":"x","node":"pve"}]}`,
		`{"data":{"not":"a list"}}`,
	} {
		s := newSrv(t)
		s.handle("GET /cluster/resources", func(w http.ResponseWriter, r *http.Request) { replyRaw(w, body) })
		_, err := s.tokenClient(t).Guests(context.Background())
		if !errors.Is(err, ErrUnexpectedResponse) {
			t.Errorf("%s: %v, want ErrUnexpectedResponse", body, err)
		}
		checkErr(t, err)
	}
	// Just created: no RRD data, only id/vmid/node/type/status, as
	// pve-manager's API2/Cluster.pm resources lists a guest pvestatd has
	// not reported on yet.
	s := newSrv(t)
	s.handle("GET /cluster/resources", func(w http.ResponseWriter, r *http.Request) {
		replyRaw(w, `{"data":[{"id":"lxc/300","vmid":300,"node":"pve2","type":"lxc","status":"unknown","tags":"x;y","lock":"create"},
			{"id":"qemu/120","vmid":"120","node":"pve1","type":"qemu","status":"running","template":"0","name":"web","pool":"p","hastate":"started"}]}`)
	})
	got, err := s.tokenClient(t).Guests(context.Background())
	if err != nil || len(got) != 2 {
		t.Fatalf("Guests = %+v, %v", got, err)
	}
	if got[0].Ref != (Ref{"pve1", QEMU, 120}) || got[0].Pool != "p" || got[0].HAState != "started" || got[0].Name != "web" {
		t.Errorf("first = %+v", got[0])
	}
	if got[1].Ref != (Ref{"pve2", LXC, 300}) || got[1].Status != "unknown" || got[1].Lock != "create" || len(got[1].Tags) != 2 {
		t.Errorf("second = %+v", got[1])
	}
}
