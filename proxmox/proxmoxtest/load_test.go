package proxmoxtest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// waitFor polls cond until it holds, failing the test after a generous
// bound; it is a condition wait, not a timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNodeWorkersBoundHandling(t *testing.T) {
	const workers, sent = 2, 6
	s, err := NewServer(WithNodes("pve", "pve2"), WithNodeWorkers(workers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	mustAdd(t, s, vm100("pve2"))
	release := make(chan struct{})
	var handling, most atomic.Int32
	s.Inject(Fault{Guest: proxmox.Ref{Node: "pve2"}, Before: func() {
		n := handling.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
	}, Wait: release, After: func() { handling.Add(-1) }})
	var wg sync.WaitGroup
	for range sent {
		wg.Go(func() { do(t, s, "GET", "/nodes/pve2/qemu/100/pending", nil) })
	}
	waitFor(t, "every request to reach the node", func() bool { return s.NodeLoad()["pve2"].InFlight == sent })
	close(release)
	wg.Wait()
	if got := most.Load(); got > workers {
		t.Errorf("%d requests handled at once on a node with %d workers", got, workers)
	}
	got := s.NodeLoad()["pve2"]
	if want := (NodeLoad{Requests: sent, InFlight: 0, MaxInFlight: sent}); got != want {
		t.Errorf("NodeLoad = %+v, want %+v", got, want)
	}
	if l := s.NodeLoad()["pve"]; l.Requests != 0 {
		t.Errorf("node pve counted %d requests for another node's guest", l.Requests)
	}
	// A cluster-wide request belongs to the node serving the API.
	do(t, s, "GET", "/cluster/resources", nil)
	if l := s.NodeLoad()["pve"]; l.Requests != 1 {
		t.Errorf("node pve counted %d cluster-wide requests, want 1", l.Requests)
	}
	s.ResetNodeLoad()
	if l := s.NodeLoad()["pve2"]; l != (NodeLoad{}) {
		t.Errorf("after ResetNodeLoad: %+v", l)
	}
}

func TestNodeWorkersRequestGivesUp(t *testing.T) {
	s, err := NewServer(WithNodeWorkers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	mustAdd(t, s, vm100(""))
	release := make(chan struct{})
	defer close(release)
	s.Inject(Fault{Path: "/nodes/pve/qemu/100/pending", Wait: release, Times: 1})
	go func() { _, _ = tryDo(s, "GET", "/nodes/pve/qemu/100/pending", nil) }()
	waitFor(t, "the first request to take the worker", func() bool { return s.NodeLoad()["pve"].InFlight == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := httpNewRequest(ctx, "GET", s.URL+APIPath+"/version")
	done := make(chan error, 1)
	go func() {
		resp, err := s.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	waitFor(t, "the second request to wait for the worker", func() bool { return s.NodeLoad()["pve"].InFlight == 2 })
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a request waiting for a worker was answered after its client gave up")
	}
	waitFor(t, "the abandoned request to be counted out", func() bool { return s.NodeLoad()["pve"].InFlight == 1 })
}

func TestLoadOptionsRefuseNegatives(t *testing.T) {
	for _, o := range []Option{WithLatency(-1), WithNodeLatency("pve", -1), WithNodeWorkers(-1)} {
		if s, err := NewServer(o); err == nil {
			s.Close()
			t.Errorf("option accepted a negative value")
		}
	}
}
