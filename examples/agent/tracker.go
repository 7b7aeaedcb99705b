package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/guestward/guestward/reconcile"
)

// errStopping vetoes the actions a pass would start after a stop request.
var errStopping = errors.New("the agent is stopping")

// tracker knows which operations are running, from the engine's events,
// and, once draining, vetoes every new action through the engine's Policy.
// Together they give a graceful stop on the engine's public API: the pass
// in progress starts nothing new, the operations already sent finish and
// are journaled, and only then is the engine's context cancelled. An
// operation still running when the grace period ends is interrupted; it
// stays in flight in the journal and the next start's Recover resolves it.
type tracker struct {
	mu       sync.Mutex
	running  map[string]bool // op ids between their "start" and their end
	draining bool
	idle     chan struct{} // closed when running empties while draining
}

func newTracker() *tracker {
	return &tracker{running: map[string]bool{}}
}

// policy is the engine's Policy: it vetoes everything once draining.
func (t *tracker) policy(context.Context, reconcile.Action, reconcile.Observed) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.draining {
		return errStopping
	}
	return nil
}

// event follows an operation's phases.
func (t *tracker) event(ev reconcile.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch ev.Phase {
	case "start":
		t.running[ev.OpID] = true
	case "done", "failed":
		delete(t.running, ev.OpID)
		if t.draining && len(t.running) == 0 && t.idle != nil {
			close(t.idle)
			t.idle = nil
		}
	}
}

// drain vetoes new actions from now on and waits until no operation runs,
// or for grace, whichever comes first.
func (t *tracker) drain(grace time.Duration) {
	t.mu.Lock()
	t.draining = true
	if len(t.running) == 0 {
		t.mu.Unlock()
		return
	}
	idle := make(chan struct{})
	t.idle = idle
	t.mu.Unlock()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-idle:
	case <-timer.C:
	}
}
