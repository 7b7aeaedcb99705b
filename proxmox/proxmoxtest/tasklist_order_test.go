package proxmoxtest

import (
	"testing"
	"time"
)

// TestTaskListOrderAndEnvelope: node_tasks lists running tasks in the
// order of the node's active list, where each new task is appended (oldest
// first), then finished ones, the most recently finished first; and the
// API server leaves "total" out of the envelope when it is 0.
func TestTaskListOrderAndEnvelope(t *testing.T) {
	clk := NewManualClock(time.Unix(1700000000, 0))
	s := Start(t, WithManualTasks(), WithClock(clk))
	vm := mustAdd(t, s, vm100(""))
	ct := mustAdd(t, s, ct200(""))

	empty := do(t, s, "GET", "/nodes/pve/tasks?source=all&vmid=999", nil)
	if _, ok := empty.Body["total"]; ok || len(empty.dataList(t)) != 0 {
		t.Errorf("an empty list's envelope: %s", empty.Raw)
	}

	first := taskOf(t, s, do(t, s, "POST", guestPath(vm)+"/status/start", nil))
	clk.Advance(5 * time.Second)
	second := taskOf(t, s, do(t, s, "POST", guestPath(ct)+"/status/start", nil))
	clk.Advance(5 * time.Second)
	list := do(t, s, "GET", "/nodes/pve/tasks?source=all", nil)
	got := list.dataList(t)
	if len(got) != 2 || got[0]["upid"] != string(first.UPID) || got[1]["upid"] != string(second.UPID) {
		t.Fatalf("running tasks %v, want %s then %s", got, first.UPID, second.UPID)
	}
	if total, ok := list.Body["total"].(float64); !ok || total != 2 {
		t.Errorf("total = %v, want 2", list.Body["total"])
	}

	if err := s.FinishTask(second.UPID); err != nil {
		t.Fatal(err)
	}
	clk.Advance(5 * time.Second)
	if err := s.FinishTask(first.UPID); err != nil {
		t.Fatal(err)
	}
	got = do(t, s, "GET", "/nodes/pve/tasks?source=all", nil).dataList(t)
	if len(got) != 2 || got[0]["upid"] != string(first.UPID) || got[1]["upid"] != string(second.UPID) {
		t.Fatalf("finished tasks %v, want the last finished (%s) first", got, first.UPID)
	}
}
