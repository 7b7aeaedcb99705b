package proxmoxtest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// Task is a snapshot of one task, as the fake server holds it. It is a
// copy: reading it is safe from any goroutine and it does not change when
// the task does.
type Task struct {
	UPID       proxmox.UPID
	Node       string
	Type       string      // "qmstart", "vzstop", "qmconfig", ...
	ID         string      // the task's object id, here always the vmid
	User       string      // the auth id that started it ("root@pam!guestward")
	Guest      proxmox.Ref // the guest the task acts on
	Running    bool
	ExitStatus string // "" while running; "OK", "WARNINGS: n" or the error text
	Log        []string
	Start, End time.Time
}

// task is the live record. Guarded by Server.mu.
type task struct {
	upid    proxmox.UPID
	info    proxmox.UPIDInfo
	guest   proxmox.Ref
	running bool
	exit    string
	log     []string
	start   time.Time
	end     time.Time
	hidden  int // status/log requests still to answer as "no such task"
	timer   *time.Timer

	// work does the task's job when it finishes; it runs under Server.mu and
	// returns log lines, the number of warnings and the error that fails the
	// task.
	work          func() (log []string, warnings int, err error)
	failWith      string
	extraWarnings int
}

func (t *task) snapshot() Task {
	return Task{
		UPID: t.upid, Node: t.info.Node, Type: t.info.Type, ID: t.info.ID, User: t.info.User,
		Guest: t.guest, Running: t.running, ExitStatus: t.exit,
		Log: append([]string(nil), t.log...), Start: t.start, End: t.end,
	}
}

// startTask registers and schedules a task the request c starts, as c's
// user, with c's fault applied. Called with s.mu held.
func (s *Server) startTask(c *call, typ string, g proxmox.Ref, work func() ([]string, int, error)) *task {
	return s.startTaskAs(c.who.id, c.fault, typ, g, work)
}

// startTaskAs registers and schedules a task started by user (a request's
// auth id, or "root@pam" for Proxmox's own daemons), applying f's task
// effects when f is not nil. Called with s.mu held.
func (s *Server) startTaskAs(user string, f *Fault, typ string, g proxmox.Ref, work func() ([]string, int, error)) *task {
	now := s.now().Truncate(time.Second)
	info := proxmox.UPIDInfo{
		Node:      g.Node,
		PID:       s.seqPID(),
		PStart:    s.pstart(now),
		StartTime: now,
		Type:      typ,
		ID:        fmt.Sprint(g.VMID),
		User:      user,
	}
	t := &task{
		upid:    info.Format(),
		info:    info,
		guest:   g,
		running: true,
		start:   now,
		hidden:  s.cfg.hiddenPolls,
		work:    work,
	}
	if f != nil {
		t.failWith = f.TaskError
		t.extraWarnings = f.TaskWarnings
	}
	s.tasks = append(s.tasks, t)
	s.taskByUPID[t.upid] = t
	s.log.Debug("proxmoxtest: task started", "upid", string(t.upid))
	if !s.cfg.manualTasks && !s.closed {
		s.timers.Add(1)
		t.timer = time.AfterFunc(s.cfg.taskDuration, func() {
			defer s.timers.Done()
			s.mu.Lock()
			t.timer = nil
			s.finishTaskLocked(t)
			s.mu.Unlock()
		})
	}
	s.notifyLocked()
	return t
}

// finishTaskLocked runs the task's work and records its end. Called with
// s.mu held; does nothing for a task that already stopped.
func (s *Server) finishTaskLocked(t *task) {
	if !t.running {
		return
	}
	var (
		lines []string
		warns int
		err   error
	)
	if t.failWith != "" {
		err = errors.New(t.failWith)
	} else {
		lines, warns, err = t.work()
	}
	for i := 0; i < t.extraWarnings; i++ {
		lines = append(lines, fmt.Sprintf("WARN: injected warning %d", i+1))
	}
	warns += t.extraWarnings
	t.log = append(t.log, lines...)
	switch {
	case err != nil:
		msg := strings.ReplaceAll(strings.TrimRight(err.Error(), "\n"), "\n", " ")
		t.log = append(t.log, "TASK ERROR: "+msg)
		t.exit = msg
	case warns > 0:
		t.log = append(t.log, fmt.Sprintf("TASK WARNINGS: %d", warns))
		t.exit = fmt.Sprintf("WARNINGS: %d", warns)
	default:
		t.log = append(t.log, "TASK OK")
		t.exit = "OK"
	}
	t.running = false
	t.end = s.now()
	if t.end.Before(t.start) {
		t.end = t.start
	}
	s.log.Debug("proxmoxtest: task finished", "upid", string(t.upid), "exitstatus", t.exit)
	s.notifyLocked()
}

// interruptTaskLocked stops a running task as a SIGTERM to its worker does.
func (s *Server) interruptTaskLocked(t *task) {
	if !t.running {
		return
	}
	if t.timer != nil && t.timer.Stop() {
		s.timers.Done()
	}
	t.timer = nil
	t.failWith = "received interrupt"
	s.finishTaskLocked(t)
}

// Tasks returns a snapshot of every task the server has started, oldest
// first.
func (s *Server) Tasks() []Task {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Task, len(s.tasks))
	for i, t := range s.tasks {
		out[i] = t.snapshot()
	}
	return out
}

// Task returns a snapshot of the task with the given UPID.
func (s *Server) Task(upid proxmox.UPID) (Task, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.taskByUPID[upid]
	if !ok {
		return Task{}, false
	}
	return t.snapshot(), true
}

// TaskCount counts the tasks started for guest whose type is taskType
// ("qmstart", "vzstop", ...; "" counts every type). Zero fields of guest
// are wildcards: proxmox.Ref{VMID: 100} counts tasks for vmid 100 on any
// node. It is how a test proves an operation ran at most once.
func (s *Server) TaskCount(guest proxmox.Ref, taskType string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.tasks {
		if refMatches(guest, t.guest) && (taskType == "" || t.info.Type == taskType) {
			n++
		}
	}
	return n
}

// FinishTask makes a running task do its work and stop now, whatever the
// task mode. It returns an error if no such task exists or it already
// stopped.
func (s *Server) FinishTask(upid proxmox.UPID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.taskByUPID[upid]
	if !ok {
		return fmt.Errorf("proxmoxtest: no task %s", upid)
	}
	if !t.running {
		return fmt.Errorf("proxmoxtest: task %s already stopped (%s)", upid, t.exit)
	}
	if t.timer != nil && t.timer.Stop() {
		s.timers.Done()
	}
	t.timer = nil
	s.finishTaskLocked(t)
	return nil
}

// FinishTasks finishes every running task, oldest first, and returns how
// many it finished.
func (s *Server) FinishTasks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.tasks {
		if t.running {
			if t.timer != nil && t.timer.Stop() {
				s.timers.Done()
			}
			t.timer = nil
			s.finishTaskLocked(t)
			n++
		}
	}
	return n
}

// WaitIdle blocks until no task is running, ctx ends (returning ctx.Err())
// or the server closes (returning [ErrClosed]). With [WithManualTasks] only
// [Server.FinishTask] and [Server.FinishTasks] make it return.
func (s *Server) WaitIdle(ctx context.Context) error {
	return s.waitFor(ctx, func() bool {
		for _, t := range s.tasks {
			if t.running {
				return false
			}
		}
		return true
	})
}

// AwaitTask blocks until a task for which match returns true exists (it may
// have been started before the call) and returns a snapshot of the first
// such task. match runs with the server's lock held and must not call
// Server methods. It returns ctx.Err() or [ErrClosed] if it gives up.
func (s *Server) AwaitTask(ctx context.Context, match func(Task) bool) (Task, error) {
	var found Task
	err := s.waitFor(ctx, func() bool {
		for _, t := range s.tasks {
			if snap := t.snapshot(); match(snap) {
				found = snap
				return true
			}
		}
		return false
	})
	return found, err
}

// taskFields are the fields read_task_status and the task list share
// (upid_decode's output). With split, a token task reports the user and
// the token name separately, as pve-manager's $convert_token_task makes
// it: read_task_status always does, the task list only for finished
// tasks (node_tasks converts archive lines, not the active list).
func taskFields(t *task, split bool) map[string]any {
	m := map[string]any{
		"upid":      string(t.upid),
		"node":      t.info.Node,
		"pid":       t.info.PID,
		"pstart":    t.info.PStart,
		"starttime": t.info.StartTime.Unix(),
		"type":      t.info.Type,
		"id":        t.info.ID,
		"user":      t.info.User,
	}
	if user, token := splitTokenID(t.info.User); split && token != "" {
		m["user"] = user
		m["tokenid"] = token
	}
	return m
}

// splitTokenID is PVE::AccessControl::split_tokenid for a task's user:
// "user@realm!name" splits into the user and the token name (realm and
// token name contain neither '@' nor '!'); a plain user id has no token.
func splitTokenID(id string) (user, token string) {
	at := strings.LastIndexByte(id, '@')
	if at < 0 {
		return id, ""
	}
	if i := strings.IndexByte(id[at:], '!'); i > 0 {
		return id[:at+i], id[at+i+1:]
	}
	return id, ""
}

// statusClass is upid_normalize_status_type.
func statusClass(exit string, running bool) string {
	switch {
	case running || exit == "":
		return "unknown"
	case exit == "OK":
		return "ok"
	case strings.HasPrefix(exit, "WARNINGS: "):
		return "warning"
	default:
		return "error"
	}
}

// listTasksLocked implements GET /nodes/{node}/tasks, as pve-manager's
// node_tasks (PVE::API2::Tasks) does: running tasks, then finished ones;
// filters applied in its order; the count of every match returned for
// "total".
func (s *Server) listTasksLocked(nodeName string, p map[string]string) ([]map[string]any, int) {
	start := atoiDefault(p["start"], 0)
	limit := atoiDefault(p["limit"], 50)
	source := p["source"]
	if source == "" {
		source = "archive"
	}
	errorsOnly := p["errors"] == "1"
	statusFilter := map[string]bool{"ok": true, "warning": true, "error": true, "unknown": true}
	if sf, ok := p["statusfilter"]; ok && !errorsOnly {
		statusFilter = map[string]bool{}
		for _, f := range splitList(sf) {
			statusFilter[strings.ToLower(f)] = true
		}
	} else if errorsOnly {
		statusFilter["ok"] = false
	}
	count := 0
	var out []map[string]any
	filter := func(t *task) bool {
		// node_tasks matches userfilter, case-insensitively, as a
		// substring of the user it reports: a finished token task's user
		// has lost its token name by then, a running one's has not.
		user := t.info.User
		if !t.running {
			user, _ = splitTokenID(user)
		}
		if uf := p["userfilter"]; uf != "" && !strings.Contains(strings.ToLower(user), strings.ToLower(uf)) {
			return false
		}
		if tf := p["typefilter"]; tf != "" && t.info.Type != tf {
			return false
		}
		if v := p["vmid"]; v != "" && t.info.ID != v {
			return false
		}
		if v, ok := p["since"]; ok && t.info.StartTime.Unix() < int64(atoiDefault(v, 0)) {
			return false
		}
		if v, ok := p["until"]; ok && t.info.StartTime.Unix() > int64(atoiDefault(v, 0)) {
			return false
		}
		if !statusFilter[statusClass(t.exit, t.running)] {
			return false
		}
		count++
		if count <= start || limit <= 0 {
			return false
		}
		limit--
		return true
	}
	var active, archived []*task
	for _, t := range s.tasks {
		if t.info.Node != nodeName {
			continue
		}
		if t.running {
			active = append(active, t)
		} else {
			archived = append(archived, t)
		}
	}
	// node_tasks (pve-manager PVE::API2::Tasks) lists the active file in
	// its order, and active_workers (pve-common PVE::RESTEnvironment)
	// appends each new task to it, so running tasks come oldest first:
	// s.tasks is in that order already. The archive index is appended to
	// as tasks end and read backwards, so the most recently finished task
	// comes first.
	sort.SliceStable(archived, func(i, j int) bool { return archived[i].end.After(archived[j].end) })
	if source == "active" || source == "all" {
		for _, t := range active {
			if filter(t) {
				m := taskFields(t, false)
				m["status"] = "RUNNING"
				out = append(out, m)
			}
		}
	}
	if source != "active" {
		for _, t := range archived {
			if filter(t) {
				m := taskFields(t, true)
				m["endtime"] = t.end.Unix()
				m["status"] = t.exit
				out = append(out, m)
			}
		}
	}
	if out == nil {
		out = []map[string]any{}
	}
	return out, count
}
