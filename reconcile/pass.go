package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/queue"
)

// GuestOutcome summarizes what a pass did for one declared guest.
type GuestOutcome string

// The outcomes of a guest in a pass.
const (
	GuestInSync      GuestOutcome = "in_sync"     // nothing to do
	GuestChanged     GuestOutcome = "changed"     // every action succeeded
	GuestSkipped     GuestOutcome = "skipped"     // reported, not acted on: see Reason
	GuestFailed      GuestOutcome = "failed"      // an action failed
	GuestConflict    GuestOutcome = "conflict"    // the guest changed or got locked under us; planned again next pass
	GuestVetoed      GuestOutcome = "vetoed"      // the policy refused an action
	GuestInterrupted GuestOutcome = "interrupted" // stopped before the outcome was known; Recover resolves it
	GuestPlanned     GuestOutcome = "planned"     // dry run: actions planned, none sent
	GuestNotStarted  GuestOutcome = "not_started" // the engine was draining: the rest of its actions were not sent
)

// GuestReport is what a pass did for one declared guest.
type GuestReport struct {
	Ref     proxmox.Ref    `json:"-"`
	Outcome GuestOutcome   `json:"outcome"`
	Reason  SkipReason     `json:"reason,omitempty"`
	Detail  string         `json:"detail,omitempty"`
	Plan    GuestPlan      `json:"plan"`
	Actions []ActionReport `json:"actions,omitempty"`
}

// Report is the account of one reconcile pass.
type Report struct {
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration_ns"`
	DryRun   bool          `json:"dry_run,omitempty"`
	// DesiredErr is set when the provider could only vouch for an older
	// desired state (ErrStale); the pass acted on that state.
	DesiredErr string `json:"desired_error,omitempty"`
	// Listed is the number of guests the cluster listed; Observed the
	// number of declared guests whose details were read.
	Listed   int           `json:"listed"`
	Observed int           `json:"observed"`
	Plan     PlanResult    `json:"-"`
	Guests   []GuestReport `json:"guests"`
	// Phases is how long each step of the pass took.
	Phases Phases `json:"phases"`
}

// Phases is how long each step of a pass took, for metrics and for finding
// where a slow pass spent its time. The steps run one after the other, so
// their sum is at most the pass's Duration (the rest is the engine's own
// bookkeeping); a step the pass did not reach, or skipped, is zero. They are
// measured with Config.Now.
type Phases struct {
	// Recover: resolving operations left in flight, before anything else.
	Recover time.Duration `json:"recover_ns,omitempty"`
	// Desired: reading the desired state from the provider and validating
	// it.
	Desired time.Duration `json:"desired_ns,omitempty"`
	// List: listing the cluster's guests (not done by a targeted pass).
	List time.Duration `json:"list_ns,omitempty"`
	// Observe: reading the declared guests' configuration, lock and
	// pending changes.
	Observe time.Duration `json:"observe_ns,omitempty"`
	// Plan: planning, a pure computation.
	Plan time.Duration `json:"plan_ns,omitempty"`
	// Act: carrying out the plan, from queuing the first guest's job to
	// the end of the last; it includes waiting for the queue and for
	// Proxmox's tasks.
	Act time.Duration `json:"act_ns,omitempty"`
}

// Count returns how many guests ended the pass with each outcome.
func (r Report) Count() map[GuestOutcome]int {
	m := make(map[GuestOutcome]int)
	for _, g := range r.Guests {
		m[g.Outcome]++
	}
	return m
}

// Actions returns the number of actions the pass sent to Proxmox (or, in a
// dry run, planned) and how many of them succeeded.
func (r Report) Actions() (sent, succeeded int) {
	for _, g := range r.Guests {
		for _, a := range g.Actions {
			if a.Outcome != OutcomeVetoed && a.Outcome != OutcomeNotStarted {
				sent++
			}
			if a.Outcome == OutcomeSucceeded {
				succeeded++
			}
		}
	}
	return sent, succeeded
}

// Converged reports whether every declared guest is in sync or changed.
func (r Report) Converged() bool {
	for _, g := range r.Guests {
		if g.Outcome != GuestInSync && g.Outcome != GuestChanged {
			return false
		}
	}
	return true
}

// ErrPassAborted is wrapped by the error of a pass that could not act at
// all: the desired state or the guest list could not be read, or the
// desired state is invalid. Such a pass changes nothing.
var ErrPassAborted = errors.New("reconcile: pass aborted")

// ReconcileOnce runs one pass: it reads the desired state, lists the guests,
// reads the configuration of the declared ones, plans, and carries out the
// plan through the queue, waiting for every action. Passes never overlap: a
// call waits for the pass in progress.
//
// The error is non-nil only when the pass could not act at all (it wraps
// ErrPassAborted, or ErrDraining after Drain, or is ctx.Err()); what happened to each guest, failures
// included, is in the report. Before a pass the engine runs Recover if it
// has not succeeded yet, or if an operation was left in flight
// (interrupted) since it last did. A guest whose operation stays
// unresolved is left alone (skipped, [SkipUnresolved]) while the others
// are acted on; the pass is aborted only when the journal cannot be read,
// or holds an unresolved record that names no guest.
func (e *Engine) ReconcileOnce(ctx context.Context) (Report, error) {
	return e.reconcile(ctx, nil)
}

// reconcile runs a pass over every declared guest (targets nil), or over
// the declared guests among targets, matched by vmid.
func (e *Engine) reconcile(ctx context.Context, targets []proxmox.Ref) (rep Report, err error) {
	if e.isDraining() {
		return Report{}, fmt.Errorf("%w: no pass starts", ErrDraining)
	}
	if err := e.acquirePass(ctx); err != nil {
		return Report{}, err
	}
	defer e.releasePass()
	rep = Report{Start: e.cfg.Now(), DryRun: e.cfg.DryRun}
	tr := e.beginPass(targets != nil, rep.Start)
	// Deferred first, so run last: the report is complete by then.
	defer func() { tr.end(rep, err) }()
	// step ends the step in progress, if any, and starts timing next
	// (nil: none), for rep.Phases.
	var cur *time.Duration
	mark := rep.Start
	step := func(next *time.Duration) {
		now := e.cfg.Now()
		if cur != nil {
			*cur += now.Sub(mark)
		}
		cur, mark = next, now
	}
	// Set on the returned report, whichever way the pass ends.
	defer func() {
		step(nil)
		rep.Duration = e.cfg.Now().Sub(rep.Start)
	}()

	var blocked map[int]RecoveredOp
	if !e.cfg.DryRun && e.mustRecover.Load() {
		step(&rep.Phases.Recover)
		tr.phase(PhaseRecover, 0)
		var looked int
		blocked, looked, err = e.recoverBeforeN(ctx)
		tr.finish(looked)
		if err != nil {
			return rep, fmt.Errorf("%w: recovery: %w", ErrPassAborted, err)
		}
	} else if !e.cfg.DryRun {
		// Recovered already, unless an operation was left in flight
		// since the check above: recoverBefore looks again.
		step(&rep.Phases.Recover)
		if blocked, err = e.recoverBefore(ctx); err != nil {
			return rep, fmt.Errorf("%w: recovery: %w", ErrPassAborted, err)
		}
	}
	if targets == nil {
		tr.phase(PhaseList, 0)
	}
	step(&rep.Phases.Desired)
	desired, err := e.cfg.Provider.Desired(ctx)
	if err != nil {
		if !errors.Is(err, ErrStale) || desired == nil {
			return rep, fmt.Errorf("%w: desired state: %w", ErrPassAborted, err)
		}
		rep.DesiredErr = err.Error()
		e.log.WarnContext(ctx, "acting on the last good desired state", "err", err)
	}
	if err := ValidateDesiredWith(desired, e.cfg.Validation); err != nil {
		return rep, fmt.Errorf("%w: %w", ErrPassAborted, err)
	}
	desired = e.scoped(desired)
	if targets != nil {
		desired = targeted(desired, targets)
	}
	if len(desired) == 0 {
		return rep, nil // nothing is managed: not even a read
	}
	var (
		observed []Observed
		errs     map[int]error
	)
	if targets != nil {
		step(&rep.Phases.Observe)
		observed, errs = e.observeRefs(ctx, desired, tr)
	} else {
		step(&rep.Phases.List)
		guests, err := e.cfg.Proxmox.Guests(ctx)
		if err != nil {
			return rep, fmt.Errorf("%w: listing guests: %w", ErrPassAborted, err)
		}
		rep.Listed = len(guests)
		tr.finish(len(guests))
		step(&rep.Phases.Observe)
		observed, errs = e.observeListed(ctx, desired, guests, tr)
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	tr.phase(PhasePlan, len(desired))
	for _, o := range observed {
		if o.Config != nil {
			rep.Observed++
		}
	}
	step(&rep.Phases.Plan)
	rep.Plan = Plan(desired, observed, e.plan)
	byVMID := make(map[int]*Observed, len(observed))
	for i := range observed {
		byVMID[observed[i].Ref.VMID] = &observed[i]
	}
	declared := make(map[int]Desired, len(desired))
	for _, d := range desired {
		declared[d.Ref.VMID] = d
	}

	tr.finish(len(desired))

	step(&rep.Phases.Act)
	rep.Guests = make([]GuestReport, len(rep.Plan.Guests))
	acting := 0
	for _, g := range rep.Plan.Guests {
		if _, ok := blocked[g.Ref.VMID]; !ok && g.Verdict != InSync && g.Verdict != Skip && !e.cfg.DryRun {
			acting++
		}
	}
	tr.phase(PhaseAct, acting)
	type job struct {
		h    *queue.Handle[int]
		tick *sync.Once // counts the guest done in the act phase, once
	}
	var jobs []job
	for i, g := range rep.Plan.Guests {
		gr := &rep.Guests[i]
		gr.Ref, gr.Plan = g.Ref, g
		if u, ok := blocked[g.Ref.VMID]; ok && g.Verdict != Skip {
			gr.Outcome, gr.Reason = GuestSkipped, SkipUnresolved
			gr.Detail = fmt.Sprintf("operation %s (%s) is still in flight: %s", u.OpID, u.Kind, u.Error)
			continue
		}
		switch g.Verdict {
		case InSync:
			gr.Outcome = GuestInSync
			gr.Detail = g.Detail
			continue
		case Skip:
			gr.Outcome, gr.Reason, gr.Detail = GuestSkipped, g.Reason, g.Detail
			if (g.Reason == SkipUnobserved || g.Reason == SkipMissing) && errs[g.Ref.VMID] != nil {
				gr.Detail = errs[g.Ref.VMID].Error()
			}
			continue
		}
		if e.cfg.DryRun {
			gr.Outcome = GuestPlanned
			for _, a := range g.Actions {
				gr.Actions = append(gr.Actions, ActionReport{Action: a, Outcome: OutcomePlanned})
			}
			continue
		}
		obs, d := *byVMID[g.Ref.VMID], declared[g.Ref.VMID]
		// Not coalesced: the queue may be shared with another engine, and
		// a job that replaced this one would fill in the other engine's
		// report, leaving this guest unreported. Passes of one engine
		// never overlap, so there is nothing to coalesce here anyway.
		tick := new(sync.Once)
		h, err := e.q.Submit(ctx, g.Ref.VMID, func(ctx context.Context) error {
			defer tick.Do(tr.tick)
			if e.isDraining() {
				e.runGuest(ctx, gr, obs) // sends nothing: reports not started
			} else if obs, ok := e.recheck(ctx, d, gr, obs); ok {
				e.runGuest(ctx, gr, obs)
			}
			return nil
		})
		if err != nil {
			gr.Outcome, gr.Detail = GuestInterrupted, fmt.Sprintf("not queued: %v", err)
			tick.Do(tr.tick)
			continue
		}
		jobs = append(jobs, job{h, tick})
	}
	for _, j := range jobs {
		// Wait for every job, even when ctx ends: a job that started holds
		// the report entry it fills in, and a job that never started
		// resolves at once with ctx.Err().
		if err := j.h.Wait(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			e.log.ErrorContext(ctx, "reconcile job failed", "err", err)
		}
		j.tick.Do(tr.tick) // a job that never ran
	}
	for i := range rep.Guests {
		if gr := &rep.Guests[i]; gr.Outcome == "" {
			gr.Outcome, gr.Detail = GuestInterrupted, "the pass ended before this guest's turn"
		}
	}
	step(nil)
	e.logReport(ctx, rep)
	return rep, ctx.Err()
}

// runGuest carries out one guest's actions in order, stopping at the first
// that does not succeed.
func (e *Engine) runGuest(ctx context.Context, gr *GuestReport, obs Observed) {
	gr.Outcome = GuestChanged
	for _, a := range gr.Plan.Actions {
		if e.cfg.Policy != nil {
			if err := e.cfg.Policy(ctx, a, obs); err != nil {
				gr.Actions = append(gr.Actions, ActionReport{Action: a, Outcome: OutcomeVetoed, Error: err.Error(), Err: &vetoError{err}})
				gr.Outcome, gr.Detail = GuestVetoed, fmt.Sprintf("%s vetoed: %v", a.Kind, err)
				return
			}
		}
		ar := e.execute(ctx, opFromAction(e.newOpID(), a))
		gr.Actions = append(gr.Actions, ar)
		switch ar.Outcome {
		case OutcomeSucceeded:
			continue
		case OutcomeConflict:
			gr.Outcome = GuestConflict
		case OutcomeInterrupted:
			gr.Outcome = GuestInterrupted
		case OutcomeNotStarted:
			gr.Outcome = GuestNotStarted
		default:
			gr.Outcome = GuestFailed
		}
		gr.Detail = fmt.Sprintf("%s: %s", a.Kind, ar.Error)
		return
	}
}

func (e *Engine) logReport(ctx context.Context, rep Report) {
	counts := rep.Count()
	sent, ok := rep.Actions()
	e.log.InfoContext(ctx, "reconcile pass",
		"guests", len(rep.Guests), "in_sync", counts[GuestInSync], "changed", counts[GuestChanged],
		"skipped", counts[GuestSkipped], "failed", counts[GuestFailed], "conflict", counts[GuestConflict],
		"actions", sent, "succeeded", ok, "dry_run", rep.DryRun)
}

// Trigger asks Run for a pass as soon as possible, without waiting for the
// interval. Triggers made while a pass is pending collapse into one.
//
// With refs, the pass is a targeted one ([Engine.ReconcileGuests]) over
// just those guests, unless a trigger without refs, or the interval, asks
// for a full pass first: a hub that changed one guest's desired state does
// not cost a pass over the whole fleet. The guests named by triggers made
// while a pass runs are reconciled by the next one; passes never overlap.
func (e *Engine) Trigger(refs ...proxmox.Ref) {
	e.named.add(refs)
	select {
	case e.trigger <- struct{}{}:
	default:
	}
}

// Run recovers in-flight operations, then runs a pass every Interval (with
// jitter) and whenever Trigger is called, until ctx ends. A pass that fails
// to act is logged and retried at the next tick. When ctx ends, Run stops
// starting work, waits for the pass in progress (its Proxmox calls see the
// ended context; operations left in flight are resolved by the next
// Recover), closes the queue if the engine made it, and returns ctx.Err().
// The journal stays open: its owner closes it after Run returns. After
// Drain, Run starts no more passes and waits for ctx to end, or for
// Shutdown, after which it returns nil (at once if called after Shutdown).
func (e *Engine) Run(ctx context.Context) error {
	if !e.beginRun() {
		return nil
	}
	defer e.endRun()
	if _, err := e.ensureRecovered(ctx, true); err != nil && ctx.Err() == nil {
		e.log.ErrorContext(ctx, "recovery failed; retrying before the first pass", "err", err)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		full := true
		select {
		case <-ctx.Done():
			return e.stop(ctx)
		case <-e.shutdown:
			return e.stop(context.WithoutCancel(ctx))
		case <-timer.C:
		case <-e.trigger:
			full = false
			if !timer.Stop() {
				select {
				case <-timer.C:
					full = true // the interval ran out too
				default:
				}
			}
		}
		rep, ran, err := e.nextPass(ctx, full)
		if !ran {
			timer.Reset(e.nextDelay())
			continue
		}
		if errors.Is(err, ErrDraining) {
			// Drain was called: no more passes. Wait to be stopped.
			select {
			case <-ctx.Done():
				return e.stop(ctx)
			case <-e.shutdown:
				return e.stop(context.WithoutCancel(ctx))
			}
		}
		if err != nil && ctx.Err() == nil {
			e.log.ErrorContext(ctx, "reconcile pass did not act", "err", err)
		}
		if e.cfg.OnReport != nil && (err == nil || ctx.Err() == nil) {
			e.cfg.OnReport(rep)
		}
		timer.Reset(e.nextDelay())
	}
}

func (e *Engine) stop(ctx context.Context) error {
	if e.ownQ {
		// Jobs that were waiting have already resolved with ctx.Err();
		// wait for running ones to wind down.
		if err := e.q.Close(context.WithoutCancel(ctx)); err != nil {
			e.log.Error("closing the queue", "err", err)
		}
	}
	return ctx.Err()
}

// nextDelay is Interval varied by up to Jitter either way.
func (e *Engine) nextDelay() time.Duration {
	j := e.cfg.Jitter
	if j <= 0 {
		return e.cfg.Interval
	}
	return e.cfg.Interval - j + randDuration(2*j+1)
}
