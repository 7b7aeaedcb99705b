package failpoint_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/guestward/guestward/internal/failpoint"
)

func TestNilSetIsNoop(t *testing.T) {
	var s *failpoint.Set
	s.Enable("a", func() error { return errors.New("must not run") })
	s.Disable("a")
	if err := s.Eval("a"); err != nil {
		t.Fatalf("Eval on nil Set = %v, want nil", err)
	}
}

func TestEnableEvalDisable(t *testing.T) {
	var s failpoint.Set
	if err := s.Eval("a"); err != nil {
		t.Fatalf("Eval of a point never enabled = %v, want nil", err)
	}
	boom := errors.New("boom")
	calls := 0
	s.Enable("a", func() error { calls++; return boom })
	if err := s.Eval("a"); !errors.Is(err, boom) {
		t.Fatalf("Eval(a) = %v, want %v", err, boom)
	}
	if err := s.Eval("b"); err != nil {
		t.Fatalf("Eval(b) = %v, want nil: only a is enabled", err)
	}
	s.Disable("a")
	if err := s.Eval("a"); err != nil {
		t.Fatalf("Eval(a) after Disable = %v, want nil", err)
	}
	if calls != 1 {
		t.Fatalf("function ran %d times, want 1", calls)
	}
}

func TestBlockingPointStopsBetweenSteps(t *testing.T) {
	var s failpoint.Set
	arrived := make(chan struct{})
	release := make(chan struct{})
	s.Enable("step", func() error {
		close(arrived)
		<-release
		return nil
	})
	var wg sync.WaitGroup
	var steps []string
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		mu.Lock()
		steps = append(steps, "one")
		mu.Unlock()
		_ = s.Eval("step")
		mu.Lock()
		steps = append(steps, "two")
		mu.Unlock()
	}()
	<-arrived
	mu.Lock()
	if len(steps) != 1 {
		t.Errorf("while stopped at the point, steps = %v, want [one]", steps)
	}
	mu.Unlock()
	close(release)
	wg.Wait()
	if len(steps) != 2 {
		t.Fatalf("after release, steps = %v, want [one two]", steps)
	}
}

func TestConcurrentUse(t *testing.T) {
	var s failpoint.Set
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				s.Enable("p", func() error { return nil })
				s.Disable("p")
			}
		}()
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				_ = s.Eval("p")
			}
		}()
	}
	wg.Wait()
}
