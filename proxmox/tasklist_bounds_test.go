package proxmox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// nodeTask is one task as a test node holds it.
type nodeTask struct {
	info    UPIDInfo
	running bool
	exit    string
}

// nodeTaskList serves tasks the way pve-manager's node_tasks does: running
// tasks first, oldest first, with the user as the UPID has it; then
// finished ones, newest first, with a token's name split off into
// "tokenid"; userfilter matched, ignoring case, against the user as
// listed; "total" the count of matches, left out when 0.
func nodeTaskList(s *srv, node string, tasks []nodeTask) {
	s.handle("GET /nodes/"+node+"/tasks", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		start, _ := strconv.Atoi(q.Get("start"))
		limit, _ := strconv.Atoi(q.Get("limit"))
		since, _ := strconv.ParseInt(q.Get("since"), 10, 64)
		var all []map[string]any
		add := func(t nodeTask) {
			m := map[string]any{"upid": string(t.info.Format()), "node": t.info.Node, "starttime": t.info.StartTime.Unix(),
				"type": t.info.Type, "id": t.info.ID, "user": t.info.User}
			if t.running {
				m["status"] = "RUNNING"
			} else {
				user, token := splitTaskUser(t.info.User)
				m["user"], m["status"], m["endtime"] = user, t.exit, t.info.StartTime.Unix()+1
				if token != "" {
					m["tokenid"] = token
				}
			}
			if uf := q.Get("userfilter"); uf != "" && !strings.Contains(strings.ToLower(m["user"].(string)), strings.ToLower(uf)) {
				return
			}
			if v := q.Get("vmid"); v != "" && t.info.ID != v {
				return
			}
			if tf := q.Get("typefilter"); tf != "" && t.info.Type != tf {
				return
			}
			if q.Has("since") && t.info.StartTime.Unix() < since {
				return
			}
			all = append(all, m)
		}
		for _, t := range tasks {
			if t.running {
				add(t)
			}
		}
		for i := len(tasks) - 1; i >= 0; i-- {
			if !tasks[i].running {
				add(tasks[i])
			}
		}
		env := map[string]any{"data": all[min(start, len(all)):min(start+limit, len(all))]}
		if len(all) > 0 {
			env["total"] = len(all)
		}
		b, _ := json.Marshal(env)
		replyRaw(w, string(b))
	})
}

func testTask(i int, user string, running bool) nodeTask {
	info := UPIDInfo{Node: "pve1", PID: 1000 + i, PStart: 1, StartTime: testUPIDTime(1700000000 + int64(i)), Type: "qmstart", ID: "100", User: user}
	exit := "OK"
	if running {
		exit = ""
	}
	return nodeTask{info: info, running: running, exit: exit}
}

// TestTasksFindATokensFinishedTasks: a real node matches userfilter
// against a finished token task's user with the token's name split off,
// so the full token id, sent as it is, finds only running tasks. The
// client must find the token's finished tasks too, and no other token's.
func TestTasksFindATokensFinishedTasks(t *testing.T) {
	s := newSrv(t)
	nodeTaskList(s, "pve1", []nodeTask{
		testTask(0, "guestward@pve!ci", false),
		testTask(1, "guestward@pve!other", false),
		testTask(2, "guestward@pve", false),
		testTask(3, "root@pam", false),
		testTask(4, "guestward@pve!ci", true),
		testTask(5, "guestward@pve!other", true),
	})
	c := s.tokenClient(t)
	for _, tc := range []struct {
		user string
		want []int
	}{
		{"guestward@pve!ci", []int{4, 0}},
		{"GUESTWARD@pve!CI", []int{4, 0}},
		{"guestward@pve", []int{4, 5, 2, 1, 0}},
		{"ci", []int{4, 0}},
		{"pve!other", []int{5, 1}},
	} {
		got, err := c.Tasks(context.Background(), "pve1", TaskFilter{User: tc.user})
		if err != nil {
			t.Fatal(checkErr(t, err))
		}
		var pids []int
		for _, ti := range got {
			pids = append(pids, ti.PID-1000)
		}
		if fmt.Sprint(pids) != fmt.Sprint(tc.want) {
			t.Errorf("User %q: tasks %v, want %v", tc.user, pids, tc.want)
		}
	}
}

// TestTasksEndlessList: a list that never ends (no total, every page full
// of new tasks) is refused after a bounded number of pages instead of
// being read until the context ends.
func TestTasksEndlessList(t *testing.T) {
	s := newSrv(t)
	var (
		mu    sync.Mutex
		pages int
	)
	s.handle("GET /nodes/pve1/tasks", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		pages++
		n := pages
		mu.Unlock()
		start, _ := strconv.Atoi(r.URL.Query().Get("start"))
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		var page []map[string]any
		if n <= 200 { // a witness for the old code, which reads on
			for i := start; i < start+limit; i++ {
				page = append(page, finishedTask(i))
			}
		}
		b, _ := json.Marshal(map[string]any{"data": page})
		replyRaw(w, string(b))
	})
	got, err := s.tokenClient(t).Tasks(context.Background(), "pve1", TaskFilter{})
	wantErr(t, err, ErrUnexpectedResponse)
	if got != nil {
		t.Errorf("got %d tasks with the error", len(got))
	}
	if max := maxTaskEntries/taskPage + 1; pages > max {
		t.Errorf("read %d pages, want at most %d", pages, max)
	}
}

// TestTasksTotalBeyondBound: a first page whose total says the list is
// longer than the bound ends the call at once.
func TestTasksTotalBeyondBound(t *testing.T) {
	s := newSrv(t)
	queries := taskListServer(t, s, func(int) []map[string]any {
		all := make([]map[string]any, 0, maxTaskEntries+1)
		for i := maxTaskEntries; i >= 0; i-- {
			all = append(all, finishedTask(i))
		}
		return all
	})
	_, err := s.tokenClient(t).Tasks(context.Background(), "pve1", TaskFilter{})
	wantErr(t, err, ErrUnexpectedResponse)
	if len(*queries) != 1 {
		t.Errorf("%d pages read, want 1", len(*queries))
	}
	// A limit within the bound reads what it asks for.
	*queries = nil
	got, err := s.tokenClient(t).Tasks(context.Background(), "pve1", TaskFilter{Limit: 3})
	if err != nil || len(got) != 3 {
		t.Fatalf("Limit 3: %d tasks, %v", len(got), checkErr(t, err))
	}
}

// TestTasksPageLongerThanAsked: Proxmox never returns more entries than
// "limit"; a page that does is refused before it is decoded whole.
func TestTasksPageLongerThanAsked(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /nodes/pve1/tasks", func(w http.ResponseWriter, r *http.Request) {
		var page []map[string]any
		for i := range taskPage + 1 {
			page = append(page, finishedTask(i))
		}
		b, _ := json.Marshal(map[string]any{"data": page, "total": len(page)})
		replyRaw(w, string(b))
	})
	_, err := s.tokenClient(t).Tasks(context.Background(), "pve1", TaskFilter{})
	wantErr(t, err, ErrUnexpectedResponse)
}

// TestTasksFilterCheckedByClient: a server that ignores the filter cannot
// widen the list: tasks of other guests, types, or from before Since or
// after Until are dropped.
func TestTasksFilterCheckedByClient(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /nodes/pve1/tasks", func(w http.ResponseWriter, r *http.Request) {
		page := []map[string]any{finishedTask(50), finishedTask(10), finishedTask(5)}
		other := finishedTask(20)
		other["upid"] = fmt.Sprintf("UPID:pve1:%08X:%08X:%08X:qmstop:101:root@pam:", 21, 1, 1700000020)
		page = append(page, other)
		b, _ := json.Marshal(map[string]any{"data": page, "total": len(page)})
		replyRaw(w, string(b))
	})
	got, err := s.tokenClient(t).Tasks(context.Background(), "pve1", TaskFilter{
		VMID: 100, Type: "qmstart", Since: testUPIDTime(1700000008), Until: testUPIDTime(1700000040)})
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	if len(got) != 1 || got[0].StartTime.Unix() != 1700000010 {
		t.Fatalf("got %+v, want the task that started at 1700000010 only", got)
	}
}

// TestTaskExitStatusRedacted: a failed task's exit status that echoes the
// request's credentials reaches TaskStatus, TaskError and TaskInfo with
// the secret redacted, since callers put it into errors and journals.
func TestTaskExitStatusRedacted(t *testing.T) {
	echo := "unexpected header 'Authorization: PVEAPIToken=" + testTokenID + "=" + testSecret + "'"
	s := newSrv(t)
	taskScript(t, s, testUPID, taskAnswer(testUPID, "stopped", echo))
	s.handle("GET /nodes/pve1/tasks", func(w http.ResponseWriter, r *http.Request) {
		m := finishedTask(0)
		m["status"] = echo
		b, _ := json.Marshal(map[string]any{"data": []any{m}, "total": 1})
		replyRaw(w, string(b))
	})
	c := s.tokenClient(t)
	ctx := context.Background()

	st, err := c.TaskStatus(ctx, testUPID)
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	assertNoSecret(t, "TaskStatus.ExitStatus", st.ExitStatus)
	if !strings.Contains(st.ExitStatus, redacted) {
		t.Errorf("exit status %q: secret not marked as redacted", st.ExitStatus)
	}

	_, err = c.WaitTask(ctx, testUPID)
	var te *TaskError
	if !errors.As(err, &te) {
		t.Fatalf("WaitTask: %v, want a TaskError", err)
	}
	wantErr(t, err, ErrTaskFailed)
	assertNoSecret(t, "TaskError.ExitStatus", te.ExitStatus)

	list, err := c.Tasks(ctx, "pve1", TaskFilter{})
	if err != nil || len(list) != 1 {
		t.Fatalf("Tasks: %v %v", list, checkErr(t, err))
	}
	assertNoSecret(t, "TaskInfo.ExitStatus", list[0].ExitStatus)
}

func testUPIDTime(sec int64) time.Time { return time.Unix(sec, 0).UTC() }
