package reconcile

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
)

// NodeRate spaces a node's requests: five at once on one node take at
// least four intervals, while another node's request does not wait for
// them. Only lower bounds are checked: a loaded machine is slower, never
// faster.
func TestNodeLimiterRate(t *testing.T) {
	l := newNodeLimiter(10, 100) // 10 ms apart
	ctx := context.Background()
	start := time.Now()
	for range 5 {
		leave, err := l.Enter(ctx, "pve1")
		if err != nil {
			t.Fatal(err)
		}
		leave()
	}
	if d := time.Since(start); d < 4*l.every {
		t.Errorf("five requests to one node in %v, want at least %v", d, 4*l.every)
	}
	l.mu.Lock()
	other := l.nodes["pve2"]
	l.mu.Unlock()
	if other != nil {
		t.Fatal("a node never named has a gate")
	}
}

// A request waiting for its node's slot, or for its turn, gives up with
// ctx and leaves the slots as they were.
func TestNodeLimiterGivesUpWithContext(t *testing.T) {
	l := newNodeLimiter(1, 0)
	leave, err := l.Enter(context.Background(), "pve1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Enter(ctx, "pve1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Enter on a full node with an ended context = %v", err)
	}
	leave()
	leave2, err := l.Enter(context.Background(), "pve1")
	if err != nil {
		t.Fatal(err)
	}
	leave2()

	slow := newNodeLimiter(1, 0.001) // one request per 1000 s
	leave, err = slow.Enter(context.Background(), "pve1")
	if err != nil {
		t.Fatal(err)
	}
	leave()
	ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := slow.Enter(ctx, "pve1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Enter waiting for its turn = %v", err)
	}
	if n := len(slow.nodes["pve1"].slots); n != 0 {
		t.Errorf("%d slots held after giving up", n)
	}
}

func TestNewEngineRefusesBadNodeLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
	}{
		{"negative NodeConcurrency", func(c *Config) { c.NodeConcurrency = -1 }},
		{"negative NodeRate", func(c *Config) { c.NodeRate = -1 }},
		{"NaN NodeRate", func(c *Config) { c.NodeRate = math.NaN() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Proxmox: unreachable{}, Journal: journal.NewMemory()}
			tc.cfg(&cfg)
			if _, err := NewEngine(cfg); !errors.Is(err, ErrConfig) {
				t.Fatalf("NewEngine = %v, want ErrConfig", err)
			}
		})
	}
	e, err := NewEngine(Config{Proxmox: unreachable{}, Journal: journal.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	if e.cfg.NodeConcurrency != DefaultNodeConcurrency {
		t.Errorf("default NodeConcurrency %d", e.cfg.NodeConcurrency)
	}
}
