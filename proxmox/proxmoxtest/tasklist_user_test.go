package proxmoxtest

import (
	"testing"
)

// TestTaskListUsers: node_tasks reports an active token task with the
// full token id as its user and converts finished ones to user and
// tokenid ($convert_token_task), and matches userfilter against what it
// reports; read_task_status always converts.
func TestTaskListUsers(t *testing.T) {
	s := Start(t, WithManualTasks(), WithAPIToken("ops@pve!ci", "s3cret"))
	r := mustAdd(t, s, vm100(""))
	done := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil))
	running := taskOf(t, s, do(t, s, "POST", guestPath(r)+"/status/stop", nil))
	if done.User != "ops@pve!ci" || running.User != "ops@pve!ci" {
		t.Fatalf("task users %q %q", done.User, running.User)
	}
	list := do(t, s, "GET", "/nodes/pve/tasks?source=all", nil).dataList(t)
	if len(list) != 2 {
		t.Fatalf("list %v", list)
	}
	if list[0]["upid"] != string(running.UPID) || list[0]["user"] != "ops@pve!ci" || list[0]["tokenid"] != nil {
		t.Errorf("running entry %v", list[0])
	}
	if list[1]["upid"] != string(done.UPID) || list[1]["user"] != "ops@pve" || list[1]["tokenid"] != "ci" {
		t.Errorf("finished entry %v", list[1])
	}
	st := do(t, s, "GET", "/nodes/pve/tasks/"+string(running.UPID)+"/status", nil).dataMap(t)
	if st["user"] != "ops@pve" || st["tokenid"] != "ci" {
		t.Errorf("status %v", st)
	}
	for _, tc := range []struct {
		filter string
		want   int
	}{
		{"ops@pve", 2},
		{"OPS@PVE", 2},    // case-insensitive
		{"ops@pve!ci", 1}, // only the running task still carries the token
		{"root@pam", 0},
	} {
		got := do(t, s, "GET", "/nodes/pve/tasks?source=all&userfilter="+tc.filter, nil).dataList(t)
		if len(got) != tc.want {
			t.Errorf("userfilter %q: %d tasks, want %d", tc.filter, len(got), tc.want)
		}
	}
}
