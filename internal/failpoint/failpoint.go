// Package failpoint lets a test stop or fail a program at named points
// between its steps, to prove that every interruption is recovered from.
//
// Production code holds a *Set that is nil unless a test supplied one, and
// calls [Set.Eval] at each point of interest. On a nil *Set, Eval is a nil
// check and nothing else, so failpoints cost nothing in production.
//
// A test enables a point with a function that decides what happens there:
// return an error to make the step fail, block on a channel to stop the
// program between two steps while the test looks at the world, or count
// arrivals.
//
//	fp := new(failpoint.Set)
//	fp.Enable("compact/before-rename", func() error { return errBoom })
//
// Point names are plain strings chosen by the package that evaluates them;
// that package documents its names.
package failpoint

import "sync"

// Set is a collection of enabled failpoints. The zero value has none enabled,
// and a nil *Set is valid: all its methods do nothing. A Set is safe for
// concurrent use.
type Set struct {
	mu     sync.Mutex
	points map[string]func() error
}

// Enable makes fn run each time the point called name is evaluated, replacing
// what was enabled there before. fn runs on the goroutine that evaluates the
// point, without any lock held, and its result is returned by [Set.Eval].
// Enabling on a nil *Set does nothing.
func (s *Set) Enable(name string, fn func() error) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.points == nil {
		s.points = make(map[string]func() error)
	}
	s.points[name] = fn
}

// Disable removes the point called name. Evaluations already running its
// function are not interrupted.
func (s *Set) Disable(name string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.points, name)
}

// Eval runs the function enabled at the point called name and returns its
// result, or returns nil when s is nil or nothing is enabled there.
func (s *Set) Eval(name string) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	fn := s.points[name]
	s.mu.Unlock()
	if fn == nil {
		return nil
	}
	return fn()
}
