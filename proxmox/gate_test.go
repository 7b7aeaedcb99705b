package proxmox

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
)

// recordingGate records the node of every request it lets through, and can
// refuse them all.
type recordingGate struct {
	mu     sync.Mutex
	nodes  []string
	inside int
	refuse error
}

func (g *recordingGate) Enter(ctx context.Context, node string) (func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refuse != nil {
		return nil, g.refuse
	}
	g.nodes = append(g.nodes, node)
	g.inside++
	return func() { g.mu.Lock(); g.inside--; g.mu.Unlock() }, nil
}

func TestRequestGate(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /nodes/pve-1/qemu/100/pending", func(w http.ResponseWriter, r *http.Request) {
		replyRaw(w, `{"data":[{"key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"}]}`)
	})
	s.handle("GET /cluster/resources", func(w http.ResponseWriter, r *http.Request) { replyRaw(w, `{"data":[]}`) })
	c := s.tokenClient(t)
	g := &recordingGate{}
	ctx := WithRequestGate(context.Background(), g)
	if _, err := c.PendingConfig(ctx, Ref{"pve-1", QEMU, 100}); err != nil {
		t.Fatal(checkErr(t, err))
	}
	if _, err := c.Guests(ctx); err != nil {
		t.Fatal(checkErr(t, err))
	}
	if _, err := c.Guests(context.Background()); err != nil { // no gate: not recorded
		t.Fatal(checkErr(t, err))
	}
	if len(g.nodes) != 2 || g.nodes[0] != "pve-1" || g.nodes[1] != "" || g.inside != 0 {
		t.Fatalf("gate saw %q, %d inside; want [\"pve-1\" \"\"], 0", g.nodes, g.inside)
	}
	// A gate that refuses keeps the request from being sent.
	before := len(s.requests())
	g.refuse = context.DeadlineExceeded
	_, err := c.PendingConfig(ctx, Ref{"pve-1", QEMU, 100})
	if !errors.Is(err, context.DeadlineExceeded) || len(s.requests()) != before {
		t.Fatalf("refused by the gate: %v, %d requests sent", err, len(s.requests())-before)
	}
}
