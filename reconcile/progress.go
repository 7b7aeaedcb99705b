package reconcile

import (
	"sync"
	"time"
)

// Phase names a step of a pass. A pass goes through them in the order
// they are declared here, each at most once; a pass that ends early skips
// the rest, but always ends with [PhaseDone].
type Phase string

// The phases of a pass, in order.
const (
	// PhaseRecover: the pass resolves operations left in flight before it
	// acts (see [Engine.Recover]). Only a pass that has to recover goes
	// through it. Done and Total count the operations looked at, known
	// once the phase ends.
	PhaseRecover Phase = "recover"
	// PhaseList: reading the desired state, then listing the cluster's
	// guests. Done and Total are the number of guests listed, known once
	// the list arrives. A targeted pass lists nothing and skips it.
	PhaseList Phase = "list"
	// PhaseObserve: reading the declared guests. Done counts the guests
	// whose read ended (successfully or not) out of Total to read.
	PhaseObserve Phase = "observe"
	// PhasePlan: comparing desired and observed state; Total is the number
	// of declared guests.
	PhasePlan Phase = "plan"
	// PhaseAct: carrying out the plan. Done counts the guests whose
	// actions ended out of Total with actions to carry out (none in a dry
	// run).
	PhaseAct Phase = "act"
	// PhaseDone: the pass ended, however it ended; Done and Total are the
	// number of guests in its report, and Err is set if it could not act.
	PhaseDone Phase = "done"
)

// Progress is where a pass stands, as reported to [Config].OnProgress and
// by [Engine.Status]. It is a plain value.
type Progress struct {
	// Pass is the pass's sequence number within this engine, from 1.
	Pass int
	// Targeted is set for a pass over named guests
	// ([Engine.ReconcileGuests]).
	Targeted bool
	Phase    Phase
	// Done never exceeds Total. The last event of a phase has Done equal
	// to Total.
	Done, Total int
	// Start is when the pass started, and Elapsed the time since then.
	Start   time.Time
	Elapsed time.Duration
	// Err is the error of a pass that could not act (the error
	// [Engine.ReconcileOnce] returns), in the [PhaseDone] event only.
	Err error
}

// progressSteps is how many events, besides the first, a phase emits at
// most while Done rises: one each time Done crosses another hundredth of
// Total.
const progressSteps = 100

// passTracker follows one pass: it keeps [Engine.Status] up to date on
// every change, and calls OnProgress on the coalesced ones.
//
// Calls to OnProgress are made with emitMu held, so that they come one at
// a time and in order (Done only rises within a phase) although the
// guests of a phase end on many goroutines. The engine's status is
// updated under its own lock, never held while OnProgress runs, so that
// OnProgress may call Status.
type passTracker struct {
	e *Engine

	emitMu  sync.Mutex
	p       Progress
	step    int  // Done values between two events of the phase
	next    int  // the Done value that makes the next event
	emitted bool // the phase's first event went out
	last    int  // Done of the phase's latest event
}

// beginPass numbers a new pass and shows it as in progress.
func (e *Engine) beginPass(targeted bool, start time.Time) *passTracker {
	t := &passTracker{e: e}
	e.st.mu.Lock()
	e.st.seq++
	t.p = Progress{Pass: e.st.seq, Targeted: targeted, Start: start}
	e.st.mu.Unlock()
	return t
}

// phase enters ph with total to do, and reports it with Done 0.
func (t *passTracker) phase(ph Phase, total int) {
	t.emitMu.Lock()
	defer t.emitMu.Unlock()
	t.p.Phase, t.p.Done, t.p.Total = ph, 0, total
	t.step = max(1, (total+progressSteps-1)/progressSteps)
	t.next = t.step
	t.emitted, t.last = false, 0
	t.update(true)
}

// tick counts one more unit of the phase done.
func (t *passTracker) tick() {
	t.emitMu.Lock()
	defer t.emitMu.Unlock()
	if t.p.Done >= t.p.Total {
		return
	}
	t.p.Done++
	t.update(t.p.Done >= t.next || t.p.Done == t.p.Total)
}

// finish ends the phase with total done (the phases whose total is only
// known at their end, and those whose remaining units were abandoned).
func (t *passTracker) finish(total int) {
	t.emitMu.Lock()
	defer t.emitMu.Unlock()
	grown := total != t.p.Total
	t.p.Done, t.p.Total = total, total
	t.update(grown || !t.emitted || t.last != total)
}

// update publishes the progress to Status, and emits it if emit is set.
// emitMu is held.
func (t *passTracker) update(emit bool) {
	e := t.e
	p := t.p
	p.Elapsed = e.cfg.Now().Sub(p.Start)
	e.st.mu.Lock()
	e.st.pass, e.st.running = p, true
	e.st.mu.Unlock()
	if !emit {
		return
	}
	for t.next <= t.p.Done {
		t.next += t.step
	}
	t.emitted, t.last = true, t.p.Done
	if e.cfg.OnProgress != nil {
		e.cfg.OnProgress(p)
	}
}

// end reports the pass as done, records its summary in the status, and
// shows no pass in progress.
func (t *passTracker) end(rep Report, err error) {
	t.emitMu.Lock()
	defer t.emitMu.Unlock()
	e := t.e
	n := len(rep.Guests)
	t.p.Phase, t.p.Done, t.p.Total, t.p.Err = PhaseDone, n, n, err
	p := t.p
	p.Elapsed = e.cfg.Now().Sub(p.Start)
	sum := summarize(t.p.Pass, t.p.Targeted, rep, err)
	e.st.mu.Lock()
	e.st.pass, e.st.running = Progress{}, false
	e.st.last = &sum
	if err != nil {
		e.st.lastErr = &ErrorStatus{Source: "pass", Err: err, At: rep.Start.Add(rep.Duration)}
	}
	e.st.mu.Unlock()
	if e.cfg.OnProgress != nil {
		e.cfg.OnProgress(p)
	}
}
