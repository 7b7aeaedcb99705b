package reconcile

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"github.com/guestward/guestward/internal/backoff"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
)

// RecoveredOp is the resolution of one operation that was in flight.
type RecoveredOp struct {
	OpID string        `json:"op_id"`
	Ref  proxmox.Ref   `json:"-"`
	Kind ActionKind    `json:"kind"`
	Key  string        `json:"idemp_key,omitempty"`
	From journal.State `json:"from"`
	To   journal.State `json:"to"` // Succeeded or Failed; empty if unresolved
	UPID proxmox.UPID  `json:"upid,omitempty"`
	// How explains the resolution: "task finished", "task adopted",
	// "no task: never reached Proxmox", "change in effect", ...
	How   string `json:"how"`
	Error string `json:"error,omitempty"` // the operation's failure, or why it stays unresolved

	outcome ActionOutcome // once resolved
}

// RecoveryReport lists what Recover did.
type RecoveryReport struct {
	Ops []RecoveredOp `json:"ops"`
}

// Unresolved returns the operations Recover could not resolve.
func (r RecoveryReport) Unresolved() []RecoveredOp {
	var out []RecoveredOp
	for _, o := range r.Ops {
		if o.To == "" {
			out = append(out, o)
		}
	}
	return out
}

// ErrUnresolved is returned, wrapped, by Recover when some operations are
// still in flight afterwards (Proxmox could not be asked, say), and by
// Apply for a guest with such an operation. Until a later Recover resolves
// it, nothing else is sent for that guest: passes skip it
// ([SkipUnresolved]) and Apply refuses it, while other guests are acted on.
var ErrUnresolved = errors.New("reconcile: in-flight operations unresolved")

// Recover resolves every operation the journal shows in flight, as a crash
// leaves them, and must run before anything else mutates guests; passes and
// Apply run it themselves if it has not succeeded yet, and again whenever an
// operation was left in flight (interrupted) since.
//
//   - An operation with a recorded task is resolved by the task: awaited if
//     it still runs (for at most Config.TaskTimeout), then recorded as
//     succeeded or failed. If the task's node cannot be asked, the
//     operation stays unresolved: Recover does not wait for the node. The
//     recovery that passes and Apply run first does not wait for a running
//     task either: its operation stays unresolved, and its guest alone,
//     until a later pass finds the task ended.
//   - An operation without one (the crash came between journaling the
//     intent and Proxmox's answer) is matched against the node's task list:
//     a task of the right type for the guest, started after the intent
//     (within ClockSkew) and owned by no other journaled operation, is
//     adopted and awaited. An LXC configuration change, which starts no
//     task, is checked against the guest's configuration instead: it
//     succeeded if the configuration holds it; it never arrived if the
//     configuration is still the one it was sent against (same digest);
//     otherwise someone else changed the configuration since, the change
//     may have been made and overwritten, and it is recorded as failed
//     with its outcome unknown, never to be sent again. With nothing
//     found, the request never reached Proxmox, and the operation is
//     recorded as failed ("not started"): it never ran. Recover waits
//     SettleDelay after the intent before deciding this, so that a request
//     still travelling cannot be missed.
//
// Every resolution is journaled, so nothing runs twice: an operation with
// an idempotency key that is resolved as succeeded stays applied. Recover
// holds each guest's queue lane while it resolves that guest's operation;
// an operation this engine is still running when Recover reads the journal
// is thus waited for, and left alone if it ends on its own.
func (e *Engine) Recover(ctx context.Context) (RecoveryReport, error) {
	if e.cfg.Journal == nil {
		return RecoveryReport{}, fmt.Errorf("%w: Recover needs a journal", ErrDryRun)
	}
	e.recoverMu.Lock()
	defer e.recoverMu.Unlock()
	return e.recoverLocked(ctx, true)
}

// ensureRecovered runs Recover if it has not succeeded yet, or if an
// operation was left in flight since it last did. Unless wait is set, it
// does not wait for a task that still runs: that operation stays
// unresolved.
func (e *Engine) ensureRecovered(ctx context.Context, wait bool) (RecoveryReport, error) {
	e.recoverMu.Lock()
	defer e.recoverMu.Unlock()
	if !e.mustRecover.Load() {
		return RecoveryReport{}, nil
	}
	return e.recoverLocked(ctx, wait)
}

// recoverBefore runs ensureRecovered before a pass or a one-shot
// operation, and returns the operations that stay unresolved by guest.
// Its error is for a recovery that could not look at every operation: the
// journal could not be read, ctx ended, or an unresolved record names no
// guest; then nothing may be sent at all.
func (e *Engine) recoverBefore(ctx context.Context) (map[int]RecoveredOp, error) {
	blocked, _, err := e.recoverBeforeN(ctx)
	return blocked, err
}

// recoverBeforeN is recoverBefore that also returns the number of
// operations the recovery looked at (0 if none ran).
func (e *Engine) recoverBeforeN(ctx context.Context) (map[int]RecoveredOp, int, error) {
	rep, err := e.ensureRecovered(ctx, false)
	if err == nil {
		return nil, len(rep.Ops), nil
	}
	if !errors.Is(err, ErrUnresolved) || ctx.Err() != nil {
		return nil, len(rep.Ops), err
	}
	blocked := make(map[int]RecoveredOp)
	for _, o := range rep.Unresolved() {
		if o.Ref.VMID <= 0 {
			return nil, len(rep.Ops), fmt.Errorf("%w; operation %s names no guest", err, o.OpID)
		}
		if _, ok := blocked[o.Ref.VMID]; !ok {
			blocked[o.Ref.VMID] = o
		}
	}
	return blocked, len(rep.Ops), nil
}

func (e *Engine) recoverLocked(ctx context.Context, wait bool) (RecoveryReport, error) {
	// Cleared first: an operation interrupted while this runs sets it
	// again, and the next pass looks once more.
	e.mustRecover.Store(false)
	before := e.recoveryStarted()
	rep, err := e.recover(ctx, wait)
	if err != nil {
		e.mustRecover.Store(true)
	}
	e.recoveryEnded(before, rep, err)
	return rep, err
}

func (e *Engine) recover(ctx context.Context, wait bool) (RecoveryReport, error) {
	inflight, err := e.cfg.Journal.InFlight(ctx)
	if err != nil {
		return RecoveryReport{}, fmt.Errorf("reading in-flight operations: %w", err)
	}
	var rep RecoveryReport
	var claims claimCache
	for _, en := range inflight {
		r := RecoveredOp{OpID: en.OpID, Kind: ActionKind(en.Kind), Key: userKey(en.IdempKey), From: en.State, UPID: proxmox.UPID(en.UPID)}
		o, err := opFromEntry(en)
		if err != nil {
			// A record we cannot act on: close it, it cannot be retried.
			r.How, r.Error = "unreadable record", err.Error()
			if jerr := e.cfg.Journal.Append(ctx, journal.Entry{OpID: en.OpID, State: journal.Failed, Error: "recovery: " + err.Error()}); jerr != nil {
				r.Error = fmt.Sprintf("%v; and recording it failed: %v", err, jerr)
			} else {
				r.To = journal.Failed
			}
			rep.Ops = append(rep.Ops, r)
			continue
		}
		r.Ref = o.ref
		// Hold the guest's lane: nothing else may touch it meanwhile.
		moved := false
		qerr := e.q.Do(ctx, o.ref.VMID, func(ctx context.Context) error {
			// The operation may have moved on while we waited for the
			// lane: one that this engine was running when the journal
			// was read has finished since, or recorded its task.
			cur, ok, err := e.cfg.Journal.Latest(ctx, en.OpID)
			switch {
			case err != nil:
				r.Error = fmt.Sprintf("reading the operation again: %v", err)
			case !ok || cur.State.Terminal():
				moved = true
			default:
				r.From, r.UPID = cur.State, proxmox.UPID(cur.UPID)
				e.resolve(ctx, o, cur, &r, wait, &claims)
			}
			return nil
		})
		if moved {
			continue // it ended on its own: nothing to resolve
		}
		if qerr != nil {
			r.Error = qerr.Error()
		}
		rep.Ops = append(rep.Ops, r)
		if r.To != "" {
			e.recoveredEvent(o, &r)
			e.log.InfoContext(ctx, "recovered operation", "op", r.OpID, "guest", r.Ref.String(), "kind", r.Kind, "to", r.To, "how", r.How)
		} else {
			e.log.WarnContext(ctx, "operation still unresolved", "op", r.OpID, "guest", r.Ref.String(), "kind", r.Kind, "err", r.Error)
		}
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if n := len(rep.Unresolved()); n > 0 {
		return rep, fmt.Errorf("%w: %d of %d", ErrUnresolved, n, len(rep.Ops))
	}
	return rep, nil
}

// resolve settles one in-flight operation, filling in r. Unless wait is
// set, an operation whose task still runs is left unresolved.
func (e *Engine) resolve(ctx context.Context, o *op, en journal.Entry, r *RecoveredOp, wait bool, claims *claimCache) {
	upid := proxmox.UPID(en.UPID)
	if upid == "" {
		// Read inside the lane, so that the tasks of operations that ran
		// on this guest meanwhile are known to be theirs.
		claimed, err := claims.claims(ctx, e)
		if err != nil {
			r.Error = err.Error()
			return
		}
		found, err := e.findOutcome(ctx, o, en.At, claimed)
		switch {
		case err != nil:
			r.Error = err.Error()
			return
		case found.task != nil:
			upid = found.task.UPID
			err := e.cfg.Journal.Append(ctx, journal.Entry{OpID: o.id, State: journal.TaskRunning, UPID: string(upid)})
			claims.journaled(e, upid, err == nil)
			if err != nil {
				r.Error = fmt.Sprintf("recording the adopted task %s: %v", upid, err)
				return
			}
			r.UPID, r.How = upid, "task adopted"
		case found.applied:
			e.finishRecovered(ctx, o, r, nil, "change in effect", false)
			return
		case found.undecidable:
			// It may have run: record it as failed, never run it again.
			e.finishRecovered(ctx, o, r, fmt.Errorf("outcome unknown: %w", errConfigMoved), "configuration changed since: outcome unknown", false)
			return
		default:
			how := "no task: the request never reached Proxmox"
			if o.taskType() == "" {
				how = "change not in effect: the request never reached Proxmox"
			}
			// Nothing reached Proxmox: a one-shot's key stays usable.
			e.finishRecovered(ctx, o, r, fmt.Errorf("%w: not started: %s", errNotSent, how), how, true)
			return
		}
	}
	// Ask once how the task is doing before waiting for it: WaitTask
	// rides out a node it cannot reach for as long as it stays
	// unreachable, and Recover would hold up every pass and one-shot
	// meanwhile. Unreachable now, the operation stays unresolved, and a
	// later Recover tries again.
	st, err := e.cfg.Proxmox.TaskStatus(ctx, upid)
	if err == nil && st.Status == "running" && !wait {
		// Before a pass or a one-shot: leave its guest alone this time
		// rather than hold up every other guest.
		r.Error = fmt.Sprintf("task %s still running", upid)
		return
	}
	gaveUp := false
	info, perr := upid.Parse()
	switch {
	case err == nil && !st.Running() && perr == nil && isHATaskType(info.Type) && st.Succeeded():
		// An HA request that was handed over: it is done once the guest
		// is in the state it asks for. Before a pass, look once.
		gaveUp, err = e.waitHAState(ctx, o, info, wait)
	case err == nil || errors.Is(err, proxmox.ErrNotFound):
		// Running, finished, or not known yet (a task just forked):
		// WaitTask waits for the first and tolerates the last a while.
		gaveUp, err = e.waitTask(ctx, o, upid)
	}
	if !taskEnded(err) || err != nil && (gaveUp || ctx.Err() != nil) {
		// How the task ended could not be read: still in flight.
		r.Error = err.Error()
		return
	}
	if err != nil && errors.Is(err, proxmox.ErrNotFound) && !errors.Is(err, proxmox.ErrTaskFailed) {
		// Proxmox no longer knows the task (its log was rotated away).
		// Whether it succeeded cannot be told; it did run, so it must not
		// run again: record it as failed with the reason.
		e.finishRecovered(ctx, o, r, fmt.Errorf("outcome unknown: task %s is gone: %w", upid, err), "task gone", false)
		return
	}
	if r.How == "" {
		r.How = "task finished"
	}
	nothingDone := false
	if err != nil && taskDidNothing(err) {
		// The task did nothing. But the engine retries such a task (a
		// lock timeout) under the same operation, and may have sent the
		// request again, and crashed, before it could record the new
		// task: look for it before taking the operation as done.
		next, ferr := e.laterTask(ctx, o, upid, en.At, claims)
		switch {
		case ferr != nil:
			r.Error = fmt.Sprintf("task %s did nothing (%v), and looking for a later attempt failed: %v", upid, err, ferr)
			return
		case next != nil:
			jerr := e.cfg.Journal.Append(ctx, journal.Entry{OpID: o.id, State: journal.TaskRunning, UPID: string(next.UPID)})
			claims.journaled(e, next.UPID, jerr == nil)
			if jerr != nil {
				r.Error = fmt.Sprintf("recording the adopted task %s: %v", next.UPID, jerr)
				return
			}
			r.UPID, r.How = next.UPID, "retried task adopted"
			en.UPID = string(next.UPID)
			e.resolve(ctx, o, en, r, wait, claims)
			return
		}
		nothingDone = true
	}
	e.finishRecovered(ctx, o, r, err, r.How, nothingDone)
}

// laterTask looks for a task the operation started after the task prev
// failed without acting: a task of the operation's type (or its HA type)
// for the guest, started by the engine's user no earlier than prev, and
// owned by no journaled operation. It waits SettleDelay after the
// operation's latest record (at), so that a request sent again just before
// a crash has reached Proxmox.
func (e *Engine) laterTask(ctx context.Context, o *op, prev proxmox.UPID, at time.Time, claims *claimCache) (*proxmox.TaskInfo, error) {
	pi, err := prev.Parse()
	if err != nil {
		return nil, err
	}
	if wait := at.Add(e.cfg.SettleDelay).Sub(e.cfg.Now()); wait > 0 {
		if err := backoff.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
	claimed, err := claims.claims(ctx, e)
	if err != nil {
		return nil, err
	}
	types := []string{o.taskType()}
	if ha := o.haTaskType(); ha != "" {
		types = append(types, ha)
	}
	for _, tt := range types {
		if tt == "" {
			continue
		}
		tasks, err := e.searchTasks(ctx, o.ref, tt, pi.StartTime)
		if err != nil {
			return nil, err
		}
		sort.SliceStable(tasks, func(i, j int) bool { return tasks[i].StartTime.Before(tasks[j].StartTime) })
		for i := range tasks {
			t := &tasks[i]
			if claimed[t.UPID] || t.UPID == prev || t.ID != strconv.Itoa(o.ref.VMID) || !e.ownTask(t.UPID) || t.StartTime.Before(pi.StartTime) {
				continue
			}
			return t, nil
		}
	}
	return nil, nil
}

// finishRecovered journals the outcome of a recovered operation.
// nothingDone says that err proves Proxmox did not act; the failure is then
// journaled with nothingDoneMark, which leaves a one-shot's key usable.
func (e *Engine) finishRecovered(ctx context.Context, o *op, r *RecoveredOp, err error, how string, nothingDone bool) {
	outcome, state := classify(o.kind, err)
	rec := journal.Entry{OpID: o.id, State: state}
	if err != nil {
		rec.Error = err.Error()
		if nothingDone && state == journal.Failed {
			rec.Error = nothingDoneMark + rec.Error
		}
		r.Error = err.Error()
	}
	if jerr := e.cfg.Journal.Append(ctx, rec); jerr != nil {
		r.Error = fmt.Sprintf("recording the outcome: %v", jerr)
		return
	}
	r.To, r.How, r.outcome = state, how, outcome
}

// recoveredEvent reports an operation Recover resolved (see Event).
func (e *Engine) recoveredEvent(o *op, r *RecoveredOp) {
	if e.cfg.OnEvent == nil {
		return
	}
	phase, detail := "done", r.How
	if r.To != journal.Succeeded {
		phase, detail = "failed", r.Error
	}
	e.event(Event{Ref: o.ref, Kind: o.kind, OpID: o.id, Phase: phase, UPID: r.UPID, Detail: detail,
		Outcome: r.outcome, Recovered: true})
}

func randDuration(n time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	return rand.N(n)
}
