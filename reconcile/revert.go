package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
)

// RevertOptions adjusts [Engine.RevertWith]. The zero value is what
// [Engine.Revert] does.
type RevertOptions struct {
	// Force plans the revert against the guest as it is now instead of
	// refusing a guest that changed since the operation
	// ([ErrRevertConflict]): a configuration change's options that do not
	// hold their prior values get them back (and those that were absent
	// are deleted), guarded by the digest read now; a power operation's
	// guest is brought to its prior state whatever state it is in. What
	// changed since in other options is kept.
	Force bool
	// AllowIrreversible approves a revert that itself cannot be undone
	// (see [Reversibility]); without it such a revert is refused with
	// [ErrIrreversible]. An irreversible operation is never reverted.
	AllowIrreversible bool
}

// Errors of [Engine.Revert]. Each refusal below wraps ErrNotRevertible and
// its own sentinel; nothing is journaled or sent.
var (
	// ErrNotRevertible is wrapped by every refusal to revert an operation
	// for what the operation is: unknown, not succeeded, in flight,
	// irreversible, or with nothing to undo.
	ErrNotRevertible = errors.New("reconcile: operation cannot be reverted")
	// ErrOpUnknown: the journal holds no operation with that id (never
	// made, or dropped by the journal's retention).
	ErrOpUnknown = errors.New("reconcile: no such operation")
	// ErrOpNotSucceeded: the operation failed; there is nothing of it to
	// undo.
	ErrOpNotSucceeded = errors.New("reconcile: operation did not succeed")
	// ErrOpInFlight: the operation is still in flight and Recover could
	// not resolve it yet.
	ErrOpInFlight = errors.New("reconcile: operation still in flight")
	// ErrNothingToRevert: the operation left nothing to undo: a reboot
	// (the guest runs before and after), or, with Force, a guest that
	// already holds what the operation replaced.
	ErrNothingToRevert = errors.New("reconcile: nothing to revert")
)

// ErrRevertConflict is wrapped by the error of [Engine.Revert] when the
// guest changed since the operation: its configuration's digest is no
// longer the one the operation produced (or that digest was not recorded),
// or a power operation's guest is no longer in the state the operation
// left it in. Nothing is journaled or sent. [RevertOptions].Force reverts
// against the current state instead. It does not match
// proxmox.ErrDigestMismatch: the engine refuses before asking Proxmox.
// (Should Proxmox itself refuse the revert's digest, in the moment
// between the engine's look and the request, the revert's Result fails
// with proxmox.ErrDigestMismatch and KeyUnused set, and a later Revert
// tries again.)
var ErrRevertConflict = errors.New("reconcile: guest changed since the operation")

// revertKeyPrefix begins the idempotency key of a revert: the key is the
// prefix and the reverted operation's id. A requester's key cannot hold
// its control character, so no requester's key is ever a revert's.
const revertKeyPrefix = "\x1frevert="

// revertKey is the idempotency key of the revert of operation opID.
func revertKey(opID string) string { return revertKeyPrefix + opID }

// maxRevertOpID is the longest operation id Revert takes: its key, with
// an attempt suffix, must fit the journal's limit on keys.
const maxRevertOpID = MaxKeyLen - len(revertKeyPrefix)

// Revert undoes the succeeded reversible operation opID: see
// [Engine.RevertWith] with the zero [RevertOptions].
func (e *Engine) Revert(ctx context.Context, opID string) (Result, error) {
	return e.RevertWith(ctx, opID, RevertOptions{})
}

// RevertWith undoes the succeeded reversible operation opID, at most once.
//
// What it restores:
//
//   - a configuration change: the journaled prior value of exactly the
//     options the change set or deleted, and it deletes those that were
//     absent. The revert is sent with the digest of the configuration the
//     change produced, and refused with [ErrRevertConflict] when the
//     guest's configuration has another digest now: someone changed it
//     since, and writing the old values back could undo their change too.
//   - a start: a clean shutdown (the guest's OS stops its services and
//     flushes its disks; Proxmox's default timeout applies, and a guest
//     that ignores it makes the revert fail). A stop or a shutdown: a
//     start. Guarded by the guest still being in the state the operation
//     left it in (running after a start, stopped after a stop).
//   - a reboot leaves nothing to undo: refused with [ErrNothingToRevert].
//
// It refuses, with errors wrapping [ErrNotRevertible], an operation the
// journal does not know ([ErrOpUnknown]), one that failed
// ([ErrOpNotSucceeded]) or is still in flight ([ErrOpInFlight]), and an
// irreversible one (also [ErrIrreversible]), including one journaled by an
// engine that did not classify its operations.
//
// A revert is an operation like any other: it observes the guest in its
// queue lane, is checked by the engine's Validation and [Policy], goes
// through the gate (a revert that cannot itself be undone needs
// opts.AllowIrreversible), and is journaled before and after each side
// effect with a parameter naming the reverted operation. Its idempotency
// key derives from opID, in a form no requester's key can take: a retry,
// a concurrent call, or a call after a restart returns the first revert's
// result (Replayed set), whatever opts it passes; only a revert that
// failed in a way that proves Proxmox did nothing (KeyUnused) is tried
// again. Its Result has Reverts set to opID and an empty Key. A revert is
// reversible in turn: reverting the revert redoes the operation.
func (e *Engine) RevertWith(ctx context.Context, opID string, opts RevertOptions) (Result, error) {
	base := Result{Reverts: opID}
	switch {
	case opID == "" || len(opID) > maxRevertOpID || !utf8.ValidString(opID):
		return base, fmt.Errorf("%w: %w: operation id %.80q is not one the engine makes", ErrNotRevertible, ErrOpUnknown, opID)
	case e.cfg.DryRun:
		return base, fmt.Errorf("%w: Revert sends its operation", ErrDryRun)
	case e.isDraining():
		return base, fmt.Errorf("%w: revert of %s not started", ErrDraining, opID)
	case e.lookup == nil:
		return base, ErrNoKeyLookup
	}
	key := revertKey(opID)
	e.applyMu.Lock()
	if c, ok := e.applies[key]; ok {
		e.applyMu.Unlock()
		select {
		case <-c.done:
			res := c.res
			res.Replayed = res.OpID != ""
			return res, c.err
		case <-ctx.Done():
			return base, fmt.Errorf("%w: %w", ErrInProgress, ctx.Err())
		}
	}
	c := &applyCall{shot: OneShot{Key: key}, done: make(chan struct{})}
	e.applies[key] = c
	e.applyMu.Unlock()

	c.res, c.err = e.revert(ctx, opID, opts)
	c.res.Key, c.res.Reverts = "", opID
	close(c.done)
	e.applyMu.Lock()
	delete(e.applies, key)
	e.applyMu.Unlock()
	return c.res, c.err
}

func (e *Engine) revert(ctx context.Context, opID string, opts RevertOptions) (Result, error) {
	base := Result{}
	blocked, err := e.recoverBefore(ctx)
	if err != nil {
		return base, fmt.Errorf("reconcile: recovery before reverting %s: %w", opID, err)
	}
	if res, _, done, err := e.recordedRevert(ctx, opID); done {
		return res, err
	}
	orig, ok, err := e.cfg.Journal.Latest(ctx, opID)
	switch {
	case err != nil:
		return base, fmt.Errorf("reconcile: reading operation %s: %w", opID, err)
	case !ok:
		return base, fmt.Errorf("%w: %w: %s", ErrNotRevertible, ErrOpUnknown, opID)
	}
	o, err := opFromEntry(orig)
	if err != nil {
		return base, fmt.Errorf("%w: %w", ErrNotRevertible, err)
	}
	base.Ref, base.Kind = o.ref, o.kind
	if err := e.checkScope(o.ref); err != nil {
		return base, err
	}
	if u, ok := blocked[o.ref.VMID]; ok && u.OpID != opID {
		return base, fmt.Errorf("%w: operation %s on %s is still in flight: %s", ErrUnresolved, u.OpID, u.Ref, u.Error)
	}
	switch orig.State {
	case journal.Succeeded:
	case journal.Failed:
		return base, fmt.Errorf("%w: %w: %s (%s on %s) failed: %s", ErrNotRevertible, ErrOpNotSucceeded, opID, o.kind, o.ref, recordedFailure(orig))
	default:
		return base, fmt.Errorf("%w: %w: %s (%s on %s) is %s", ErrNotRevertible, ErrOpInFlight, opID, o.kind, o.ref, orig.State)
	}
	switch o.class {
	case Reversible:
	case Irreversible:
		return base, fmt.Errorf("%w: %w: %s (%s on %s) cannot be undone: %s", ErrNotRevertible, ErrIrreversible, opID, o.kind, o.ref, o.why)
	default:
		return base, fmt.Errorf("%w: %w: %s (%s on %s) was journaled without its class and prior values", ErrNotRevertible, ErrIrreversible, opID, o.kind, o.ref)
	}
	if _, err := inverseKind(o); err != nil {
		return base, err
	}
	var (
		res    Result
		runErr error
	)
	err = e.q.Do(ctx, o.ref.VMID, func(ctx context.Context) error {
		res, runErr = e.revertInLane(ctx, opID, orig, o, opts)
		return nil
	})
	if err != nil {
		return base, fmt.Errorf("reconcile: revert of %s on %s did not start: %w", opID, o.ref, err)
	}
	return res, runErr
}

// inverseKind is the kind of the operation that undoes o.
func inverseKind(o *op) (ActionKind, error) {
	switch o.kind {
	case ActionSetConfig:
		return ActionSetConfig, nil
	case ActionStart:
		return ActionShutdown, nil
	case ActionStop, ActionShutdown:
		return ActionStart, nil
	case ActionReboot:
		return "", fmt.Errorf("%w: %w: %s on %s: the guest runs before and after a reboot", ErrNotRevertible, ErrNothingToRevert, o.kind, o.ref)
	}
	return "", fmt.Errorf("%w: %w: %s on %s has no inverse", ErrNotRevertible, ErrIrreversible, o.kind, o.ref)
}

// producedState is the power state a power operation leaves its guest in.
func producedState(k ActionKind) string {
	if k == ActionStart {
		return "running"
	}
	return "stopped"
}

// recordedRevert looks up the revert of opID in the journal, as recorded
// does for a one-shot: done when a revert is recorded (its result, or
// ErrUnresolved while it is in flight), or the journal could not be read.
func (e *Engine) recordedRevert(ctx context.Context, opID string) (res Result, next int, done bool, err error) {
	key := revertKey(opID)
	ks, err := e.keyState(ctx, key, nil)
	if err != nil {
		return Result{}, 0, true, err
	}
	if ks.next > 0 {
		return Result{}, ks.next, false, nil
	}
	res = replayed(key, ks.lastN, ks.last)
	if !ks.last.State.Terminal() {
		return res, 0, true, fmt.Errorf("%w: revert %s of %s is %s", ErrUnresolved, ks.last.OpID, opID, ks.last.State)
	}
	return res, 0, true, nil
}

// revertInLane plans and runs the revert of orig in its guest's lane.
func (e *Engine) revertInLane(ctx context.Context, opID string, orig journal.Entry, o *op, opts RevertOptions) (Result, error) {
	res, next, done, err := e.recordedRevert(ctx, opID)
	if done {
		return res, err
	}
	base := Result{Ref: o.ref, Kind: o.kind}
	obs, err := e.observeGuest(ctx, o.ref)
	if err != nil {
		return base, err
	}
	kind, err := inverseKind(o)
	if err != nil {
		return base, err
	}
	r := &op{ref: o.ref, kind: kind, reverts: opID}
	base.Kind = kind
	if kind == ActionSetConfig {
		if err := e.planConfigRevert(r, orig, o, obs, opts.Force); err != nil {
			return base, err
		}
		d := Desired{Ref: r.ref, Config: r.set, Delete: r.del}
		if err := d.ValidateWith(e.cfg.Validation); err != nil {
			return base, fmt.Errorf("%w: revert of %s: %w", ErrInvalidOneShot, opID, err)
		}
	} else if want := producedState(o.kind); !opts.Force && obs.Status != want {
		return base, fmt.Errorf("%w: %s left %s %s, and it is %s now", ErrRevertConflict, opID, o.ref, want, obs.Status)
	}
	if err := e.oneShotGate(r, obs, opts.AllowIrreversible); err != nil {
		return base, fmt.Errorf("revert of %s: %w", opID, err)
	}
	if e.cfg.Policy != nil {
		if err := e.cfg.Policy(ctx, r.action(), obs); err != nil {
			return base, fmt.Errorf("%w: %w", ErrVetoed, err)
		}
	}
	if r.ref.Type == proxmox.LXC && kind == ActionSetConfig && r.digest == "" {
		r.observed = obs.Digest
	}
	key := revertKey(opID)
	shot := OneShot{Key: key, Ref: r.ref, Kind: kind}
	for {
		r.id, r.key = e.newOpID(), attemptKey(key, next)
		ar := e.execute(ctx, r)
		if ar.Outcome != OutcomeInterrupted || !errors.Is(ar.Err, journal.ErrKeyConflict) {
			return e.applied(ctx, shot, r, next, ar)
		}
		// Another engine on the journal claimed this attempt first.
		res, n, done, err := e.recordedRevert(ctx, opID)
		if done {
			return res, err
		}
		if n <= next {
			return base, fmt.Errorf("reconcile: revert of %s: attempt %d was claimed by another operation, and the journal does not show it: %w", opID, next, ar.Err)
		}
		next = n
	}
}

// planConfigRevert fills in r, the revert of configuration change o: the
// prior values of the options o named, and the deletion of those that
// were absent, guarded by the digest o produced; with force, only what
// differs now, guarded by the digest read now.
func (e *Engine) planConfigRevert(r *op, orig journal.Entry, o *op, obs Observed, force bool) error {
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range o.set {
			if !yield(k) {
				return
			}
		}
	})
	names = append(names, o.del...)
	slices.Sort(names)
	names = slices.Compact(names)
	absent := strings.Split(orig.Params[paramAbsent], ",")
	set := e.normalizeSet(o.ref.Type)
	for _, k := range names {
		v, had := o.prior[k]
		if !had && !slices.Contains(absent, k) {
			return fmt.Errorf("%w: %w: %s: the journal holds no prior value of %s", ErrNotRevertible, ErrIrreversible, o.id, k)
		}
		cur, present := obs.Config[k]
		if force && (had && present && set.Equal(k, v, cur) || !had && !present) {
			continue // already what it was
		}
		if had {
			if r.set == nil {
				r.set = make(map[string]string)
			}
			r.set[k] = v
		} else {
			r.del = append(r.del, k)
		}
	}
	if force {
		if len(r.set) == 0 && len(r.del) == 0 {
			return fmt.Errorf("%w: %w: %s already holds the values %s replaced", ErrNotRevertible, ErrNothingToRevert, o.ref, o.id)
		}
		r.digest = obs.Digest
		return nil
	}
	produced := succeededDigest(orig)
	switch {
	case produced == "":
		return fmt.Errorf("%w: the digest %s produced on %s was not recorded, so a change since cannot be ruled out (Force reverts anyway)", ErrRevertConflict, o.id, o.ref)
	case produced != obs.Digest:
		return fmt.Errorf("%w: the configuration of %s changed since %s (which produced digest %s; it is %s now)", ErrRevertConflict, o.ref, o.id, produced, obs.Digest)
	}
	r.digest = produced
	return nil
}
