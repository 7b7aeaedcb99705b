package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
)

// OneShot is an operation requested once, by a hub or an operator, rather
// than derived from the desired state. Its Key makes it run at most once,
// ever: see [Engine.Apply].
type OneShot struct {
	// Key is the idempotency key, chosen by the requester; required. It
	// names one attempt: whatever the outcome, the same key never runs
	// again. To try again after a failure, use a new key.
	Key string
	Ref proxmox.Ref
	// Kind is one of ActionStart, ActionStop, ActionShutdown, ActionReboot
	// and ActionSetConfig.
	Kind ActionKind
	// For ActionSetConfig: the change; Digest, when set, makes Proxmox
	// refuse it if the configuration changed since that digest was read.
	Set    map[string]string
	Delete []string
	Digest string
	// For ActionShutdown: how long the guest gets before Proxmox gives up;
	// 0 means Proxmox's default.
	Timeout time.Duration
}

// Validate reports what makes s unusable.
func (s OneShot) Validate() error {
	if s.Key == "" {
		return errors.New("reconcile: one-shot operation without an idempotency key")
	}
	if len(s.Key) > journal.MaxIDLen {
		return fmt.Errorf("reconcile: idempotency key longer than %d bytes", journal.MaxIDLen)
	}
	if err := s.Ref.Validate(); err != nil {
		return err
	}
	if s.Timeout < 0 {
		return errors.New("reconcile: negative shutdown timeout")
	}
	switch s.Kind {
	case ActionStart, ActionStop, ActionReboot, ActionShutdown:
		if len(s.Set) > 0 || len(s.Delete) > 0 || s.Digest != "" {
			return fmt.Errorf("reconcile: a %s operation takes no configuration change", s.Kind)
		}
	case ActionSetConfig:
		if err := (proxmox.ConfigChange{Set: s.Set, Delete: s.Delete, Digest: s.Digest}).Validate(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("reconcile: unknown one-shot kind %q", s.Kind)
	}
	if s.Timeout > 0 && s.Kind != ActionShutdown {
		return fmt.Errorf("reconcile: a timeout applies only to %s", ActionShutdown)
	}
	return nil
}

// Result is the outcome of a one-shot operation.
type Result struct {
	OpID  string        `json:"op_id"`
	State journal.State `json:"state"` // Succeeded or Failed (or in flight, when interrupted)
	UPID  proxmox.UPID  `json:"upid,omitempty"`
	Error string        `json:"error,omitempty"`
	// Replayed is true when the key had been used before and this call
	// returned the recorded outcome without running anything.
	Replayed bool `json:"replayed,omitempty"`
}

// Applied reports whether the operation succeeded.
func (r Result) Applied() bool { return r.State == journal.Succeeded }

// ErrInProgress is returned by Apply when an operation with the same key is
// in flight and the caller's context ended before it finished.
var ErrInProgress = errors.New("reconcile: operation with this key in progress")

// ErrNoKeyLookup is returned by Apply when the journal cannot find
// operations by idempotency key (it does not implement journal.KeyLookup).
var ErrNoKeyLookup = errors.New("reconcile: journal cannot look up idempotency keys")

// ErrVetoed is wrapped by Apply's error when the policy refused the
// operation. Nothing was journaled, so the key stays unused.
var ErrVetoed = errors.New("reconcile: operation vetoed by policy")

// ErrDryRun is returned, wrapped, by the calls a dry-run engine cannot
// make: Apply, which would send its operation, and Recover on an engine
// without a journal.
var ErrDryRun = errors.New("reconcile: not available in dry-run mode")

type applyCall struct {
	done chan struct{}
	res  Result
	err  error
}

// Apply runs a one-shot operation at most once per key, through the same
// per-guest queue as the passes, journaled the same way.
//
//   - The first call with a key runs the operation and returns its result.
//   - A later call with the same key returns the recorded result, with
//     Replayed set, and runs nothing: whether the first one succeeded or
//     failed, and across restarts.
//   - A call made while another with the same key is running waits for it
//     and returns its result (or ErrInProgress if ctx ends first).
//   - After a crash, or after an earlier call was interrupted, the operation
//     is resolved by Recover, which Apply runs first when it has not
//     succeeded yet or an operation was left in flight since, before the
//     key can be looked at.
//
// Invalid input, a policy veto, and a call on a draining engine
// ([ErrDraining]) or for a guest with an unresolved operation
// ([ErrUnresolved]) are refused before anything is journaled: the key
// stays unused. So is a failure to read an LXC guest's
// configuration before a change that carries no digest (the engine reads
// it to be able to tell, should the answer be lost, whether the change was
// made). Apply's error is for those, and for failures to reach the
// journal; an operation that Proxmox refused or that failed is a Result
// with State Failed and a nil error.
func (e *Engine) Apply(ctx context.Context, s OneShot) (Result, error) {
	if err := s.Validate(); err != nil {
		return Result{}, err
	}
	if e.cfg.DryRun {
		return Result{}, fmt.Errorf("%w: Apply sends its operation", ErrDryRun)
	}
	if e.isDraining() {
		return Result{}, fmt.Errorf("%w: %q not applied", ErrDraining, s.Key)
	}
	if e.lookup == nil {
		return Result{}, ErrNoKeyLookup
	}
	e.applyMu.Lock()
	if c, ok := e.applies[s.Key]; ok {
		e.applyMu.Unlock()
		select {
		case <-c.done:
			res := c.res
			res.Replayed = true
			return res, c.err
		case <-ctx.Done():
			return Result{}, fmt.Errorf("%w: %w", ErrInProgress, ctx.Err())
		}
	}
	c := &applyCall{done: make(chan struct{})}
	e.applies[s.Key] = c
	e.applyMu.Unlock()

	c.res, c.err = e.apply(ctx, s)
	close(c.done)
	e.applyMu.Lock()
	delete(e.applies, s.Key)
	e.applyMu.Unlock()
	return c.res, c.err
}

func (e *Engine) apply(ctx context.Context, s OneShot) (Result, error) {
	blocked, err := e.recoverBefore(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("reconcile: recovery before applying %q: %w", s.Key, err)
	}
	if u, ok := blocked[s.Ref.VMID]; ok {
		return Result{}, fmt.Errorf("%w: operation %s on %s is still in flight: %s", ErrUnresolved, u.OpID, u.Ref, u.Error)
	}
	if res, ok, err := e.recorded(ctx, s.Key); err != nil || ok {
		return res, err
	}
	o := &op{
		id: e.newOpID(), ref: s.Ref, kind: s.Kind, set: s.Set, del: s.Delete,
		digest: s.Digest, timeout: s.Timeout, key: s.Key,
	}
	var res Result
	var runErr error
	err = e.q.Do(ctx, s.Ref.VMID, func(ctx context.Context) error {
		// Look again inside the lane: the key may have been used between
		// the check above and our turn (by another engine on the same
		// journal, or a call that raced ours through a different path).
		if r, ok, err := e.recorded(ctx, s.Key); err != nil || ok {
			res, runErr = r, err
			return nil
		}
		if e.cfg.Policy != nil {
			if err := e.cfg.Policy(ctx, o.action(), Observed{Ref: s.Ref}); err != nil {
				runErr = fmt.Errorf("%w: %w", ErrVetoed, err)
				return nil
			}
		}
		if o.kind == ActionSetConfig && o.ref.Type == proxmox.LXC && o.digest == "" {
			// A synchronous change without a digest: remember the
			// configuration it is sent against, so that if its answer
			// is lost, a change that never arrived can be told from one
			// that was made and then overwritten.
			cfg, err := e.cfg.Proxmox.Config(ctx, o.ref)
			if err != nil {
				runErr = fmt.Errorf("reconcile: reading the configuration of %s before changing it: %w", o.ref, err)
				return nil
			}
			o.observed = cfg.Digest
		}
		ar := e.execute(ctx, o)
		res = Result{OpID: o.id, UPID: ar.UPID, Error: ar.Error}
		switch ar.Outcome {
		case OutcomeSucceeded:
			res.State = journal.Succeeded
		case OutcomeNotStarted:
			res = Result{}
			runErr = fmt.Errorf("%w: %q not applied", ErrDraining, s.Key)
		case OutcomeInterrupted:
			latest, ok, lerr := e.cfg.Journal.Latest(ctx, o.id)
			if lerr == nil && ok {
				res.State = latest.State
			}
			runErr = fmt.Errorf("reconcile: operation %s interrupted, Recover resolves it: %s", o.id, ar.Error)
		default:
			res.State = journal.Failed
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, runErr
}

// recorded returns the recorded result of the operation holding key, if
// one does. An operation still in flight is reported with ErrUnresolved:
// only Recover may decide it.
func (e *Engine) recorded(ctx context.Context, key string) (Result, bool, error) {
	en, ok, err := e.lookup.LatestByKey(ctx, key)
	if err != nil || !ok {
		return Result{}, false, err
	}
	res := Result{OpID: en.OpID, State: en.State, UPID: proxmox.UPID(en.UPID), Error: en.Error, Replayed: true}
	if !en.State.Terminal() {
		return res, true, fmt.Errorf("%w: operation %s holding key %q is %s", ErrUnresolved, en.OpID, key, en.State)
	}
	return res, true, nil
}
