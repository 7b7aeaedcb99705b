package queue_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/guestward/guestward/queue"
)

// TestModel drives the queue with random sequences of submissions (Submit
// and Do, plain and coalescing), cancellations and job completions, and
// checks after every step that exactly the jobs a simple model says should
// have started have started, and that every finished job has the result the
// model predicts. The model is a plain map of slices plus a FIFO of ready
// keys; it encodes the contract: per-key submit order, one job per key at a
// time, at most maxConcurrent jobs, round-robin turns when the limit is
// reached, canceled jobs never run, coalesced jobs take the place of the job
// they replace.
func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		m := newModel(rt)
		defer m.teardown()
		rt.Repeat(map[string]func(*rapid.T){
			"submit": m.submit,
			"do":     m.do,
			"cancel": m.cancel,
			"finish": m.finish,
			"":       m.check,
		})
	})
}

// settle bounds every wait for something the model says must happen. It is
// a failure deadline, not a synchronization device: a correct queue meets
// it in microseconds.
const settle = 10 * time.Second

type modelJob struct {
	id      int
	key     int
	tag     string
	ctx     context.Context
	cancel  context.CancelFunc
	gate    chan string   // "ok", "err" or "panic": how the job ends
	started chan struct{} // closed when fn starts
	viaDo   bool
	doErr   chan error // Do's result, for viaDo jobs
	handle  *queue.Handle[int]

	// Model state.
	slot    *modelSlot // the slot this job's submission waits on
	mayRun  bool       // fn may still run
	ran     bool       // fn started
	settled bool       // the submitter has seen its result
}

// modelSlot is a place in a lane: a waiting job, possibly shared by several
// coalesced submissions.
type modelSlot struct {
	key     int
	tag     string
	current *modelJob   // whose fn and ctx the slot runs with
	waiters []*modelJob // every submission that receives the slot's result
	result  error       // once finished
	done    bool
}

type model struct {
	t     *rapid.T
	q     *queue.Queue[int]
	limit int
	jobs  []*modelJob

	lanes   map[int][]*modelSlot // waiting slots per key
	running map[int]*modelSlot   // the slot holding key's turn, if any
	ready   []int                // keys waiting for a free slot, oldest first
}

func newModel(t *rapid.T) *model {
	limit := rapid.IntRange(0, 3).Draw(t, "limit")
	return &model{
		t:       t,
		q:       queue.New[int](queue.WithMaxConcurrent(limit)),
		limit:   limit,
		lanes:   map[int][]*modelSlot{},
		running: map[int]*modelSlot{},
	}
}

var errJob = errors.New("job failed")

func (m *model) newJob(t *rapid.T, viaDo bool) *modelJob {
	ctx, cancel := context.WithCancel(context.Background())
	j := &modelJob{
		id:      len(m.jobs),
		key:     rapid.IntRange(0, 3).Draw(t, "key"),
		ctx:     ctx,
		cancel:  cancel,
		gate:    make(chan string, 1),
		started: make(chan struct{}),
		viaDo:   viaDo,
		mayRun:  true,
	}
	if rapid.Bool().Draw(t, "tagged") {
		j.tag = "reconcile"
	}
	m.jobs = append(m.jobs, j)
	return j
}

func (j *modelJob) fn(ctx context.Context) error {
	close(j.started)
	select {
	case how := <-j.gate:
		switch how {
		case "err":
			return errJob
		case "panic":
			panic(fmt.Sprintf("job %d", j.id))
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (j *modelJob) opts() []queue.JobOption {
	if j.tag == "" {
		return nil
	}
	return []queue.JobOption{queue.Coalesce(j.tag)}
}

func (m *model) submit(t *rapid.T) {
	j := m.newJob(t, false)
	h, err := m.q.Submit(j.ctx, j.key, j.fn, j.opts()...)
	if err != nil {
		t.Fatalf("Submit job %d: %v", j.id, err)
	}
	j.handle = h
	m.enqueue(j)
	if j.slot.current == j && len(j.slot.waiters) > 1 {
		// Coalesced: the handle must be the one of the slot's first job.
		if first := j.slot.waiters[0]; first.handle != nil && first.handle != h {
			t.Fatalf("job %d coalesced into job %d but got a different handle", j.id, first.id)
		}
	}
}

func (m *model) do(t *rapid.T) {
	j := m.newJob(t, true)
	j.doErr = make(chan error, 1)
	// Do gives nothing back until the job ends, so wait for the queue to
	// say the job is in line before the next step: submit order is the
	// order of the steps.
	inLine := make(chan struct{})
	queue.AfterDoEnqueue(m.q, func() { close(inLine) })
	go func() { j.doErr <- m.q.Do(j.ctx, j.key, j.fn, j.opts()...) }()
	waitClosed(t, inLine, "job %d (Do) to be in line", j.id)
	queue.AfterDoEnqueue(m.q, nil)
	m.enqueue(j)
}

// enqueue applies a submission to the model.
func (m *model) enqueue(j *modelJob) {
	if j.tag != "" {
		for _, s := range m.lanes[j.key] {
			if s.tag == j.tag {
				s.current.mayRun = false
				s.current = j
				s.waiters = append(s.waiters, j)
				j.slot = s
				return
			}
		}
	}
	s := &modelSlot{key: j.key, tag: j.tag, current: j, waiters: []*modelJob{j}}
	j.slot = s
	m.lanes[j.key] = append(m.lanes[j.key], s)
	if m.running[j.key] == nil && !slices.Contains(m.ready, j.key) {
		if m.hasSlot() {
			m.start(j.key)
		} else {
			m.ready = append(m.ready, j.key)
		}
	}
}

func (m *model) hasSlot() bool { return m.limit == 0 || len(m.running) < m.limit }

// start gives key the turn: its oldest waiting slot runs.
func (m *model) start(key int) {
	s := m.lanes[key][0]
	m.lanes[key] = m.lanes[key][1:]
	if len(m.lanes[key]) == 0 {
		delete(m.lanes, key)
	}
	m.running[key] = s
	s.current.ran = true
}

// release ends key's turn and passes the slot on, as the queue must.
func (m *model) release(key int) {
	delete(m.running, key)
	if len(m.lanes[key]) > 0 {
		if len(m.ready) == 0 {
			m.start(key) // nobody else waits: key goes on
			return
		}
		m.ready = append(m.ready, key)
	}
	if len(m.ready) > 0 && m.hasSlot() {
		next := m.ready[0]
		m.ready = m.ready[1:]
		m.start(next)
	}
}

func (m *model) cancel(t *rapid.T) {
	var live []*modelJob
	for _, j := range m.jobs {
		if j.ctx.Err() == nil && !j.settled {
			live = append(live, j)
		}
	}
	if len(live) == 0 {
		t.Skip("nothing to cancel")
	}
	j := rapid.SampledFrom(live).Draw(t, "cancel")
	j.cancel()
	s := j.slot
	switch {
	case s.done:
		// Its slot already finished; canceling changes nothing.
	case m.running[s.key] == s:
		if s.current == j {
			// A running job that honours its context ends with ctx.Err().
			m.settle(t, s, context.Canceled)
			m.release(s.key)
		}
	case s.current == j:
		// Waiting, and the slot belongs to j: it leaves the line, and every
		// submission sharing the slot gets ctx.Err().
		j.mayRun = false
		m.lanes[s.key] = slices.DeleteFunc(m.lanes[s.key], func(x *modelSlot) bool { return x == s })
		if len(m.lanes[s.key]) == 0 {
			delete(m.lanes, s.key)
			m.ready = slices.DeleteFunc(m.ready, func(k int) bool { return k == s.key })
		}
		m.settle(t, s, context.Canceled)
	case j.viaDo:
		// Waiting, but a newer submission took the slot over: Do returns
		// ctx.Err() at once, and the slot goes on for the others.
		m.expectResult(t, j, context.Canceled)
		j.settled = true
		s.waiters = slices.DeleteFunc(s.waiters, func(x *modelJob) bool { return x == j })
	}
}

func (m *model) finish(t *rapid.T) {
	var keys []int
	for k, s := range m.running {
		if !s.done {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		t.Skip("nothing running")
	}
	slices.Sort(keys)
	key := rapid.SampledFrom(keys).Draw(t, "finish")
	s := m.running[key]
	how := rapid.SampledFrom([]string{"ok", "err", "panic"}).Draw(t, "how")
	waitClosed(t, s.current.started, "job %d to start", s.current.id)
	s.current.gate <- how
	var want error
	switch how {
	case "err":
		want = errJob
	case "panic":
		want = queue.ErrPanic
	}
	m.settle(t, s, want)
	m.release(key)
}

// settle checks that every submission sharing slot s receives want.
func (m *model) settle(t *rapid.T, s *modelSlot, want error) {
	s.done = true
	s.result = want
	for _, w := range s.waiters {
		m.expectResult(t, w, want)
		w.settled = true
	}
}

func (m *model) expectResult(t *rapid.T, j *modelJob, want error) {
	var got error
	if j.viaDo {
		select {
		case got = <-j.doErr:
		case <-time.After(settle):
			t.Fatalf("job %d: Do did not return", j.id)
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), settle)
		defer cancel()
		got = j.handle.Wait(ctx)
		if errors.Is(got, context.DeadlineExceeded) && ctx.Err() != nil {
			t.Fatalf("job %d: no result", j.id)
		}
	}
	if !errors.Is(got, want) || (want == nil) != (got == nil) {
		t.Fatalf("job %d: result %v, want %v", j.id, got, want)
	}
}

// check compares the jobs that have started with the model.
func (m *model) check(t *rapid.T) {
	for _, j := range m.jobs {
		if j.ran {
			waitClosed(t, j.started, "job %d to start", j.id)
			continue
		}
		select {
		case <-j.started:
			t.Fatalf("job %d started, but the model says it must not have (mayRun=%v)", j.id, j.mayRun)
		default:
		}
	}
	s := m.q.Stats()
	if want := len(m.running); s.Running != want {
		t.Fatalf("queue reports %d running, model %d", s.Running, want)
	}
	if m.limit > 0 && s.Running > m.limit {
		t.Fatalf("%d running, limit %d", s.Running, m.limit)
	}
}

func (m *model) teardown() {
	t := m.t
	// Cancel the jobs that never started first: once their contexts have
	// ended they cannot start, whatever the running ones do next.
	for _, j := range m.jobs {
		if !j.ran {
			j.cancel()
		}
	}
	for _, j := range m.jobs {
		j.cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	if err := m.q.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, j := range m.jobs {
		if !j.ran {
			select {
			case <-j.started:
				t.Fatalf("job %d started after all, but the model says it never runs", j.id)
			default:
			}
		}
	}
	if s := m.q.Stats(); s.Keys != 0 || s.Waiting != 0 || s.Running != 0 {
		t.Fatalf("closed queue not empty: %+v", s)
	}
}

func waitClosed(t interface{ Fatalf(string, ...any) }, ch <-chan struct{}, format string, args ...any) {
	select {
	case <-ch:
	case <-time.After(settle):
		t.Fatalf("timed out waiting for "+format, args...)
	}
}
