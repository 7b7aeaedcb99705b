package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
)

// OneShot is an operation requested once, by a hub or an operator, rather
// than derived from the desired state. Its Key makes it run at most once,
// ever: see [Engine.Apply].
type OneShot struct {
	// Key is the idempotency key, chosen by the requester; required. It
	// names one request: this guest (Ref), this Kind, and these
	// parameters (Set, Delete, Digest, Timeout). The same request with the
	// same key returns the recorded outcome; the same key with any other
	// request is refused with [ErrKeyConflict], and nothing is sent.
	//
	// A key is consumed once Proxmox may have acted on its request:
	// whether the operation then succeeded or failed, the key never runs
	// it again, across restarts and across engines sharing the journal.
	// An attempt whose failure proves that Proxmox did nothing leaves the
	// key unused ([Result].KeyUnused): the guest was locked, or its lock
	// could not be taken in time; the digest was stale; the guest's
	// configuration does not exist; a power action found the guest in the
	// other state; or Proxmox refused the request before acting on it (bad
	// credentials, a missing privilege, a parameter it does not accept,
	// except for an LXC configuration change, which Proxmox may refuse
	// after applying part of it to the running container). The same
	// request with the same key then runs again, as a new attempt. A key
	// gets at most [MaxKeyAttempts] attempts; the last one consumes it,
	// whatever its outcome. An attempt left in flight (a crash, an ended
	// context) is resolved later by [Engine.Recover]: it leaves the key
	// usable only when Recover proves the request never reached Proxmox
	// (no task, no effect) or that its task did nothing and was not sent
	// again; otherwise it consumes the key.
	//
	// A key is 1 to [MaxKeyLen] bytes of UTF-8, without control
	// characters and without white space at either end: a key read from
	// a file or a header with a stray newline or blank would otherwise be
	// a second key for the same request, and run it twice.
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
	// For ActionShutdown: how long the guest gets before Proxmox gives up,
	// in whole seconds, as Proxmox counts it, at most [proxmox.MaxShutdownTimeout];
	// 0 means Proxmox's default.
	Timeout time.Duration
	// AllowIrreversible approves an action that cannot be undone (see
	// [ErrIrreversible]); without it such an operation is refused before
	// anything is journaled or sent. It is an approval, not part of the
	// request: the same key with and without it names the same request.
	AllowIrreversible bool
}

// MaxKeyLen is the longest idempotency key, in bytes. It leaves room,
// within the journal's limit (journal.MaxIDLen), for the suffix that
// names a later attempt at the key.
const MaxKeyLen = journal.MaxIDLen - 32

// MaxKeyAttempts is how many attempts one idempotency key gets when each
// one proves that Proxmox did nothing (see [OneShot].Key).
const MaxKeyAttempts = 16

// attemptSep separates a key from the number of a later attempt in the
// journal key of that attempt: the first attempt at key k is journaled
// under k, the nth under k + attemptSep + n. Keys cannot contain it (it
// is a control character), so no key is another key's attempt.
const attemptSep = "\x1fattempt="

// attemptKey is the journal key of attempt n (from 1) at key.
func attemptKey(key string, n int) string {
	if n <= 1 {
		return key
	}
	return key + attemptSep + strconv.Itoa(n)
}

// userKey returns the requester's key of a journal key: the journal key
// itself for a first attempt, the key without its attempt suffix for a
// later one. Reports show it instead of the journal key.
func userKey(journalKey string) string {
	k, _, _ := strings.Cut(journalKey, attemptSep)
	return k
}

// ErrInvalidOneShot is wrapped by the error of [OneShot.Validate], and so
// of [Engine.Apply], for a one-shot operation that cannot be run as
// given: a missing or malformed key, an invalid guest reference (which
// also matches proxmox.ErrInvalidRef), an unknown kind, or parameters that
// do not fit the kind. Nothing is journaled or sent, and the key stays
// unused.
var ErrInvalidOneShot = errors.New("reconcile: invalid one-shot operation")

// ErrKeyConflict is returned, wrapped, by [Engine.Apply] when the key was
// used for another request: another guest (vmid, node or type), another
// kind, or other parameters. Nothing is sent. An idempotency key names
// one request; a new request needs a new key.
var ErrKeyConflict = errors.New("reconcile: idempotency key already used for another request")

// ErrNotObserved is returned, wrapped, by [Engine.Apply] when the guest
// could not be observed before the operation: it is not in the cluster's
// guest list (the error also matches proxmox.ErrNotFound), it is there on
// another node or with another type (also proxmox.ErrNotFound: nothing
// lives at the address the operation names), or its status,
// configuration or pending changes could not be read (the error keeps
// the proxmox class, proxmox.ErrTransient for a node that does not
// answer, say). Nothing is journaled or sent, and the key stays unused.
var ErrNotObserved = errors.New("reconcile: guest could not be observed")

// validateKey reports what makes key unusable as an idempotency key.
func validateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: no idempotency key", ErrInvalidOneShot)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: idempotency key of %d bytes, longer than %d", ErrInvalidOneShot, len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: idempotency key %q is not valid UTF-8", ErrInvalidOneShot, key)
	case strings.TrimSpace(key) != key:
		return fmt.Errorf("%w: idempotency key %q begins or ends with white space", ErrInvalidOneShot, key)
	}
	if i := strings.IndexFunc(key, unicode.IsControl); i >= 0 {
		return fmt.Errorf("%w: idempotency key %q holds a control character at byte %d", ErrInvalidOneShot, key, i)
	}
	return nil
}

// Validate reports what makes s unusable. Its errors wrap
// [ErrInvalidOneShot].
func (s OneShot) Validate() error {
	if err := validateKey(s.Key); err != nil {
		return err
	}
	if err := s.Ref.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOneShot, err)
	}
	if s.Timeout < 0 {
		return fmt.Errorf("%w: negative shutdown timeout %v", ErrInvalidOneShot, s.Timeout)
	}
	if s.Timeout > proxmox.MaxShutdownTimeout {
		return fmt.Errorf("%w: shutdown timeout %v is longer than Proxmox takes (%v)", ErrInvalidOneShot, s.Timeout, proxmox.MaxShutdownTimeout)
	}
	if s.Timeout%time.Second != 0 {
		return fmt.Errorf("%w: shutdown timeout %v is not a whole number of seconds", ErrInvalidOneShot, s.Timeout)
	}
	switch s.Kind {
	case ActionStart, ActionStop, ActionReboot, ActionShutdown:
		if len(s.Set) > 0 || len(s.Delete) > 0 || s.Digest != "" {
			return fmt.Errorf("%w: a %s operation takes no configuration change", ErrInvalidOneShot, s.Kind)
		}
	case ActionSetConfig:
		if err := (proxmox.ConfigChange{Set: s.Set, Delete: s.Delete, Digest: s.Digest}).Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOneShot, err)
		}
	default:
		return fmt.Errorf("%w: unknown one-shot kind %q", ErrInvalidOneShot, s.Kind)
	}
	if s.Timeout > 0 && s.Kind != ActionShutdown {
		return fmt.Errorf("%w: a timeout applies only to %s", ErrInvalidOneShot, ActionShutdown)
	}
	return nil
}

// op returns the operation s asks for, without its id and journal key.
func (s OneShot) op() *op {
	return &op{ref: s.Ref, kind: s.Kind, set: s.Set, del: s.Delete, digest: s.Digest, timeout: s.Timeout}
}

// result returns a Result that names s and nothing else.
func (s OneShot) result() Result { return Result{Key: s.Key, Ref: s.Ref, Kind: s.Kind} }

// Result is the outcome of a one-shot operation.
//
// Key, Ref and Kind say which request it answers, also on a replay: the
// requester's key (never the journal key of a later attempt at it), the
// guest and the action. When Apply returns an error before anything was
// journaled, they are all the Result holds; once an operation was
// journaled, OpID and State are set, State to [journal.Succeeded] or
// [journal.Failed], or, for an operation left in flight (interrupted), to
// its latest state in the journal ([journal.Started] when that cannot be
// read).
//
// A Result is a plain value, safe to share once returned.
type Result struct {
	Key   string        `json:"idemp_key"`
	Ref   proxmox.Ref   `json:"-"` // spelled out by MarshalJSON, as in the reports
	Kind  ActionKind    `json:"kind"`
	OpID  string        `json:"op_id"`
	State journal.State `json:"state"`
	UPID  proxmox.UPID  `json:"upid,omitempty"`
	Error string        `json:"error,omitempty"`
	// Err is the failure Error describes, with its class: errors.Is
	// matches the proxmox error classes (proxmox.ErrLocked,
	// proxmox.ErrDigestMismatch, proxmox.ErrNotFound, ...) of what Proxmox
	// answered. The journal keeps only the message, so on a replay Err
	// holds that message and matches no class.
	Err error `json:"-"`
	// Replayed is true when the key had been used before and this call
	// returned the recorded outcome without running anything.
	Replayed bool `json:"replayed,omitempty"`
	// KeyUnused is true when the operation failed in a way that proves
	// Proxmox did nothing (see [OneShot].Key): the key is not consumed,
	// and the same request with the same key runs again.
	KeyUnused bool `json:"key_unused,omitempty"`
	// Attempt is the number of the attempt at Key this Result is about,
	// from 1; later attempts follow failures that proved nothing was done.
	Attempt int `json:"attempt,omitempty"`
	// Reverts is, for the result of [Engine.Revert], the operation it
	// undoes; Key is then empty (a revert's key derives from it).
	Reverts string `json:"reverts,omitempty"`
}

// Applied reports whether the operation succeeded.
func (r Result) Applied() bool { return r.State == journal.Succeeded }

// MarshalJSON renders the result with its guest spelled out (guest, node,
// type, vmid), as the reports do.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		refJSON
		plain
	}{jsonRef(r.Ref), plain(r)})
}

// recordedError is the failure of a replayed operation: the journal keeps
// its message, not its class.
type recordedError struct{ msg string }

func (e *recordedError) Error() string { return e.msg }

// vetoError is a policy's veto: it reads as the policy's error, and
// matches ErrVetoed as well as that error.
type vetoError struct{ err error }

func (e *vetoError) Error() string   { return e.err.Error() }
func (e *vetoError) Unwrap() []error { return []error{ErrVetoed, e.err} }

// ErrInProgress is returned by Apply when an operation with the same key is
// in flight and the caller's context ended before it finished.
var ErrInProgress = errors.New("reconcile: operation with this key in progress")

// ErrNoKeyLookup is returned by Apply when the journal cannot find
// operations by idempotency key (it does not implement journal.KeyLookup).
var ErrNoKeyLookup = errors.New("reconcile: journal cannot look up idempotency keys")

// ErrIrreversible is wrapped by Apply's error when the operation would do
// something that cannot be undone (see [Reversibility]) and the OneShot
// does not approve it (OneShot.AllowIrreversible), and is the reason a
// pass skips a guest whose plan holds such an action the engine's Config
// does not allow ([SkipIrreversible]). Nothing is journaled or sent, and
// the key stays unused. [Engine.RevertWith] refuses with it too: to undo
// an irreversible operation, or to make a revert that is itself
// irreversible without [RevertOptions].AllowIrreversible.
//
// One change is refused with it whatever the approval: deleting an
// option that holds a volume (a disk, a mount point, an unused volume),
// which Proxmox detaches or destroys. The engine never does that.
var ErrIrreversible = errors.New("reconcile: irreversible action not approved")

// ErrVetoed is wrapped by Apply's error when the policy refused the
// operation, and matches [ActionReport].Err of an action a pass's policy
// vetoed. Nothing was journaled, so the key stays unused.
var ErrVetoed = errors.New("reconcile: operation vetoed by policy")

// ErrDryRun is returned, wrapped, by the calls a dry-run engine cannot
// make: Apply, which would send its operation, and Recover on an engine
// without a journal.
var ErrDryRun = errors.New("reconcile: not available in dry-run mode")

type applyCall struct {
	shot OneShot
	done chan struct{}
	res  Result
	err  error
}

// Apply runs a one-shot operation at most once per key, through the same
// per-guest queue as the passes, guarded and journaled the same way.
//
//   - The first call with a key observes the guest as a pass does (the
//     cluster's guest list, then its status, configuration and pending
//     changes), asks the [Policy] with what it saw, runs the operation
//     (retrying as a pass does while Proxmox proves it did nothing, a task
//     that could not take the guest's lock in time included), and returns
//     its result.
//   - A later call with the same key and the same request returns the
//     recorded result, with Replayed set, and runs nothing: whether the
//     first one succeeded or failed, and across restarts. The exception
//     is a failure that proves Proxmox did nothing ([Result].KeyUnused):
//     the key was not consumed, and the call runs the request again as a
//     new attempt (see [OneShot].Key).
//   - A call with the same key for another request (another guest, kind
//     or parameters) is refused with [ErrKeyConflict].
//   - A call made while another with the same key is running waits for it
//     and returns its result (or ErrInProgress if ctx ends first).
//   - After a crash, or after an earlier call was interrupted, the operation
//     is resolved by Recover, which Apply runs first when it has not
//     succeeded yet or an operation was left in flight since, before the
//     key can be looked at. A key whose operation stays unresolved is
//     refused with [ErrUnresolved].
//
// The journal decides every race for a key: an attempt runs only once its
// intent has claimed the attempt's key in the journal, so two engines
// sharing a journal never both run one.
//
// Refused before anything is journaled, the key staying unused: invalid
// input ([ErrInvalidOneShot]), a key used for another request
// ([ErrKeyConflict]), a guest that cannot be observed ([ErrNotObserved]),
// a policy veto ([ErrVetoed]), a call on a draining engine
// ([ErrDraining]) or for a guest with an unresolved operation
// ([ErrUnresolved]), and a context that ends before the guest's turn in
// the queue (the error wraps ctx.Err()).
//
// Apply's error is for those, for failures to reach the journal, and for
// an operation left in flight (interrupted: its context ended, the
// answer was lost, a journal write failed), whose error wraps the cause
// (context.DeadlineExceeded, proxmox.ErrOutcomeUnknown, ...) and whose
// Result holds the operation and its state; Recover resolves it. An
// operation that Proxmox refused or that failed is a Result with State
// Failed, its cause in Err, and a nil error.
func (e *Engine) Apply(ctx context.Context, s OneShot) (Result, error) {
	base := s.result()
	if err := s.Validate(); err != nil {
		return base, err
	}
	if err := e.checkScope(s.Ref); err != nil {
		return base, err
	}
	if s.Kind == ActionSetConfig {
		// The options a desired state may not manage are as much out of
		// a one-shot's reach: the engine's Validation decides both.
		d := Desired{Ref: s.Ref, Config: s.Set, Delete: s.Delete}
		if err := d.ValidateWith(e.cfg.Validation); err != nil {
			return base, fmt.Errorf("%w: %w", ErrInvalidOneShot, err)
		}
	}
	if e.cfg.DryRun {
		return base, fmt.Errorf("%w: Apply sends its operation", ErrDryRun)
	}
	if e.isDraining() {
		return base, fmt.Errorf("%w: %q not applied", ErrDraining, s.Key)
	}
	if e.lookup == nil {
		return base, ErrNoKeyLookup
	}
	e.applyMu.Lock()
	if c, ok := e.applies[s.Key]; ok {
		e.applyMu.Unlock()
		if err := sameRequest(s.Key, requestOf(c.shot.op()), requestOf(s.op())); err != nil {
			return base, err
		}
		select {
		case <-c.done:
			res := c.res
			res.Replayed = res.OpID != ""
			return res, c.err
		case <-ctx.Done():
			return base, fmt.Errorf("%w: %w", ErrInProgress, ctx.Err())
		}
	}
	c := &applyCall{shot: s, done: make(chan struct{})}
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
	base := s.result()
	blocked, err := e.recoverBefore(ctx)
	if err != nil {
		return base, fmt.Errorf("reconcile: recovery before applying %q: %w", s.Key, err)
	}
	if u, ok := blocked[s.Ref.VMID]; ok {
		return base, fmt.Errorf("%w: operation %s on %s is still in flight: %s", ErrUnresolved, u.OpID, u.Ref, u.Error)
	}
	if res, _, done, err := e.recorded(ctx, s); done {
		return res, err
	}
	var (
		res    Result
		runErr error
	)
	err = e.q.Do(ctx, s.Ref.VMID, func(ctx context.Context) error {
		res, runErr = e.applyInLane(ctx, s)
		return nil
	})
	if err != nil {
		return base, fmt.Errorf("reconcile: one-shot %q on %s did not start: %w", s.Key, s.Ref, err)
	}
	return res, runErr
}

// applyInLane runs a one-shot operation in its guest's lane.
func (e *Engine) applyInLane(ctx context.Context, s OneShot) (Result, error) {
	// Look again inside the lane: the key may have been used between the
	// look before and our turn (by another engine on the same journal, or
	// a call that raced ours through a different path).
	res, next, done, err := e.recorded(ctx, s)
	if done {
		return res, err
	}
	base := s.result()
	obs, err := e.observeGuest(ctx, s.Ref)
	if err != nil {
		return base, err
	}
	o := s.op()
	if err := e.oneShotGate(o, obs, s.AllowIrreversible); err != nil {
		return base, err
	}
	if e.cfg.Policy != nil {
		if err := e.cfg.Policy(ctx, o.action(), obs); err != nil {
			return base, fmt.Errorf("%w: %w", ErrVetoed, err)
		}
	}
	if o.kind == ActionSetConfig && o.ref.Type == proxmox.LXC && o.digest == "" {
		// A synchronous change without a digest: remember the
		// configuration it is sent against, so that if its answer is
		// lost, a change that never arrived can be told from one that
		// was made and then overwritten.
		o.observed = obs.Digest
	}
	for {
		o.id, o.key = e.newOpID(), attemptKey(s.Key, next)
		ar := e.execute(ctx, o)
		if ar.Outcome != OutcomeInterrupted || !errors.Is(ar.Err, journal.ErrKeyConflict) {
			return e.applied(ctx, s, o, next, ar)
		}
		// Another engine sharing the journal claimed this attempt's key
		// between our look and our intent: nothing of ours was
		// journaled or sent. Its attempt decides.
		res, n, done, err := e.recorded(ctx, s)
		if done {
			return res, err
		}
		if n <= next {
			return base, fmt.Errorf("reconcile: one-shot %q: attempt %d was claimed by another operation, and the journal does not show it: %w", s.Key, next, ar.Err)
		}
		next = n
	}
}

// applied turns the report of attempt n of a one-shot operation into its
// Result and Apply's error.
func (e *Engine) applied(ctx context.Context, s OneShot, o *op, n int, ar ActionReport) (Result, error) {
	res := s.result()
	res.OpID, res.UPID, res.Error, res.Err, res.Attempt = o.id, ar.UPID, ar.Error, ar.Err, n
	switch ar.Outcome {
	case OutcomeSucceeded:
		res.State = journal.Succeeded
		return res, nil
	case OutcomeNotStarted:
		return s.result(), fmt.Errorf("%w: %q not applied", ErrDraining, s.Key)
	case OutcomeInterrupted:
		// The operation may be in flight: say where the journal has it.
		// Read even when ctx ended (that may be why it was
		// interrupted): it is one local read.
		res.State = journal.Started
		if en, ok, err := e.cfg.Journal.Latest(context.WithoutCancel(ctx), o.id); err == nil && ok {
			res.State = en.State
			res.KeyUnused = didNothing(en) && n < MaxKeyAttempts
		}
		return res, fmt.Errorf("reconcile: one-shot %q: operation %s on %s interrupted, Recover resolves it: %w", s.Key, o.id, s.Ref, ar.Err)
	default:
		res.State = journal.Failed
		res.KeyUnused = ar.nothingDone && n < MaxKeyAttempts
		return res, nil
	}
}

// recorded looks up what the journal holds for s's key, following its
// attempts. done is true when Apply is decided without running anything:
// the key holds the same request, and res is its recorded outcome (err
// wraps ErrUnresolved when it is still in flight: only Recover may decide
// it); or the key holds another request ([ErrKeyConflict]); or the
// journal could not be read. Otherwise next is the number of the attempt
// to make.
func (e *Engine) recorded(ctx context.Context, s OneShot) (res Result, next int, done bool, err error) {
	ks, err := e.keyState(ctx, s.Key, s.op())
	if err != nil {
		return s.result(), 0, true, err
	}
	if ks.next > 0 {
		return Result{}, ks.next, false, nil
	}
	res = replayed(s.Key, ks.lastN, ks.last)
	if !ks.last.State.Terminal() {
		return res, 0, true, fmt.Errorf("%w: operation %s holding key %q is %s", ErrUnresolved, ks.last.OpID, s.Key, ks.last.State)
	}
	return res, 0, true, nil
}

// Lookup returns what the journal holds for the idempotency key key: the
// outcome of the latest attempt at it (with Replayed set), following the
// attempts that proved Proxmox did nothing. ok is false when no attempt
// holds the key. Lookup runs nothing and does not resolve an operation in
// flight: its State is then not terminal. A key whose Result has
// KeyUnused set is not consumed, and Apply would run its request again.
func (e *Engine) Lookup(ctx context.Context, key string) (res Result, ok bool, err error) {
	res = Result{Key: key}
	if err := validateKey(key); err != nil {
		return res, false, err
	}
	if e.lookup == nil {
		return res, false, ErrNoKeyLookup
	}
	ks, err := e.keyState(ctx, key, nil)
	if err != nil || ks.lastN == 0 {
		return res, false, err
	}
	return replayed(key, ks.lastN, ks.last), true, nil
}

// LookupRequest is [Engine.Lookup] for a request known in full: it
// returns what the journal holds for s.Key, and, like Apply, an error
// wrapping [ErrKeyConflict] when any attempt at the key was made for
// another request than s (another guest, kind, or parameters: the same
// comparison Apply makes, so s.AllowIrreversible does not count). It
// runs nothing and resolves nothing, so it suits a caller that must
// answer for a request without ever running it, such as one whose
// authorization has lapsed. An invalid s is refused with an error
// wrapping [ErrInvalidOneShot].
func (e *Engine) LookupRequest(ctx context.Context, s OneShot) (res Result, ok bool, err error) {
	res = s.result()
	if err := s.Validate(); err != nil {
		return res, false, err
	}
	if e.lookup == nil {
		return res, false, ErrNoKeyLookup
	}
	ks, err := e.keyState(ctx, s.Key, s.op())
	if err != nil || ks.lastN == 0 {
		return res, false, err
	}
	return replayed(s.Key, ks.lastN, ks.last), true, nil
}

// keyState is what the journal holds for a requester's key.
type keyState struct {
	last  journal.Entry // the latest attempt found
	lastN int           // its number, from 1; 0 when no attempt was found
	// next is the number of the attempt to make now, 0 when there is
	// none: an attempt is in flight, or the key is consumed.
	next int
}

// keyState walks the attempts at key. When want is set, every attempt
// found must have been made for the same request, or the walk stops with
// ErrKeyConflict.
//
// The walk goes on past a missing first attempt: the journal's retention
// drops terminal operations by age, oldest first, but keeps those that
// succeeded (and those in flight), so the attempts it holds are the
// latest ones, and a missing first one does not prove the key unused.
func (e *Engine) keyState(ctx context.Context, key string, want *op) (keyState, error) {
	var ks keyState
	for n := 1; n <= MaxKeyAttempts; n++ {
		en, ok, err := e.lookup.LatestByKey(ctx, attemptKey(key, n))
		if err != nil {
			return ks, fmt.Errorf("reconcile: looking up idempotency key %q: %w", key, err)
		}
		if !ok {
			if ks.lastN > 0 {
				ks.next = n
				return ks, nil
			}
			continue
		}
		if want != nil {
			if err := sameRequest(key, requestOfEntry(en), requestOf(want)); err != nil {
				return ks, fmt.Errorf("%w (operation %s)", err, en.OpID)
			}
		}
		ks.last, ks.lastN = en, n
		if !didNothing(en) {
			return ks, nil // in flight, or consumed
		}
	}
	if ks.lastN == 0 {
		ks.next = 1
	}
	return ks, nil
}

// request is what an idempotency key names: a guest, a kind and the
// parameters, in a form where equal requests compare equal.
type request struct {
	ref    proxmox.Ref
	kind   ActionKind
	params map[string]string // see requestParams
}

// requestOf is the request an operation makes.
func requestOf(o *op) request {
	return request{ref: o.ref, kind: o.kind, params: requestParams(o.params())}
}

// requestOfEntry is the request a journaled operation was made for; the
// journal's latest state of an operation carries the parameters of its
// first record.
func requestOfEntry(en journal.Entry) request {
	return request{ref: refOfEntry(en), kind: ActionKind(en.Kind), params: requestParams(en.Params)}
}

func refOfEntry(en journal.Entry) proxmox.Ref {
	return proxmox.Ref{Node: en.Params[paramNode], Type: proxmox.GuestType(en.Params[paramType]), VMID: en.VMID}
}

// requestParams returns an operation's journal parameters as the request
// sees them: without the guest (compared apart) and without what the
// engine adds of its own (the digest it read before an LXC change, the
// class and prior values, see engineParam), and
// with the options to delete in a canonical order, which does not change
// what the request asks for. Every other parameter counts, a parameter
// added later included.
func requestParams(p map[string]string) map[string]string {
	out := make(map[string]string, len(p))
	for k, v := range p {
		if engineParam(k) {
			continue
		}
		switch k {
		case paramNode, paramType, paramObserved:
			continue
		case paramDelete:
			del := strings.Split(v, ",")
			slices.Sort(del)
			v = strings.Join(del, ",")
		}
		out[k] = v
	}
	return out
}

// sameRequest returns nil when had and want are the same request, and
// otherwise an error wrapping ErrKeyConflict that says what differs.
func sameRequest(key string, had, want request) error {
	differs := func(what string, a, b any) error {
		return fmt.Errorf("%w: key %q names %s on %s, which has %s %v, not %v",
			ErrKeyConflict, key, had.kind, had.ref, what, a, b)
	}
	switch {
	case had.ref.VMID != want.ref.VMID:
		return differs("vmid", had.ref.VMID, want.ref.VMID)
	case had.ref.Node != want.ref.Node:
		return differs("node", had.ref.Node, want.ref.Node)
	case had.ref.Type != want.ref.Type:
		return differs("type", had.ref.Type, want.ref.Type)
	case had.kind != want.kind:
		return differs("kind", had.kind, want.kind)
	case maps.Equal(had.params, want.params):
		return nil
	}
	names := slices.Sorted(maps.Keys(had.params))
	for k := range want.params {
		if _, ok := had.params[k]; !ok {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		a, aok := had.params[k]
		b, bok := want.params[k]
		if a != b || aok != bok {
			return differs("parameter "+strconv.Quote(k), quoteOrNone(a, aok), quoteOrNone(b, bok))
		}
	}
	return differs("parameters", had.params, want.params) // not reached
}

func quoteOrNone(v string, ok bool) string {
	if !ok {
		return "none"
	}
	return strconv.Quote(v)
}

// replayed is the Result of attempt n at key, as the journal records it.
func replayed(key string, n int, en journal.Entry) Result {
	res := Result{
		Key: key, Ref: refOfEntry(en), Kind: ActionKind(en.Kind), OpID: en.OpID, State: en.State,
		UPID: proxmox.UPID(en.UPID), Error: recordedFailure(en),
		Replayed: true, KeyUnused: didNothing(en) && n < MaxKeyAttempts, Attempt: n,
	}
	if res.Error != "" {
		res.Err = &recordedError{res.Error}
	}
	return res
}

// recordedFailure is the failure a journaled operation's latest record
// describes, without the engine's marks: "" for a success, whose record
// may carry the digest it produced (digestMark).
func recordedFailure(en journal.Entry) string {
	if en.State == journal.Succeeded {
		return ""
	}
	return strings.TrimPrefix(en.Error, nothingDoneMark)
}

// observeGuest observes the guest of a one-shot operation as a pass
// observes a declared guest: its entry in the cluster's guest list, then
// its status, configuration and pending changes (observeOne). A guest
// that is missing, lives elsewhere, or cannot be read is refused with
// ErrNotObserved.
func (e *Engine) observeGuest(ctx context.Context, ref proxmox.Ref) (Observed, error) {
	guests, err := e.cfg.Proxmox.Guests(ctx)
	if err != nil {
		return Observed{}, fmt.Errorf("%w: %s: listing guests: %w", ErrNotObserved, ref, err)
	}
	for _, g := range guests {
		if g.Ref.VMID != ref.VMID {
			continue
		}
		if g.Ref != ref {
			return Observed{}, fmt.Errorf("%w: %s: vmid %d is the %s guest on node %s: %w",
				ErrNotObserved, ref, ref.VMID, g.Ref.Type, g.Ref.Node, proxmox.ErrNotFound)
		}
		obs := Observed{Ref: g.Ref, Status: g.Status, Template: g.Template, Lock: g.Lock, Name: g.Name, Tags: g.Tags}
		if err := e.observeOne(ctx, &obs); err != nil {
			return Observed{}, fmt.Errorf("%w: %s: %w", ErrNotObserved, ref, err)
		}
		return obs, nil
	}
	return Observed{}, fmt.Errorf("%w: %s: no guest with vmid %d in the cluster: %w", ErrNotObserved, ref, ref.VMID, proxmox.ErrNotFound)
}
