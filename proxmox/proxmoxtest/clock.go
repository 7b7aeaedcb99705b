package proxmoxtest

import (
	"sync"
	"time"
)

// Clock supplies the fake server's notion of "now": ticket ages, UPID start
// times, task start and end times, guest uptimes and the task list's since
// and until filters all read it. Task durations do not: they are real time
// ([WithTaskDuration]) or manual ([WithManualTasks]). Implementations must
// be safe for concurrent use; the server calls Now from many goroutines.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// ManualClock is a [Clock] that moves only when told to. Use it to expire
// tickets or to place tasks at chosen start times without waiting.
// It is safe for concurrent use. The zero value reads as the zero time;
// use [NewManualClock].
type ManualClock struct {
	mu sync.Mutex
	t  time.Time
}

// NewManualClock returns a clock that reads t until moved.
func NewManualClock(t time.Time) *ManualClock { return &ManualClock{t: t} }

// Now returns the clock's current time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d (backward if d is negative).
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Set moves the clock to t.
func (c *ManualClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}
