package reconcile_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// listing records the task filters the engine asks for, and can add
// fabricated tasks of the engine's user to every list, as a node with a
// long history of them would hold.
type listing struct {
	*proxmox.Client
	extra int

	mu      sync.Mutex
	filters []proxmox.TaskFilter
}

func (l *listing) Tasks(ctx context.Context, node string, f proxmox.TaskFilter) ([]proxmox.TaskInfo, error) {
	l.mu.Lock()
	l.filters = append(l.filters, f)
	l.mu.Unlock()
	tasks, err := l.Client.Tasks(ctx, node, f)
	if err != nil {
		return nil, err
	}
	for i := 0; i < l.extra && (f.Limit == 0 || len(tasks) < f.Limit); i++ {
		info := proxmox.UPIDInfo{Node: node, PID: 900000 + i, PStart: 1, StartTime: f.Since, Type: f.Type,
			ID: fmt.Sprint(f.VMID), User: l.TaskUser()}
		tasks = append(tasks, proxmox.TaskInfo{UPID: info.Format(), Node: node, PID: info.PID, StartTime: info.StartTime,
			Type: info.Type, ID: info.ID, User: "x", ExitStatus: "OK"})
	}
	return tasks, nil
}

// The search for a lost answer's task asks Proxmox for a bounded list:
// the guest's tasks of the operation's type, of the engine's user, since
// shortly before the operation, and no more than it can judge.
func TestLostAnswerSearchIsNarrowedAndBounded(t *testing.T) {
	f := newFixture(t, nil)
	l := &listing{Client: f.client}
	eng := f.newEngine(f.j, func(c *reconcile.Config) { c.Proxmox = l })
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	at := time.Now()
	intent(t, f.j, "lost", qemu(100), reconcile.ActionStart, "", at)
	upid, err := f.client.Start(ctxT(t), qemu(100))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := eng.Recover(ctxT(t))
	if err != nil || len(rep.Ops) != 1 || rep.Ops[0].UPID != upid {
		t.Fatalf("the engine's own task was not adopted: %+v %v", rep.Ops, err)
	}
	if len(l.filters) == 0 {
		t.Fatal("no task list read")
	}
	for _, tf := range l.filters {
		if tf.Limit <= 0 || tf.Since.IsZero() || tf.Since.After(at) || tf.VMID != 100 || tf.Type == "" || tf.User != f.client.TaskUser() {
			t.Errorf("task filter %+v: want the guest, a type, the engine's user, a time since before the operation and a limit", tf)
		}
	}
}

// More of the engine's tasks than the search can judge: the operation is
// left unresolved with an error, rather than matched to a task from a list
// cut short.
func TestLostAnswerSearchRefusesTooManyTasks(t *testing.T) {
	f := newFixture(t, nil)
	l := &listing{Client: f.client, extra: 1000}
	eng := f.newEngine(f.j, func(c *reconcile.Config) { c.Proxmox = l })
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	intent(t, f.j, "lost", qemu(100), reconcile.ActionStart, "", time.Now())
	rep, err := eng.Recover(ctxT(t))
	if err == nil || len(rep.Ops) != 1 || rep.Ops[0].To != "" || !strings.Contains(rep.Ops[0].Error, "cannot be told") {
		t.Fatalf("recovery over too many tasks: %+v %v", rep.Ops, err)
	}
	if en := latest(t, f.j, "lost"); en.State != journal.Started {
		t.Errorf("operation recorded %s, want it left in flight", en.State)
	}
}
