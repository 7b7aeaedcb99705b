package proxmox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/guestward/guestward/internal/backoff"
)

// TaskStatus is the state of one task, from GET
// /nodes/{node}/tasks/{upid}/status. It is a plain value, safe for
// concurrent use.
type TaskStatus struct {
	UPID      UPID
	Node      string
	PID       int
	PStart    uint64
	StartTime time.Time
	Type      string // "qmstart", "vzstop", "qmconfig", ...
	ID        string // the task's object, usually the vmid
	// User is the user that started the task; for a task an API token
	// started, the token's user ("root@pam"), with the token's name in
	// TokenID. The full id ("root@pam!guestward", as [Client.TaskUser]
	// returns it) is the User of the UPID ([ParseUPID]).
	User    string
	TokenID string // token name when an API token started the task
	// Status is "running" or "stopped".
	Status string
	// ExitStatus is set once the task stopped: "OK", "WARNINGS: n" (it
	// succeeded but logged n warnings), or the error text, with any of the
	// client's secrets it echoes redacted.
	ExitStatus string
}

// Running reports whether the task has not finished.
func (s TaskStatus) Running() bool { return s.Status != "stopped" }

// Succeeded reports whether the task finished with "OK" or "WARNINGS: n".
func (s TaskStatus) Succeeded() bool { return !s.Running() && exitOK(s.ExitStatus) }

// Warnings returns n of a "WARNINGS: n" exit status, else 0.
func (s TaskStatus) Warnings() int { return exitWarnings(s.ExitStatus) }

var reWarnings = regexp.MustCompile(`^WARNINGS: (\d+)$`)

func exitOK(s string) bool { return s == "OK" || reWarnings.MatchString(s) }

func exitWarnings(s string) int {
	m := reWarnings.FindStringSubmatch(s)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

type taskStatusEntry struct {
	UPID       flexString `json:"upid"`
	Node       flexString `json:"node"`
	PID        flexInt    `json:"pid"`
	PStart     flexInt    `json:"pstart"`
	StartTime  flexInt    `json:"starttime"`
	Type       flexString `json:"type"`
	ID         flexString `json:"id"`
	User       flexString `json:"user"`
	TokenID    flexString `json:"tokenid"`
	Status     flexString `json:"status"`
	ExitStatus flexString `json:"exitstatus"`
}

// TaskStatus reads a task's state. The task is addressed on the node named
// in its UPID; a malformed UPID is refused before any request with
// [ErrInvalidUPID]. A task its node does not know fails with [ErrNotFound]
// (Proxmox's 400 "no such task"), which can also happen for a moment right
// after the task was created; [Client.WaitTask] allows for that.
func (c *Client) TaskStatus(ctx context.Context, upid UPID) (TaskStatus, error) {
	info, err := ParseUPID(string(upid))
	if err != nil {
		return TaskStatus{}, err
	}
	var e taskStatusEntry
	r := &request{method: http.MethodGet, path: "/nodes/" + url.PathEscape(info.Node) + "/tasks/" + url.PathEscape(string(upid)) + "/status"}
	if err := c.call(ctx, r, &e); err != nil {
		return TaskStatus{}, err
	}
	if e.Status != "running" && e.Status != "stopped" {
		// Anything else would read as running, and a wait would last
		// for as long as the answer stayed wrong.
		return TaskStatus{}, c.answerErr(r.method, r.path, fmt.Errorf("%w: task status %s is neither running nor stopped", ErrUnexpectedResponse, quoteValue(string(e.Status))))
	}
	st := TaskStatus{
		UPID: upid, Node: info.Node, PID: info.PID, PStart: info.PStart, StartTime: info.StartTime,
		Type: info.Type, ID: info.ID, Status: string(e.Status), ExitStatus: c.exitStatus(string(e.ExitStatus)),
	}
	// The UPID is authoritative for the user, as for every field it
	// encodes.
	st.User, st.TokenID = splitTaskUser(info.User)
	return st, nil
}

// WaitTask polls a task until it finishes, starting at the interval set by
// [WithTaskPolling] and doubling it up to the cap. It returns the final
// status, and nil if the exit status is "OK" or "WARNINGS: n" (success with
// warnings: check [TaskStatus.Warnings]). A task that failed yields a
// [*TaskError], matching [ErrTaskFailed] and the class of its exit status
// ([ErrLocked], [ErrNotFound], [ErrAlreadyRunning], ...).
//
// "no such task" is tolerated for the grace period of
// [WithTaskNotFoundGrace], since a node can briefly not know a task it just
// created. Transient failures to read the status (network, 59x) do not end
// the wait: the task runs on regardless, so WaitTask keeps polling. It stops
// when ctx ends, returning the last status seen and an error wrapping
// ctx.Err(); the task itself is not affected.
func (c *Client) WaitTask(ctx context.Context, upid UPID) (TaskStatus, error) {
	if _, err := ParseUPID(string(upid)); err != nil {
		return TaskStatus{}, err
	}
	var (
		last          = TaskStatus{UPID: upid}
		interval      = c.pollMin
		firstNotFound time.Time
	)
	for {
		st, err := c.TaskStatus(ctx, upid)
		switch {
		case err == nil:
			firstNotFound = time.Time{}
			last = st
			if !st.Running() {
				if exitOK(st.ExitStatus) {
					return st, nil
				}
				return st, &TaskError{UPID: upid, ExitStatus: st.ExitStatus}
			}
		case isContextErr(err) && ctx.Err() != nil:
			return last, fmt.Errorf("proxmox: wait for task %s: %w", upid, ctx.Err())
		case errors.Is(err, ErrNotFound):
			if firstNotFound.IsZero() {
				firstNotFound = time.Now()
			}
			if time.Since(firstNotFound) >= c.notFoundGrace {
				return last, fmt.Errorf("proxmox: wait for task %s: %w", upid, err)
			}
		case errors.Is(err, ErrTransient):
			c.log.LogAttrs(ctx, slog.LevelInfo, "proxmox: task status unavailable; still waiting",
				slog.String("upid", string(upid)), slog.String("error", err.Error()))
		default:
			return last, fmt.Errorf("proxmox: wait for task %s: %w", upid, err)
		}
		if err := backoff.Sleep(ctx, interval); err != nil {
			return last, fmt.Errorf("proxmox: wait for task %s: %w", upid, err)
		}
		interval = min(interval*2, c.pollMax)
	}
}

// TaskFilter selects tasks for [Client.Tasks]. The zero value selects every
// task of the node. Proxmox applies the filter, and the client checks every
// entry against it again, so an answer that ignores part of it cannot
// widen the list. It is a plain value, safe for concurrent use.
type TaskFilter struct {
	VMID int    // only tasks of this guest; 0 for any
	Type string // only tasks of this type, e.g. "qmstart"; "" for any
	// Since and Until bound the task's start time, inclusive, to the
	// second (sub-second parts are dropped). Zero means unbounded. A
	// lower bound is the way to keep the list short: a node's list holds
	// up to about a thousand finished tasks.
	Since, Until time.Time
	// User keeps tasks whose user id contains this text, ignoring case;
	// "" keeps all. The id is the one in the task's UPID: for a task an
	// API token started, the full token id "user@realm!tokenname" (see
	// [Client.TaskUser]), so a token id finds that token's tasks, running
	// or finished. (Proxmox itself matches a finished token task by its
	// user alone; the client asks Proxmox for the user's tasks and picks
	// the token's.) A text without '@' may lie in a token's name, which
	// Proxmox cannot filter by: it is matched by the client alone.
	User       string
	ErrorsOnly bool // only tasks that failed, and those still running (Proxmox counts them in)
	Limit      int  // return at most this many tasks; 0 for all
}

// keeps reports whether t passes the filter, as the node decides it
// (pve-manager PVE::API2::Tasks, node_tasks), except that the user is the
// full id. ErrorsOnly is left to the node.
func (f TaskFilter) keeps(t TaskInfo) bool {
	if f.VMID != 0 && t.ID != strconv.Itoa(f.VMID) {
		return false
	}
	if f.Type != "" && t.Type != f.Type {
		return false
	}
	if !f.Since.IsZero() && t.StartTime.Unix() < f.Since.Unix() {
		return false
	}
	if !f.Until.IsZero() && t.StartTime.Unix() > f.Until.Unix() {
		return false
	}
	if f.User != "" {
		full := t.User
		if t.TokenID != "" {
			full += "!" + t.TokenID
		}
		if !strings.Contains(strings.ToLower(full), strings.ToLower(f.User)) {
			return false
		}
	}
	return true
}

// nodeUserFilter is the userfilter to send for f.User: text that every
// task f.User selects contains in the user the node matches against.
// node_tasks matches a finished token task's user with the token's name
// split off, and a running one's full id. A text with '@' starts within
// the user (a token's name holds no '@'), so its part before the first '!'
// lies within the user too. A text without '@' may lie in the token's
// name alone: nothing is sent, and the client filters.
func nodeUserFilter(user string) string {
	if !strings.Contains(user, "@") {
		return ""
	}
	if i := strings.IndexByte(user, '!'); i >= 0 {
		return user[:i]
	}
	return user
}

// TaskInfo is one task in a node's task list ([Client.Tasks]). It is a
// plain value, safe for concurrent use.
type TaskInfo struct {
	UPID      UPID
	Node      string
	PID       int
	PStart    uint64
	StartTime time.Time
	EndTime   time.Time // zero while running
	Type      string
	ID        string
	// User and TokenID are as in [TaskStatus]: for a token's task the
	// token's user and the token's name. (Proxmox itself reports a
	// running token task with the full id as its user and a finished one
	// split; both read the same here.)
	User    string
	TokenID string
	Running bool
	// ExitStatus is "OK", "WARNINGS: n" or the error text once the task
	// finished, redacted as in [TaskStatus]; "" while it runs.
	ExitStatus string
}

// Succeeded reports whether the task finished with "OK" or "WARNINGS: n".
func (t TaskInfo) Succeeded() bool { return !t.Running && exitOK(t.ExitStatus) }

type taskListEntry struct {
	UPID      flexString `json:"upid"`
	Node      flexString `json:"node"`
	PID       flexInt    `json:"pid"`
	PStart    flexInt    `json:"pstart"`
	StartTime flexInt    `json:"starttime"`
	EndTime   flexInt    `json:"endtime"`
	Type      flexString `json:"type"`
	ID        flexString `json:"id"`
	User      flexString `json:"user"`
	TokenID   flexString `json:"tokenid"`
	Status    flexString `json:"status"`
}

// Bounds of one [Client.Tasks] call. A node keeps its finished tasks in an
// index it rotates at 50,000 bytes, keeping one older index: about a
// thousand tasks in all, plus those running (pve-common
// PVE::RESTEnvironment, active_workers). A list that goes on ten times as
// long is not a node's, and reading it would only cost time and memory.
const (
	taskPage       = 500   // entries asked for per page (Proxmox's default is 50)
	maxTaskEntries = 10000 // entries read per call, repeated ones included
)

var reTaskField = regexp.MustCompile(`^[^:\t\n\v\f\r ]+$`)

// Tasks lists a node's tasks, running and finished (GET
// /nodes/{node}/tasks with source=all): running tasks first, oldest first,
// then finished ones, the most recently finished first, as Proxmox orders
// them. It reads page after page until f.Limit or the end. Pages are not a
// consistent snapshot: a task started meanwhile shifts the list, so
// entries seen twice are dropped. It is how a program that crashed after
// sending a write finds the task the write may have started: filter by
// guest, type and a start time shortly before the write.
//
// A call reads at most 10,000 entries in 21 pages, ten times what a node
// keeps; a longer list fails with [ErrUnexpectedResponse] rather than a
// partial list, as does a page with more entries than asked for. Failed
// tasks' exit statuses are redacted as in [Client.TaskStatus].
//
// Bad filter values and node names are refused before any request with
// [ErrInvalidArgument].
func (c *Client) Tasks(ctx context.Context, node string, f TaskFilter) ([]TaskInfo, error) {
	if !ValidNodeName(node) {
		return nil, fmt.Errorf("%w: node name %q is not a valid Proxmox node name", ErrInvalidArgument, node)
	}
	q := url.Values{"source": {"all"}}
	if f.VMID != 0 {
		if f.VMID < MinVMID || f.VMID > MaxVMID {
			return nil, fmt.Errorf("%w: task filter vmid %d is outside %d..%d", ErrInvalidArgument, f.VMID, MinVMID, MaxVMID)
		}
		q.Set("vmid", strconv.Itoa(f.VMID))
	}
	if f.Type != "" {
		if !reTaskField.MatchString(f.Type) {
			return nil, fmt.Errorf("%w: task type %q", ErrInvalidArgument, f.Type)
		}
		q.Set("typefilter", f.Type)
	}
	if f.User != "" {
		if !reTaskField.MatchString(f.User) {
			return nil, fmt.Errorf("%w: task user %q", ErrInvalidArgument, f.User)
		}
		if u := nodeUserFilter(f.User); u != "" {
			q.Set("userfilter", u)
		}
	}
	if !f.Since.IsZero() {
		if f.Since.Unix() <= 0 {
			return nil, fmt.Errorf("%w: task filter since %s is not after 1970", ErrInvalidArgument, f.Since)
		}
		q.Set("since", strconv.FormatInt(f.Since.Unix(), 10))
	}
	if !f.Until.IsZero() {
		if f.Until.Unix() <= 0 || (!f.Since.IsZero() && f.Until.Before(f.Since)) {
			return nil, fmt.Errorf("%w: task filter until %s is before since or 1970", ErrInvalidArgument, f.Until)
		}
		q.Set("until", strconv.FormatInt(f.Until.Unix(), 10))
	}
	if f.ErrorsOnly {
		q.Set("errors", "1")
	}
	if f.Limit < 0 {
		return nil, fmt.Errorf("%w: task limit %d is negative", ErrInvalidArgument, f.Limit)
	}
	path := "/nodes/" + url.PathEscape(node) + "/tasks"
	tooLong := func() error {
		return answerErr(http.MethodGet, path, fmt.Errorf("%w: the task list goes on past %d entries, far more than a node keeps", ErrUnexpectedResponse, maxTaskEntries))
	}
	var out []TaskInfo
	seen := make(map[UPID]bool)
	for start := 0; ; {
		// The first page asks for no more than the limit, which is all
		// it takes when the node's filter is the client's; later pages
		// ask for full pages, so that a list whose entries the client
		// drops is still read in few of them.
		page := taskPage
		if f.Limit > 0 && start == 0 {
			page = min(page, f.Limit)
		}
		q.Set("start", strconv.Itoa(start))
		q.Set("limit", strconv.Itoa(page))
		entries := taskListPage{max: page}
		r := &request{method: http.MethodGet, path: path, query: q}
		total, err := c.callTotal(ctx, r, &entries)
		if err != nil {
			return nil, err
		}
		if total > maxTaskEntries && f.Limit == 0 {
			return nil, tooLong()
		}
		fresh := 0
		for _, e := range entries.items {
			t := e.info(node)
			if t.UPID == "" || seen[t.UPID] {
				// A task started between two pages shifts the list
				// by one, repeating an entry.
				continue
			}
			seen[t.UPID] = true
			fresh++
			if !f.keeps(t) {
				continue
			}
			t.ExitStatus = c.exitStatus(t.ExitStatus)
			out = append(out, t)
			if f.Limit > 0 && len(out) == f.Limit {
				return out, nil
			}
		}
		start += len(entries.items)
		if len(entries.items) < page || fresh == 0 || (total >= 0 && int64(start) >= total) {
			return out, nil
		}
		if start >= maxTaskEntries {
			return nil, tooLong()
		}
	}
}

// taskListPage is one page of a task list: at most max entries, decoded
// one by one, so that a page far longer than asked for is refused before
// it is held in memory as entries.
type taskListPage struct {
	max   int
	items []taskListEntry
}

func (p *taskListPage) unmarshalData(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return errors.New("the task list is not an array")
	}
	for dec.More() {
		if len(p.items) == p.max {
			return fmt.Errorf("the page holds more than the %d tasks asked for", p.max)
		}
		var e taskListEntry
		if err := dec.Decode(&e); err != nil {
			return fmt.Errorf("task %d: %v", len(p.items), err)
		}
		p.items = append(p.items, e)
	}
	_, err = dec.Token() // the closing bracket
	return err
}

func (e taskListEntry) info(node string) TaskInfo {
	t := TaskInfo{
		UPID: UPID(e.UPID), Node: string(e.Node), PID: int(e.PID), PStart: uint64(e.PStart),
		Type: string(e.Type), ID: string(e.ID), User: string(e.User),
	}
	if e.StartTime > 0 {
		t.StartTime = time.Unix(int64(e.StartTime), 0).UTC()
	}
	if e.EndTime > 0 {
		t.EndTime = time.Unix(int64(e.EndTime), 0).UTC()
	}
	if e.TokenID != "" && !strings.Contains(t.User, "!") {
		t.User += "!" + string(e.TokenID)
	}
	if info, err := ParseUPID(string(e.UPID)); err == nil {
		// The UPID is authoritative for the fields it encodes.
		t.Node, t.PID, t.PStart, t.StartTime, t.Type, t.ID = info.Node, info.PID, info.PStart, info.StartTime, info.Type, info.ID
		t.User = info.User
	}
	t.User, t.TokenID = splitTaskUser(t.User)
	if t.Node == "" {
		t.Node = node
	}
	status := string(e.Status)
	t.Running = strings.EqualFold(status, "running") || (status == "" && e.EndTime == 0)
	if !t.Running {
		t.ExitStatus = status
	}
	return t
}

// exitStatus is a task's exit status as the client hands it out: a failed
// task's text can echo the request, and it travels on into errors and
// journals.
func (c *Client) exitStatus(s string) string {
	if exitOK(s) {
		return s
	}
	return c.redact(cleanText(s))
}

// splitTaskUser splits the user of a UPID, "user@realm" or
// "user@realm!tokenname", into the user and the token name, as Proxmox's
// task endpoints report them (pve-manager PVE::API2::Tasks,
// $convert_token_task).
func splitTaskUser(full string) (user, token string) {
	// A user name may contain '@' and '!', a realm and a token name
	// neither: the token starts at the first '!' after the last '@'.
	at := strings.LastIndexByte(full, '@')
	if at < 0 {
		return full, ""
	}
	if i := strings.IndexByte(full[at:], '!'); i > 0 {
		return full[:at+i], full[at+i+1:]
	}
	return full, ""
}

// VersionInfo is the answer of GET /version. It is a plain value, safe for
// concurrent use.
type VersionInfo struct {
	Version string // e.g. "8.1.4"
	Release string // e.g. "8.1"
	RepoID  string // pve-manager commit
}

// Version reads the Proxmox VE version of the node that answers. It needs
// valid credentials but no privileges, so it also serves as a cheap check
// that the client can reach and authenticate to Proxmox.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	var v struct {
		Version flexString `json:"version"`
		Release flexString `json:"release"`
		RepoID  flexString `json:"repoid"`
	}
	if err := c.call(ctx, &request{method: http.MethodGet, path: "/version"}, &v); err != nil {
		return VersionInfo{}, err
	}
	return VersionInfo{Version: string(v.Version), Release: string(v.Release), RepoID: string(v.RepoID)}, nil
}
