package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/guestward/guestward/internal/backoff"
	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
)

// Actions that only one-shot operations use; Plan never emits them.
const (
	ActionShutdown ActionKind = "shutdown" // clean shutdown, with an optional timeout
	ActionReboot   ActionKind = "reboot"
)

// op is one operation: an action with its journal identity.
type op struct {
	id      string
	ref     proxmox.Ref
	kind    ActionKind
	set     map[string]string
	del     []string
	digest  string
	timeout time.Duration // shutdown only
	key     string        // idempotency key of a one-shot operation
	// disk, size and from are a resize's disk, new size and size when
	// planned, in bytes.
	disk       string
	size, from int64
	// observed is the digest of the configuration read before a
	// synchronous change (LXC) that carries no digest of its own: with
	// it, a lost answer can be told from a change that never arrived.
	observed string
	// class, why and prior are the operation's Reversibility, why an
	// irreversible one cannot be undone, and a reversible configuration
	// change's prior values (see Action.Prior); reverts names the
	// operation a revert undoes.
	class   Reversibility
	why     string
	prior   map[string]string
	reverts string
	// started and taskWait time the execution, for its last Event.
	started  time.Time
	taskWait time.Duration
}

func opFromAction(id string, a Action) *op {
	return &op{id: id, ref: a.Ref, kind: a.Kind, set: a.Set, del: a.Delete, digest: a.Digest,
		disk: a.Disk, size: a.Size, from: a.FromSize, class: a.Class, why: a.Why, prior: a.Prior}
}

func (o *op) action() Action {
	return Action{Kind: o.kind, Ref: o.ref, Set: o.set, Delete: o.del, Digest: o.digest,
		Disk: o.disk, Size: o.size, FromSize: o.from, Class: o.class, Why: o.why, Prior: o.prior}
}

// Journal parameters of an operation. set:<option> holds each value to set.
const (
	paramNode    = "node"
	paramType    = "type"
	paramDelete  = "delete"
	paramDigest  = "digest"
	paramTimeout = "timeout"
	paramSet     = "set:"
	// paramObserved is op.observed.
	paramObserved = "observed_digest"
	// A resize's disk, and its new and planned-from sizes in bytes.
	paramDisk     = "disk"
	paramSize     = "size"
	paramFromSize = "from_size"
)

func (o *op) params() map[string]string {
	p := map[string]string{paramNode: o.ref.Node, paramType: string(o.ref.Type)}
	for k, v := range o.set {
		p[paramSet+k] = v
	}
	if len(o.del) > 0 {
		p[paramDelete] = strings.Join(o.del, ",")
	}
	if o.digest != "" {
		p[paramDigest] = o.digest
	}
	if o.timeout > 0 {
		p[paramTimeout] = strconv.FormatInt(int64(o.timeout/time.Second), 10)
	}
	if o.observed != "" {
		p[paramObserved] = o.observed
	}
	if o.reverts != "" {
		p[paramReverts] = o.reverts
	}
	o.reversibilityParams(p)
	if o.kind == ActionResize {
		p[paramDisk] = o.disk
		p[paramSize] = strconv.FormatInt(o.size, 10)
		if o.from > 0 {
			p[paramFromSize] = strconv.FormatInt(o.from, 10)
		}
	}
	return p
}

// opFromEntry rebuilds an operation from its journal record.
func opFromEntry(e journal.Entry) (*op, error) {
	o := &op{
		id:       e.OpID,
		ref:      proxmox.Ref{Node: e.Params[paramNode], Type: proxmox.GuestType(e.Params[paramType]), VMID: e.VMID},
		kind:     ActionKind(e.Kind),
		digest:   e.Params[paramDigest],
		key:      e.IdempKey,
		observed: e.Params[paramObserved],
	}
	if err := o.ref.Validate(); err != nil {
		return nil, fmt.Errorf("operation %s: %w", e.OpID, err)
	}
	o.reversibilityFromParams(e.Params)
	for k, v := range e.Params {
		if name, ok := strings.CutPrefix(k, paramSet); ok {
			if o.set == nil {
				o.set = make(map[string]string)
			}
			o.set[name] = v
		}
	}
	if d := e.Params[paramDelete]; d != "" {
		o.del = strings.Split(d, ",")
	}
	if t := e.Params[paramTimeout]; t != "" {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("operation %s: timeout %q: %w", e.OpID, t, err)
		}
		o.timeout = time.Duration(n) * time.Second
	}
	switch o.kind {
	case ActionStart, ActionStop, ActionShutdown, ActionReboot, ActionSetConfig:
	case ActionResize:
		o.disk = e.Params[paramDisk]
		n, err := strconv.ParseInt(e.Params[paramSize], 10, 64)
		if err != nil || n <= 0 || o.disk == "" {
			return nil, fmt.Errorf("operation %s: resize of disk %q to size %q: not a disk and a positive size", e.OpID, o.disk, e.Params[paramSize])
		}
		o.size = n
		if f := e.Params[paramFromSize]; f != "" {
			if o.from, err = strconv.ParseInt(f, 10, 64); err != nil || o.from < 0 {
				return nil, fmt.Errorf("operation %s: resize from size %q: not a size", e.OpID, f)
			}
		}
	default:
		return nil, fmt.Errorf("operation %s: unknown kind %q", e.OpID, e.Kind)
	}
	return o, nil
}

// taskType is the type of the task Proxmox starts for the operation, ""
// when it starts none (an LXC configuration change is synchronous). A
// resize starts a "resize" task for both guest types (qemu-server's and
// pve-container's resize_vm fork one), except on QEMU nodes older than
// PVE 8, where it ran synchronously and left none.
func (o *op) taskType() string {
	if o.kind == ActionResize {
		return "resize"
	}
	prefix := "qm"
	if o.ref.Type == proxmox.LXC {
		prefix = "vz"
		if o.kind == ActionSetConfig {
			return ""
		}
	}
	switch o.kind {
	case ActionSetConfig:
		return "qmconfig"
	default:
		return prefix + string(o.kind)
	}
}

// ActionOutcome says how an action ended.
type ActionOutcome string

// The outcomes of an action.
const (
	OutcomeSucceeded ActionOutcome = "succeeded"
	// OutcomeFailed: Proxmox refused the action or its task failed.
	OutcomeFailed ActionOutcome = "failed"
	// OutcomeConflict: the guest changed under us (digest mismatch) or got
	// locked; nothing was changed, and the next pass plans it again.
	OutcomeConflict ActionOutcome = "conflict"
	// OutcomeVetoed: the policy refused the action; nothing was sent.
	OutcomeVetoed ActionOutcome = "vetoed"
	// OutcomeInterrupted: the operation stopped before its outcome was
	// known (the engine's context ended, a journal write failed, the
	// answer was lost and Proxmox could not be asked what happened, or
	// the status of its task could not be read). It stays in flight in
	// the journal until Recover resolves it, which the engine runs before
	// its next pass or one-shot operation.
	OutcomeInterrupted ActionOutcome = "interrupted"
	// OutcomePlanned: a dry run; nothing was sent.
	OutcomePlanned ActionOutcome = "planned"
	// OutcomeNotStarted: the engine was draining (see Engine.Drain);
	// nothing was journaled or sent.
	OutcomeNotStarted ActionOutcome = "not_started"
)

// ActionReport is what happened to one action.
//
// Err is the error Error describes, with its class: errors.Is matches the
// proxmox error classes (proxmox.ErrLocked, proxmox.ErrDigestMismatch,
// proxmox.ErrNotFound, ...), [ErrVetoed] for a veto, [ErrDraining], or
// the context's error when the operation was interrupted by its context.
// It is set wherever Error is, and is not part of the JSON form, which
// carries Error only.
type ActionReport struct {
	Action   Action        `json:"action"`
	OpID     string        `json:"op_id,omitempty"`
	UPID     proxmox.UPID  `json:"upid,omitempty"`
	Outcome  ActionOutcome `json:"outcome"`
	Error    string        `json:"error,omitempty"`
	Err      error         `json:"-"`
	Attempts int           `json:"attempts,omitempty"`
	Duration time.Duration `json:"duration_ns,omitempty"`

	// nothingDone: the outcome, a failure, proves that Proxmox did not
	// act (see didNothing); the journal's record says so too.
	nothingDone bool
}

// execute carries out one operation, journaling its intent before the call
// to Proxmox, its task when there is one, and its outcome.
//
// A task that fails because Proxmox could not take the guest's lock in
// time did nothing, and is tried again with the same backoff and within
// the same Retries as a call refused for a transient reason: the operation
// records the new task (TaskRunning again, with its UPID) and stays one
// operation.
func (e *Engine) execute(ctx context.Context, o *op) (rep ActionReport) {
	start := e.cfg.Now()
	o.started = start
	rep = ActionReport{Action: o.action(), OpID: o.id}
	if !e.beginOp() {
		rep.Outcome, rep.Err, rep.Error = OutcomeNotStarted, ErrDraining, ErrDraining.Error()
		return rep
	}
	defer e.endOp()
	journaled := false // the intent may be in the journal
	defer func() {
		rep.Duration = e.cfg.Now().Sub(start)
		if journaled && rep.Outcome == OutcomeInterrupted {
			// Left in flight: resolved before the next pass or one-shot
			// acts, not only after a restart.
			e.mustRecover.Store(true)
			e.leftInFlight(o.id)
		}
	}()
	fail := func(outcome ActionOutcome, err error) ActionReport {
		rep.Outcome, rep.Err, rep.Error = outcome, err, err.Error()
		e.lastEvent(o, &rep, "failed")
		return rep
	}

	if err := checkpoint.Reach(ctx, checkpoint.BeforeIntent); err != nil {
		return fail(OutcomeInterrupted, err)
	}
	intent := journal.Entry{
		OpID: o.id, VMID: o.ref.VMID, Kind: string(o.kind), Params: o.params(),
		State: journal.Started, IdempKey: o.key, At: start,
	}
	journaled = true
	if err := e.cfg.Journal.Append(ctx, intent); err != nil {
		// Nothing was sent. If the record did become durable after all,
		// Recover finds no task and closes it.
		return fail(OutcomeInterrupted, fmt.Errorf("journal intent: %w", err))
	}
	e.event(Event{Ref: o.ref, Kind: o.kind, OpID: o.id, Phase: "start"})
	if err := checkpoint.Reach(ctx, checkpoint.AfterIntent); err != nil {
		return fail(OutcomeInterrupted, err)
	}

	// The tasks this operation started: a later attempt whose answer is
	// lost must never take one of them for its own.
	var mine map[proxmox.UPID]bool
	at := start
	for {
		upid, err := e.send(ctx, o, at, &rep, mine)
		if cerr := checkpoint.Reach(ctx, checkpoint.AfterCall); cerr != nil {
			return fail(OutcomeInterrupted, cerr)
		}
		if err != nil {
			if outcomeUnknown(ctx, err) {
				return fail(OutcomeInterrupted, err)
			}
			return e.conclude(ctx, o, &rep, err, refusedBeforeActing(o, err))
		}
		if upid == "" {
			// Synchronous: the change is made.
			return e.conclude(ctx, o, &rep, nil, false)
		}
		rep.UPID = upid
		if mine == nil {
			mine = make(map[proxmox.UPID]bool)
		}
		mine[upid] = true
		err = e.cfg.Journal.Append(ctx, journal.Entry{OpID: o.id, State: journal.TaskRunning, UPID: string(upid)})
		e.claimGen.Add(1) // even on error: the record may have been kept
		if err != nil {
			return fail(OutcomeInterrupted, fmt.Errorf("journal task %s: %w", upid, err))
		}
		e.event(Event{Ref: o.ref, Kind: o.kind, OpID: o.id, Phase: "task", UPID: upid})
		if err := checkpoint.Reach(ctx, checkpoint.AfterTaskRecord); err != nil {
			return fail(OutcomeInterrupted, err)
		}
		waitStart := e.cfg.Now()
		gaveUp, err := e.waitTask(ctx, o, upid)
		o.taskWait += e.cfg.Now().Sub(waitStart)
		if cerr := checkpoint.Reach(ctx, checkpoint.AfterWait); cerr != nil {
			return fail(OutcomeInterrupted, cerr)
		}
		if !taskEnded(err) || gaveUp && err != nil {
			// We stopped waiting, or could not read how the task ended: it
			// goes on, or it finished in a way we do not know. Recording a
			// failure here could be untrue, and would invite a second run;
			// Recover finds out.
			return fail(OutcomeInterrupted, err)
		}
		if !taskRetryable(err) {
			return e.conclude(ctx, o, &rep, err, taskDidNothing(err))
		}
		// The task did nothing: it could not take the guest's lock in
		// time (a backup, a migration, another writer held it).
		if rep.Attempts >= e.cfg.Retries {
			return e.conclude(ctx, o, &rep, fmt.Errorf("gave up after %d attempts: %w", rep.Attempts, err), true)
		}
		e.log.InfoContext(ctx, "task did nothing; trying again", "op", o.id, "guest", o.ref.String(), "upid", string(upid), "err", err)
		if werr := backoff.Sleep(ctx, backoff.Delay(rep.Attempts, e.cfg.RetryMin, e.cfg.RetryMax)); werr != nil {
			return e.conclude(ctx, o, &rep, fmt.Errorf("%w (after attempt %d: %w)", werr, rep.Attempts, err), true)
		}
		at = e.cfg.Now()
	}
}

// waitTask waits for a task for at most TaskTimeout. gaveUp is true when
// the wait ended because ctx ended or the timeout ran out, rather than
// because the task did.
//
// A task that hands a request to Proxmox's HA stack (see haTaskType) ends
// as soon as the request is registered; the guest changes state later, in
// a task of the HA manager's own. For those, waitTask goes on to wait for
// the guest to reach the state asked for, until TaskTimeout after the
// request's task started: past that, the request is taken as failed
// ([errHAStateNotReached]), which is a way the operation ended, not a
// reason to give up.
func (e *Engine) waitTask(ctx context.Context, o *op, upid proxmox.UPID) (gaveUp bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, e.cfg.TaskTimeout)
	defer cancel()
	_, err = e.cfg.Proxmox.WaitTask(wctx, upid)
	if err != nil && wctx.Err() != nil {
		return true, fmt.Errorf("gave up waiting for task %s: %w", upid, err)
	}
	if err != nil {
		return false, err
	}
	info, perr := upid.Parse()
	if perr != nil || !isHATaskType(info.Type) {
		return false, nil
	}
	return e.waitHAState(ctx, o, info, true)
}

// The types of the tasks that hand a power request for an HA-managed guest
// to the HA stack instead of acting (qemu-server's vm_start, vm_stop and
// vm_shutdown, and pve-container's counterparts, when
// PVE::HA::Config::vm_is_ha_managed holds).
const (
	taskHAStart = "hastart"
	taskHAStop  = "hastop"
)

func isHATaskType(t string) bool { return t == taskHAStart || t == taskHAStop }

// haTaskType is the type of the task Proxmox starts for the operation when
// the guest is managed by HA, "" when it starts the same task as for any
// guest. Reboots and configuration changes are not handed to HA.
func (o *op) haTaskType() string {
	switch o.kind {
	case ActionStart:
		return taskHAStart
	case ActionStop, ActionShutdown:
		return taskHAStop
	}
	return ""
}

// haTarget is the power state an HA request of the operation asks for.
func (o *op) haTarget() string {
	if o.kind == ActionStart {
		return "running"
	}
	return "stopped"
}

// errHAStateNotReached ends an HA request whose guest did not reach the
// state asked for within TaskTimeout after the request was handed over:
// the HA manager did not carry it out (the resource is in an error state,
// say). The request itself was registered; sending it again is harmless.
var errHAStateNotReached = errors.New("the HA manager did not bring the guest to the state asked for in time")

// waitHAState waits until the guest of an HA request reaches the state it
// asks for, or until TaskTimeout after the request's task started
// (errHAStateNotReached). Without wait it looks once and reports a guest
// not there yet as gaveUp, unless the time is already past. gaveUp is also
// true when ctx ends.
func (e *Engine) waitHAState(ctx context.Context, o *op, task proxmox.UPIDInfo, wait bool) (gaveUp bool, err error) {
	deadline := task.StartTime.Add(e.cfg.TaskTimeout)
	if now := e.cfg.Now(); deadline.After(now.Add(e.cfg.TaskTimeout)) {
		// The node's clock runs ahead of ours: bound the wait by ours.
		deadline = now.Add(e.cfg.TaskTimeout)
	}
	target := o.haTarget()
	for {
		st, serr := e.cfg.Proxmox.Status(ctx, o.ref)
		if serr == nil && st.Status == target {
			return false, nil
		}
		if !e.cfg.Now().Before(deadline) {
			if serr != nil {
				return false, fmt.Errorf("%w: %s is not %s after %v (reading its status: %v)", errHAStateNotReached, o.ref, target, e.cfg.TaskTimeout, serr)
			}
			return false, fmt.Errorf("%w: %s is %s, not %s, %v after the request", errHAStateNotReached, o.ref, st.Status, target, e.cfg.TaskTimeout)
		}
		if !wait {
			return true, fmt.Errorf("the HA manager has not brought %s to %s yet", o.ref, target)
		}
		if err := backoff.Sleep(ctx, min(e.cfg.RetryMin, deadline.Sub(e.cfg.Now()))); err != nil {
			return true, fmt.Errorf("gave up waiting for the HA manager to bring %s to %s: %w", o.ref, target, err)
		}
	}
}

// taskEnded reports whether an error from WaitTask tells how the task
// ended: nil (it succeeded), the task's own failure, or the task being
// unknown to Proxmox. Any other error (its status could not be read) says
// nothing about the task.
func taskEnded(err error) bool {
	return err == nil || errors.Is(err, proxmox.ErrTaskFailed) || errors.Is(err, proxmox.ErrNotFound) ||
		errors.Is(err, errHAStateNotReached)
}

// outcomeUnknown reports whether err leaves it open whether Proxmox acted.
func outcomeUnknown(ctx context.Context, err error) bool {
	return errors.Is(err, proxmox.ErrOutcomeUnknown) || (ctx.Err() != nil && !errors.Is(err, errNotSent))
}

// errNotSent marks errors that prove the request never reached Proxmox.
var errNotSent = errors.New("not sent")

// send makes the call, retrying with capped backoff while the errors prove
// that Proxmox did nothing. A call whose answer was lost is resolved by
// looking for the task it would have started (or, for a synchronous
// change, for its effect) before it is tried again.
//
// Attempts count on from rep.Attempts, so that the calls an operation makes
// after a task that did nothing share the one budget of Retries. mine holds
// the tasks the operation already started, which a lost answer must never
// be matched to.
func (e *Engine) send(ctx context.Context, o *op, at time.Time, rep *ActionReport, mine map[proxmox.UPID]bool) (proxmox.UPID, error) {
	for attempt := rep.Attempts + 1; ; attempt++ {
		rep.Attempts = attempt
		upid, err := e.call(ctx, o)
		if err == nil {
			return upid, nil
		}
		if errors.Is(err, proxmox.ErrOutcomeUnknown) && ctx.Err() == nil {
			claimed, rerr := e.claimedTasks(ctx)
			if rerr != nil {
				return "", fmt.Errorf("%w (and looking for its outcome failed: %v)", err, rerr)
			}
			for u := range mine {
				claimed[u] = true
			}
			res, rerr := e.findOutcome(ctx, o, at, claimed)
			switch {
			case rerr != nil:
				return "", fmt.Errorf("%w (and looking for its outcome failed: %v)", err, rerr)
			case res.task != nil:
				return res.task.UPID, nil
			case res.applied:
				return "", nil
			case res.undecidable:
				// Sending it again could make the change twice, over
				// whatever changed the configuration since.
				return "", fmt.Errorf("outcome unknown: %w (%v)", errConfigMoved, err)
			}
			// Proxmox did not act: safe to try again.
		} else if !errors.Is(err, proxmox.ErrTransient) || ctx.Err() != nil {
			return "", err
		}
		if attempt >= e.cfg.Retries {
			return "", fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		if werr := backoff.Sleep(ctx, backoff.Delay(attempt, e.cfg.RetryMin, e.cfg.RetryMax)); werr != nil {
			return "", fmt.Errorf("%w: %w (%w)", errNotSent, werr, err)
		}
	}
}

// call sends the operation's request once.
func (e *Engine) call(ctx context.Context, o *op) (proxmox.UPID, error) {
	px := e.cfg.Proxmox
	switch o.kind {
	case ActionStart:
		return px.Start(ctx, o.ref)
	case ActionStop:
		return px.Stop(ctx, o.ref)
	case ActionShutdown:
		return px.Shutdown(ctx, o.ref, o.timeout)
	case ActionReboot:
		return px.Reboot(ctx, o.ref)
	case ActionSetConfig:
		return px.SetConfig(ctx, o.ref, proxmox.ConfigChange{Set: o.set, Delete: o.del, Digest: o.digest})
	case ActionResize:
		return px.Resize(ctx, o.ref, proxmox.DiskResize{Disk: o.disk, Size: o.size, Digest: o.digest})
	}
	return "", fmt.Errorf("%w: unknown action kind %q", errNotSent, o.kind)
}

// conclude records the outcome of an operation whose result is known and
// fills in the report. nothingDone says that err proves Proxmox did not
// act (see refusedBeforeActing and taskDidNothing); a failure is then
// journaled with [nothingDoneMark], which leaves the key of a one-shot
// operation usable for another attempt.
func (e *Engine) conclude(ctx context.Context, o *op, rep *ActionReport, err error, nothingDone bool) ActionReport {
	outcome, state := classify(o.kind, err)
	nothingDone = nothingDone && err != nil && state == journal.Failed
	rec := journal.Entry{OpID: o.id, State: state}
	if state == journal.Succeeded {
		rec.Error = e.producedDigest(ctx, o)
	}
	if err != nil {
		rec.Error = err.Error()
		if nothingDone {
			rec.Error = nothingDoneMark + rec.Error
		}
	}
	if jerr := e.cfg.Journal.Append(ctx, rec); jerr != nil {
		rep.Outcome = OutcomeInterrupted
		if err != nil {
			rep.Err = fmt.Errorf("journal outcome: %w (the operation itself: %w)", jerr, err)
		} else {
			rep.Err = fmt.Errorf("journal outcome: %w (the operation itself: %s)", jerr, errString(err))
		}
		rep.Error = rep.Err.Error()
		e.lastEvent(o, rep, "failed")
		return *rep
	}
	rep.Outcome, rep.nothingDone = outcome, nothingDone
	if err != nil {
		rep.Err, rep.Error = err, err.Error()
	}
	phase := "done"
	if state == journal.Failed {
		phase = "failed"
	}
	e.lastEvent(o, rep, phase)
	if cerr := checkpoint.Reach(ctx, checkpoint.AfterOutcome); cerr != nil {
		rep.Err = cerr
		if err != nil {
			rep.Err = fmt.Errorf("%w (the operation itself: %w)", cerr, err)
		}
		rep.Error = rep.Err.Error()
	}
	return *rep
}

// nothingDoneMark begins the Error of a Failed record whose failure proves
// that Proxmox did not act on the operation. It is how the engine tells,
// from the journal alone, a one-shot attempt that leaves its key usable
// (see [OneShot].Key) from one that consumed it, without a field the
// journal does not have. Only conclude writes it; errors from Proxmox or
// from the engine never begin with it.
const nothingDoneMark = "nothing done: "

// didNothing reports whether a journaled operation's latest record is a
// failure that proves Proxmox did not act.
func didNothing(en journal.Entry) bool {
	return en.State == journal.Failed && strings.HasPrefix(en.Error, nothingDoneMark)
}

// refusedBeforeActing reports whether err, the error of a call whose
// outcome is known (not [proxmox.ErrOutcomeUnknown]), proves that Proxmox
// did nothing:
//
//   - the request never left (errNotSent, or the client refused it: an
//     invalid change, argument or guest reference);
//   - Proxmox refused it before running its handler: a parameter that
//     failed the API schema (400), bad credentials (401), a missing
//     privilege (403), an unknown path (501), or a transient refusal that
//     outlasted the retries (429, and 595/596 from a node that could not
//     reach the guest's node; the lock that could not be taken in time);
//   - the handler refused it while checking it against the guest, which
//     qemu-server and pve-container do before they change anything (see
//     guestRefusal).
//
// One exception: an LXC configuration change answered 400 proves
// nothing. pve-container's update_vm applies what it can hot-plug into a
// running container first, and only then refuses the whole change with
// the errors of the rest (as parameter errors) without writing the
// configuration.
//
// Any other failure may have come after part of the work; it consumes a
// one-shot operation's key.
func refusedBeforeActing(o *op, err error) bool {
	if err == nil || errors.Is(err, proxmox.ErrOutcomeUnknown) {
		return false
	}
	if o.kind == ActionSetConfig && o.ref.Type == proxmox.LXC && errors.Is(err, proxmox.ErrInvalidParameter) {
		return false
	}
	for _, class := range []error{errNotSent, proxmox.ErrInvalidConfig, proxmox.ErrInvalidArgument, proxmox.ErrInvalidRef,
		proxmox.ErrInvalidParameter, proxmox.ErrUnauthorized, proxmox.ErrForbidden, proxmox.ErrNotImplemented,
		proxmox.ErrTransient} {
		if errors.Is(err, class) {
			return true
		}
	}
	return guestRefusal(err)
}

// guestRefusal reports the failures a request meets while Proxmox checks
// it against the guest, before anything is changed, whether the call
// answers them or its task exits with them: the guest is locked (the
// check_lock of qemu-server's and pve-container's handlers, or the config
// lock of lock_config not taken within its timeout), the digest sent with
// a change is stale (checked right after the configuration is loaded, in
// the lock), the guest's configuration does not exist on the node, or a
// power action found the guest already in the other state (vm_start,
// vm_stop, vm_shutdown and vm_reboot die before acting).
func guestRefusal(err error) bool {
	return errors.Is(err, proxmox.ErrLocked) || errors.Is(err, proxmox.ErrDigestMismatch) ||
		errors.Is(err, proxmox.ErrNotFound) || errors.Is(err, proxmox.ErrAlreadyRunning) ||
		errors.Is(err, proxmox.ErrNotRunning)
}

// taskDidNothing reports whether err, how a task ended, proves that the
// task did nothing: its exit status is a guest refusal, or the lock it
// needed could not be taken in time (transient). A task Proxmox no longer
// knows proves nothing.
func taskDidNothing(err error) bool {
	return errors.Is(err, proxmox.ErrTaskFailed) && (guestRefusal(err) || errors.Is(err, proxmox.ErrTransient))
}

// taskRetryable reports whether a task's failure is worth another
// attempt: it did nothing, and for a reason expected to clear (Proxmox
// could not take the guest's lock within its timeout).
func taskRetryable(err error) bool {
	return errors.Is(err, proxmox.ErrTaskFailed) && errors.Is(err, proxmox.ErrTransient) &&
		!errors.Is(err, proxmox.ErrOutcomeUnknown)
}

func errString(err error) string {
	if err == nil {
		return "succeeded"
	}
	return err.Error()
}

// classify maps the error of an operation to its outcome. A start that
// finds the guest running, a stop that finds it stopped, or a resize that
// finds the disk at its size (pve-container refuses that with "disk is
// already at specified size") reached the state it asked for: it
// succeeded.
func classify(kind ActionKind, err error) (ActionOutcome, journal.State) {
	switch {
	case err == nil:
		return OutcomeSucceeded, journal.Succeeded
	case kind == ActionStart && errors.Is(err, proxmox.ErrAlreadyRunning),
		(kind == ActionStop || kind == ActionShutdown) && errors.Is(err, proxmox.ErrNotRunning),
		kind == ActionResize && errors.Is(err, proxmox.ErrAlreadySized):
		return OutcomeSucceeded, journal.Succeeded
	case errors.Is(err, proxmox.ErrDigestMismatch), errors.Is(err, proxmox.ErrLocked):
		return OutcomeConflict, journal.Failed
	default:
		return OutcomeFailed, journal.Failed
	}
}

// outcomeSearch is what findOutcome found.
type outcomeSearch struct {
	task    *proxmox.TaskInfo // the task the operation started
	applied bool              // a synchronous change is in effect
	// undecidable: a synchronous change is not in effect, but the
	// configuration changed since it was read, so the change may have
	// been made and then overwritten: whether it acted cannot be told.
	undecidable bool
}

// errConfigMoved is the failure of a synchronous change whose answer was
// lost when the configuration changed since it was read and does not hold
// the change.
var errConfigMoved = errors.New("the answer was lost, and the configuration has changed since it was read without holding the change: it may have been made and overwritten, so it is not sent again")

// findOutcome looks for the effect of an operation journaled at `at` whose
// answer from Proxmox is unknown: the task it started, or, for an LXC
// configuration change (which starts none), whether the change is in
// effect. It first waits until SettleDelay has passed since `at`, so that a
// request still in flight has reached Proxmox. claimed holds the tasks that
// belong to other operations (see claimedTasks): a task of the right type
// that an earlier operation on the guest started, within ClockSkew of
// `at`, must never be taken for this one's, or an operation that never
// reached Proxmox would be recorded as done.
func (e *Engine) findOutcome(ctx context.Context, o *op, at time.Time, claimed map[proxmox.UPID]bool) (outcomeSearch, error) {
	if wait := at.Add(e.cfg.SettleDelay).Sub(e.cfg.Now()); wait > 0 {
		if err := backoff.Sleep(ctx, wait); err != nil {
			return outcomeSearch{}, err
		}
	}
	tt := o.taskType()
	if tt == "" {
		return e.changeInEffect(ctx, o)
	}
	tasks, err := e.searchTasks(ctx, o.ref, tt, at.Add(-e.cfg.ClockSkew))
	if err != nil {
		return outcomeSearch{}, err
	}
	if ha := o.haTaskType(); ha != "" {
		// An HA-managed guest's request starts a task of another type.
		more, err := e.searchTasks(ctx, o.ref, ha, at.Add(-e.cfg.ClockSkew))
		if err != nil {
			return outcomeSearch{}, err
		}
		tasks = append(tasks, more...)
	}
	// The request left after `at`: a task that started then or later is
	// the likelier match (oldest first); one from before can only be ours
	// through clock skew (closest to `at` first).
	floor := at.Truncate(time.Second)
	sort.SliceStable(tasks, func(i, j int) bool {
		ai, aj := !tasks[i].StartTime.Before(floor), !tasks[j].StartTime.Before(floor)
		if ai != aj {
			return ai
		}
		if ai {
			return tasks[i].StartTime.Before(tasks[j].StartTime)
		}
		return tasks[i].StartTime.After(tasks[j].StartTime)
	})
	for i := range tasks {
		t := &tasks[i]
		if claimed[t.UPID] || t.ID != strconv.Itoa(o.ref.VMID) || !e.ownTask(t.UPID) {
			continue
		}
		return outcomeSearch{task: t}, nil
	}
	if o.kind == ActionResize {
		// A QEMU node before PVE 8 resized synchronously, without a
		// task; and whoever grew the disk, it has the size asked for.
		return e.resizeInEffect(ctx, o)
	}
	return outcomeSearch{}, nil
}

// resizeInEffect reports a resize as applied when the disk's configured
// size has reached the size it asks for. The size is absolute, so a disk
// that already has it needs nothing more, whoever grew it; one that does
// not has not been resized by this operation, which it is then safe to
// send again (Proxmox refuses to shrink, and grows to an absolute size
// once).
func (e *Engine) resizeInEffect(ctx context.Context, o *op) (outcomeSearch, error) {
	cfg, err := e.cfg.Proxmox.Config(ctx, o.ref)
	if err != nil {
		return outcomeSearch{}, fmt.Errorf("reading the config of %s: %w", o.ref, err)
	}
	v, ok := e.normalizeSet(o.ref.Type).Volume(o.disk, cfg.Values[o.disk])
	return outcomeSearch{applied: ok && v.Size >= o.size}, nil
}

// claimCache keeps, for one Recover, the tasks journaled operations own, so
// that resolving many operations reads every operation once rather than
// once each. Only the claims on the guest being resolved matter (a task
// search is for one guest), and an operation on that guest runs in its
// lane, which Recover holds while it resolves: so the claims read stay
// complete unless this engine journaled a task since, which claimGen
// tells.
type claimCache struct {
	gen uint64
	set map[proxmox.UPID]bool // nil until read
}

// claims returns the tasks journaled operations own, reading them again
// only if the engine has journaled a task since the last read. The map is
// shared: callers must not change it.
func (c *claimCache) claims(ctx context.Context, e *Engine) (map[proxmox.UPID]bool, error) {
	gen := e.claimGen.Load()
	if c.set != nil && c.gen == gen {
		return c.set, nil
	}
	set, err := e.claimedTasks(ctx)
	if err != nil {
		return nil, err
	}
	c.gen, c.set = gen, set
	return set, nil
}

// journaled counts a task Recover itself journaled for an operation (ok
// when the append succeeded): the cache takes it in rather than read every
// operation again, unless another claim came meanwhile.
func (c *claimCache) journaled(e *Engine, upid proxmox.UPID, ok bool) {
	gen := e.claimGen.Add(1)
	if ok && c.set != nil && c.gen == gen-1 {
		c.set[upid] = true
		c.gen = gen
	}
}

// claimedTasks returns the tasks that journaled operations own: every UPID
// the journal records. NewEngine made sure the journal can list them.
func (e *Engine) claimedTasks(ctx context.Context) (map[proxmox.UPID]bool, error) {
	ops, err := e.cfg.Journal.(journal.OpLister).Ops(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the journal's tasks: %w", err)
	}
	claimed := make(map[proxmox.UPID]bool)
	for _, en := range ops {
		if en.UPID != "" {
			claimed[proxmox.UPID(en.UPID)] = true
		}
	}
	return claimed, nil
}

// maxSearchTasks bounds the tasks one search for an operation's task may
// find. The search lists one guest's tasks of one type, started by the
// engine since shortly before the operation: a handful. A list cut short
// would lose its oldest entries, those nearest the operation, so a search
// that finds more than this fails rather than guess.
const maxSearchTasks = 100

// searchTasks lists the tasks of type tt that the engine's user started
// for ref since `since`, narrowed by Proxmox and bounded: it fails when
// there are more than maxSearchTasks.
func (e *Engine) searchTasks(ctx context.Context, ref proxmox.Ref, tt string, since time.Time) ([]proxmox.TaskInfo, error) {
	tasks, err := e.cfg.Proxmox.Tasks(ctx, ref.Node, proxmox.TaskFilter{
		VMID: ref.VMID, Type: tt, Since: since, User: e.taskUser(), Limit: maxSearchTasks + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("listing tasks of %s: %w", ref, err)
	}
	if len(tasks) > maxSearchTasks {
		return nil, fmt.Errorf("listing tasks of %s: more than %d %s tasks since %s; which one is the operation's cannot be told", ref, maxSearchTasks, tt, since.UTC().Format(time.RFC3339))
	}
	return tasks, nil
}

// taskUser is the user whose tasks the engine's client starts: the
// client's identity when Proxmox can tell it (asked now: a password login
// learns Proxmox's spelling of the user only when it logs in), else
// TaskUser; "" when neither is known.
func (e *Engine) taskUser() string {
	if id, ok := e.cfg.Proxmox.(interface{ TaskUser() string }); ok {
		if own := id.TaskUser(); own != "" {
			return own
		}
	}
	return e.cfg.TaskUser
}

// ownTask reports whether a task may have been started by the engine's
// client: those of taskUser, or any task when that is unknown.
func (e *Engine) ownTask(upid proxmox.UPID) bool {
	user := e.taskUser()
	if user == "" {
		return true
	}
	info, err := upid.Parse()
	return err == nil && info.User == user
}

// changeInEffect looks at the guest's configuration for the effect of a
// synchronous change whose answer is unknown. It is applied when every
// option has the value the change gives it. It is not when the
// configuration still has the digest it had before the change was sent
// (the operation's digest, or the one read before a change without one):
// nothing happened, and sending it again is safe. When the configuration
// changed since and does not hold the change, the change may have been
// made and then overwritten by another writer, or never have arrived:
// that is undecidable. An operation journaled without a digest (by an
// older engine) counts as not applied.
func (e *Engine) changeInEffect(ctx context.Context, o *op) (outcomeSearch, error) {
	cfg, err := e.cfg.Proxmox.Config(ctx, o.ref)
	if err != nil {
		return outcomeSearch{}, fmt.Errorf("reading the config of %s: %w", o.ref, err)
	}
	set := e.normalizeSet(o.ref.Type)
	applied := true
	for k, v := range o.set {
		if !set.Equal(k, v, cfg.Values[k]) {
			applied = false
		}
	}
	for _, k := range o.del {
		if _, ok := cfg.Values[k]; ok {
			applied = false
		}
	}
	before := o.digest
	if before == "" {
		before = o.observed
	}
	return outcomeSearch{applied: applied, undecidable: !applied && before != "" && cfg.Digest != before}, nil
}
