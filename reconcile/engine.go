package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/normalize"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/queue"
)

// Proxmox is what the engine needs from a Proxmox VE cluster.
// *proxmox.Client implements it; tests may use the fake server in package
// proxmoxtest behind a real client, or any other implementation.
//
// The methods follow *proxmox.Client's contracts: errors are classified
// with proxmox's sentinel errors (ErrNotFound, ErrLocked, ErrDigestMismatch,
// ErrTransient, ErrOutcomeUnknown, ErrAlreadyRunning, ErrNotRunning,
// ErrAlreadySized), and a write that returns an empty UPID completed
// synchronously.
type Proxmox interface {
	Guests(ctx context.Context) ([]proxmox.Guest, error)
	Status(ctx context.Context, ref proxmox.Ref) (proxmox.GuestStatus, error)
	Config(ctx context.Context, ref proxmox.Ref) (proxmox.Config, error)
	Pending(ctx context.Context, ref proxmox.Ref) ([]proxmox.PendingItem, error)
	PendingConfig(ctx context.Context, ref proxmox.Ref) (proxmox.PendingConfig, error)
	SetConfig(ctx context.Context, ref proxmox.Ref, ch proxmox.ConfigChange) (proxmox.UPID, error)
	Start(ctx context.Context, ref proxmox.Ref) (proxmox.UPID, error)
	Stop(ctx context.Context, ref proxmox.Ref) (proxmox.UPID, error)
	Shutdown(ctx context.Context, ref proxmox.Ref, timeout time.Duration) (proxmox.UPID, error)
	Reboot(ctx context.Context, ref proxmox.Ref) (proxmox.UPID, error)
	Resize(ctx context.Context, ref proxmox.Ref, r proxmox.DiskResize) (proxmox.UPID, error)
	TaskStatus(ctx context.Context, upid proxmox.UPID) (proxmox.TaskStatus, error)
	WaitTask(ctx context.Context, upid proxmox.UPID) (proxmox.TaskStatus, error)
	Tasks(ctx context.Context, node string, f proxmox.TaskFilter) ([]proxmox.TaskInfo, error)
}

var _ Proxmox = (*proxmox.Client)(nil)

// Policy decides whether the engine may carry out an action. A non-nil
// error vetoes it: the action is not journaled or sent. In a pass, the
// guest's later actions are dropped too, and the report shows the guest as
// vetoed with the error; [Engine.Apply] refuses the operation with an
// error wrapping [ErrVetoed], and its key stays unused.
//
// g is the guest as observed: for a pass, its configuration at the start
// of the pass and its exact status and lock re-read in its queue lane just
// before acting; for a one-shot operation, all of it just before it runs,
// in the guest's queue lane. Either way a policy sees the status, tags,
// lock, configuration, digest and pending changes. A
// Policy must be safe for concurrent use.
type Policy func(ctx context.Context, a Action, g Observed) error

// ProtectTag returns a policy that protects the guests carrying tag: it
// vetoes every action that takes such a guest down (stop, shutdown,
// reboot), and, with noConfig, every action that changes it as configured:
// a configuration change, and any other kind that is not one of the power
// actions start, stop, shutdown and reboot. A kind this function does not
// know (one added after it was written, such as a disk resize) counts as a
// change of the configuration: with noConfig it is vetoed, so that
// protection never lapses because the engine learned a new action. Start
// is never vetoed.
//
// Tags are compared as Proxmox compares them by default: without regard
// to case, after trimming spaces (Proxmox tags are ASCII letters, digits
// and "_-+."). By default Proxmox also stores every tag set through its API
// in lower case and drops tags that differ only in case; with the
// datacenter option tag-style "case-sensitive" it keeps their case and
// counts "Prod" and "prod" as two tags. ProtectTag then still protects a
// guest tagged with either, which protects more than asked, never less;
// use [ProtectTagExact] to match the case exactly. An empty tag protects
// no guest.
func ProtectTag(tag string, noConfig bool) Policy {
	return protectTag(tag, noConfig, strings.EqualFold)
}

// ProtectTagExact is [ProtectTag] with tags compared case-sensitively, for
// clusters whose datacenter tag-style sets "case-sensitive".
func ProtectTagExact(tag string, noConfig bool) Policy {
	return protectTag(tag, noConfig, func(a, b string) bool { return a == b })
}

func protectTag(tag string, noConfig bool, same func(a, b string) bool) Policy {
	tag = strings.TrimSpace(tag)
	return func(_ context.Context, a Action, g Observed) error {
		tagged := false
		for _, t := range g.Tags {
			tagged = tagged || tag != "" && same(strings.TrimSpace(t), tag)
		}
		if !tagged {
			return nil
		}
		switch a.Kind {
		case ActionStart:
			return nil
		case ActionStop, ActionShutdown, ActionReboot:
			return fmt.Errorf("%s carries the protected tag %q: no %s", g.Ref, tag, a.Kind)
		}
		if noConfig {
			return fmt.Errorf("%s carries the protected tag %q: its configuration is not changed (%s)", g.Ref, tag, a.Kind)
		}
		return nil
	}
}

// Config configures an [Engine]. Proxmox is required, and Journal unless
// DryRun is set; every other field has a default.
type Config struct {
	// Proxmox is the cluster to act on.
	Proxmox Proxmox
	// Journal records every operation before and after each side effect.
	// The engine does not close it: its owner does, after Run returns.
	// It must implement [journal.OpLister], as every journal of this
	// module does: the engine tells by it which Proxmox tasks already
	// belong to an operation. A dry-run engine needs none.
	Journal journal.Journal
	// Provider supplies the desired state; nil means EmptyProvider, with
	// which the engine performs no mutation.
	Provider DesiredProvider
	// Queue serializes every mutation per guest (keyed by vmid). Share one
	// queue among everything that changes guests of this cluster, and
	// never between clusters: a vmid is unique only within one cluster,
	// so guest 100 of one cluster would wait for guest 100 of another.
	// Nil means the engine makes its own, with at most Concurrency jobs at
	// once.
	Queue *queue.Queue[int]
	// Concurrency bounds the guests observed at once, and the actions run
	// at once when the engine makes its own queue. Default 8.
	Concurrency int
	// NodeConcurrency bounds the engine's requests in flight on each
	// node, whatever sends them (observation, actions, task polling,
	// recovery), and the guests of one node observed at once. Default
	// [DefaultNodeConcurrency]: a Proxmox node runs a few API workers, and
	// requests beyond them only queue there. A slow or unreachable node
	// holds at most this many of the Concurrency slots, so keep it below
	// Concurrency for the other nodes to go on.
	NodeConcurrency int
	// NodeRate, if positive, bounds the engine's requests to each node to
	// this many per second, evenly spaced. Default none.
	NodeRate float64
	// Nodes, if not empty, are the only Proxmox nodes whose guests the
	// engine acts on: a pass leaves out the declared guests of other
	// nodes (they are not in its report), and Apply and Revert refuse a
	// guest declared on another node with [ErrNotInScope] before
	// anything is journaled or sent. Guests are matched by the node their
	// Ref names, as declared; one that has moved to a node outside the
	// set is skipped as any moved guest is ([SkipWrongNode]). Set it when
	// several engines share a cluster, each with its own journal (shards
	// of a fleet, one leader each): without it, a one-shot sent to the
	// wrong engine would reach a guest another engine manages, with two
	// journals and two lanes for one guest. Recovery still resolves every
	// operation of the engine's own journal, and sends nothing new. Node
	// names must be valid ([proxmox.Ref.Validate]) and distinct; NewEngine
	// keeps a copy.
	Nodes []string
	// Interval is the time between the starts of two passes of Run.
	// Default 30s. Jitter, default a tenth of Interval, varies it at
	// random by up to that much either way; a negative Jitter means none.
	Interval time.Duration
	Jitter   time.Duration
	// DryRun plans and reports without journaling or changing anything.
	DryRun bool
	// Policy, if set, may veto any action.
	Policy Policy
	// AllowIrreversible lets passes perform actions that cannot be undone
	// (see [Reversibility]): without it, a guest that needs one is skipped
	// with [SkipIrreversible]. It overrides Plan.AllowIrreversible. One
	// switch for the whole class: a Policy sees each action's Class and
	// Why, so a finer rule (resizes yes, secrets no) is a Policy on an
	// engine that allows the class. One-shots need their own approval
	// ([OneShot].AllowIrreversible), and reverts theirs
	// ([RevertOptions].AllowIrreversible): this field does not approve
	// them.
	AllowIrreversible bool
	// Plan holds the normalize rules; the zero value uses the defaults.
	Plan PlanOptions
	// Validation is what every pass validates the desired state under,
	// whatever the provider checked, and what a one-shot configuration
	// change is checked against: the zero value allows no root-only
	// option (see [ValidateDesiredWith]). NewEngine refuses invalid
	// options, and keeps a copy.
	Validation ValidateOptions
	// Retries bounds the attempts at one action after errors that prove
	// Proxmox did nothing (transient errors); default 3. RetryMin and
	// RetryMax bound the capped exponential backoff between attempts,
	// default 1s and 15s.
	Retries            int
	RetryMin, RetryMax time.Duration
	// SettleDelay is how long after an operation was journaled Recover
	// waits before concluding that a request that left no task never
	// reached Proxmox (it may still be in flight). Default 10s; a negative
	// value means no wait, which is only safe when no request can still be
	// travelling (tests).
	SettleDelay time.Duration
	// ClockSkew is the clock difference tolerated between this host and
	// the Proxmox nodes when matching tasks to journaled operations.
	// Default 2m.
	ClockSkew time.Duration
	// TaskUser is the Proxmox user the engine's client acts as, as it
	// appears in task ids: "user@realm", or "user@realm!tokenname" for an
	// API token. Matching a lost answer to a task only considers tasks
	// started by that user, never one an operator or another tool started.
	//
	// When Proxmox can tell it (a *proxmox.Client, or any Proxmox with a
	// TaskUser() string method), the engine asks the client each time it
	// matches a task, and NewEngine refuses a TaskUser that differs from
	// the client's (but for letter case, which Proxmox may settle at
	// login for some realms): a wrong one ("root@pam" for the token "root@pam!agent", say)
	// would make the engine miss its own task after a lost answer and send
	// the write again. Set it only for a Proxmox that cannot tell; left
	// empty there, tasks of any user are considered (still never one
	// that another journaled operation owns).
	TaskUser string
	// TaskTimeout bounds how long an action waits for its Proxmox task,
	// so that a task on a node that stopped answering cannot hold up the
	// pass: when it runs out, the operation is left in flight and Recover
	// resolves it later, while the guest is skipped. Default 10m.
	TaskTimeout time.Duration
	// Logger receives the engine's log; nil discards it.
	Logger *slog.Logger
	// OnReport, if set, is called with every pass's report by Run.
	OnReport func(Report)
	// OnEvent, if set, is called as each action starts and ends, for
	// progress displays. It must be quick and safe for concurrent use.
	OnEvent func(Event)
	// OnProgress, if set, is called as a pass goes through its phases
	// (see [Phase]), for progress displays; targeted passes report too.
	// Each phase reports its start (Done 0) and its end (Done equal to
	// Total); while guests are observed and acted on, it reports each
	// time Done crosses another hundredth of Total, so that a phase
	// makes at most 102 calls however large the fleet (with fewer than
	// a hundred guests, one per guest). A phase with nothing to do
	// makes one call. The calls of a pass come one at a time, in order;
	// they are made from the pass's goroutines, and must be quick and
	// safe for concurrent use, as for OnEvent. OnProgress may call
	// [Engine.Status], but must not wait for the engine.
	OnProgress func(Progress)
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// ErrConfig is returned, wrapped, by NewEngine for an unusable Config.
var ErrConfig = errors.New("reconcile: invalid engine config")

// Engine observes guests, plans, and carries out plans through the shared
// per-guest queue, journaling every step. It is safe for concurrent use:
// passes never overlap, and one-shot operations from Apply go through the
// same queue as the passes.
type Engine struct {
	// claimGen counts the engine's journal records that claim a task
	// (a UPID): bumped after each is appended, so that Recover can tell
	// whether the claims it read are still all there are (see claimCache).
	claimGen atomic.Uint64

	cfg    Config
	log    *slog.Logger
	q      *queue.Queue[int]
	ownQ   bool
	plan   PlanOptions
	lookup journal.KeyLookup // nil if the journal cannot find keys
	nodes  map[string]bool   // Config.Nodes; nil: every node

	pass    chan struct{} // a token: held while a pass runs
	trigger chan struct{}
	named   triggered // what the triggers since the last pass asked for

	recoverMu sync.Mutex
	// mustRecover is set until a Recover succeeds, and again whenever an
	// operation is left in flight (interrupted) while the engine goes on:
	// the next pass or one-shot resolves it before acting.
	mustRecover atomic.Bool

	applyMu sync.Mutex
	applies map[string]*applyCall // one-shot calls in progress, by key

	opsMu    sync.Mutex
	draining bool          // set by Drain: no operation starts any more
	active   int           // operations started and not yet ended
	idle     chan struct{} // made by Drain; closed once draining and active is zero
	shutdown chan struct{} // closed by Shutdown once drained: Run returns
	shutOnce sync.Once
	runs     int           // Run calls in progress
	runsDone chan struct{} // made by Shutdown; closed once shut down and runs is zero

	st engineStatus // what Status reports
}

// NewEngine checks cfg, fills in defaults, and returns an engine. It does
// no I/O.
func NewEngine(cfg Config) (*Engine, error) {
	if cfg.Proxmox == nil {
		return nil, fmt.Errorf("%w: Proxmox is nil", ErrConfig)
	}
	if cfg.Journal == nil && !cfg.DryRun {
		return nil, fmt.Errorf("%w: Journal is nil (only a dry run needs none)", ErrConfig)
	}
	if _, ok := cfg.Journal.(journal.OpLister); cfg.Journal != nil && !ok {
		// Without the list, recovery could take the task of a finished
		// operation for that of a request whose answer was lost, and
		// record as done a change that never ran.
		return nil, fmt.Errorf("%w: Journal %T cannot list its operations (journal.OpLister)", ErrConfig, cfg.Journal)
	}
	if cfg.Provider == nil {
		cfg.Provider = EmptyProvider{}
	}
	nodes, err := nodeScope(cfg.Nodes)
	if err != nil {
		return nil, err
	}
	cfg.Nodes = slices.Clone(cfg.Nodes)
	if cfg.Concurrency < 0 || cfg.NodeConcurrency < 0 || cfg.NodeRate < 0 || cfg.NodeRate != cfg.NodeRate || cfg.Interval < 0 || cfg.Retries < 0 || cfg.RetryMin < 0 ||
		cfg.RetryMax < 0 || cfg.ClockSkew < 0 || cfg.TaskTimeout < 0 {
		return nil, fmt.Errorf("%w: negative durations and counts are not allowed (but for Jitter and SettleDelay, where they mean none)", ErrConfig)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 8
	}
	if cfg.NodeConcurrency == 0 {
		cfg.NodeConcurrency = DefaultNodeConcurrency
	}
	if cfg.Interval == 0 {
		cfg.Interval = 30 * time.Second
	}
	switch {
	case cfg.Jitter == 0:
		cfg.Jitter = cfg.Interval / 10
	case cfg.Jitter < 0:
		cfg.Jitter = 0
	}
	if cfg.Jitter > cfg.Interval {
		return nil, fmt.Errorf("%w: Jitter %v exceeds Interval %v", ErrConfig, cfg.Jitter, cfg.Interval)
	}
	if cfg.Retries == 0 {
		cfg.Retries = 3
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = 15 * time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		return nil, fmt.Errorf("%w: RetryMax %v is below RetryMin %v", ErrConfig, cfg.RetryMax, cfg.RetryMin)
	}
	switch {
	case cfg.SettleDelay == 0:
		cfg.SettleDelay = 10 * time.Second
	case cfg.SettleDelay < 0:
		cfg.SettleDelay = 0
	}
	if cfg.TaskTimeout == 0 {
		cfg.TaskTimeout = 10 * time.Minute
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = 2 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Validation.Validate(); err != nil {
		return nil, fmt.Errorf("%w: Validation: %w", ErrConfig, err)
	}
	cfg.Validation.AllowRootOnly = slices.Clone(cfg.Validation.AllowRootOnly)
	if id, ok := cfg.Proxmox.(interface{ TaskUser() string }); ok {
		switch own := id.TaskUser(); {
		case own == "":
		case cfg.TaskUser == "":
			cfg.TaskUser = own
		case !strings.EqualFold(cfg.TaskUser, own):
			// Letter case aside: a password login on a realm whose user
			// names are case-insensitive learns Proxmox's spelling only
			// when it logs in, and the engine asks the client again.
			return nil, fmt.Errorf("%w: TaskUser %q does not match the client's identity %q: its tasks would not be recognized after a lost answer", ErrConfig, cfg.TaskUser, own)
		}
	}
	if cfg.TaskUser != "" {
		if err := validTaskUser(cfg.TaskUser); err != nil {
			return nil, fmt.Errorf("%w: TaskUser %q: %w", ErrConfig, cfg.TaskUser, err)
		}
	}
	cfg.Proxmox = limitedProxmox{px: cfg.Proxmox, lim: newNodeLimiter(cfg.NodeConcurrency, cfg.NodeRate)}
	e := &Engine{
		cfg:     cfg,
		log:     cfg.Logger,
		q:       cfg.Queue,
		plan:    cfg.Plan.withDefaults(),
		pass:    make(chan struct{}, 1),
		trigger: make(chan struct{}, 1),
		applies: make(map[string]*applyCall),
		nodes:   nodes,

		shutdown: make(chan struct{}),
	}
	e.plan.AllowIrreversible = cfg.AllowIrreversible
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.q == nil {
		e.q = queue.New[int](queue.WithMaxConcurrent(cfg.Concurrency))
		e.ownQ = true
	}
	if cfg.Journal != nil {
		e.lookup, _ = cfg.Journal.(journal.KeyLookup)
	}
	e.mustRecover.Store(true)
	if cfg.Journal == nil {
		// A dry run without a journal: nothing can be in flight.
		e.mustRecover.Store(false)
		e.st.recovered, e.st.recoveredAt = true, cfg.Now()
	}
	return e, nil
}

// Queue returns the per-guest queue the engine submits to, so that other
// code changing guests can go through the same lanes.
func (e *Engine) Queue() *queue.Queue[int] { return e.q }

// normalizeSet returns the rules for a guest type.
func (e *Engine) normalizeSet(t proxmox.GuestType) *normalize.Set { return e.plan.set(t) }

// acquirePass takes the pass token, or fails when ctx ends first.
func (e *Engine) acquirePass(ctx context.Context) error {
	select {
	case e.pass <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Engine) releasePass() { <-e.pass }

// newOpID returns a new operation id: the time, for people reading the
// journal, and 64 random bits, for uniqueness across restarts.
func (e *Engine) newOpID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("reconcile: crypto/rand failed: " + err.Error()) // never happens on supported platforms
	}
	return e.cfg.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// ErrDraining is returned, wrapped, by ReconcileOnce and Apply once Drain
// has been called, and is the error of an action a draining engine did not
// start.
var ErrDraining = errors.New("reconcile: engine is draining")

// Drain stops the engine from starting operations, and waits until the
// operations it has started have ended, or until ctx ends (it then returns
// ctx.Err(), and the operations go on). An operation ends once its outcome
// is journaled, or once it is left in flight for Recover.
//
// It is the first half of a graceful stop: from the moment Drain is called,
// nothing new is sent to Proxmox. The pass in progress finishes the actions
// already sent and reports the others as not started ([OutcomeNotStarted],
// [GuestNotStarted]); a later ReconcileOnce or Apply returns [ErrDraining]
// at once, and Run starts no more passes and waits for its context to end.
// Cancelling Run's context after Drain returns then stops the engine
// without interrupting an operation. Recover still works: it sends nothing.
//
// Draining cannot be undone: a process that wants to go on makes a new
// engine. Drain is safe to call more than once, and concurrently.
func (e *Engine) Drain(ctx context.Context) error {
	e.opsMu.Lock()
	if !e.draining {
		e.draining = true
		e.idle = make(chan struct{})
		if e.active == 0 {
			close(e.idle)
		}
	}
	idle := e.idle
	e.opsMu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops the engine gracefully, in one call: it drains (nothing new
// is sent to Proxmox, and the operations already sent finish; see
// [Engine.Drain]), then ends Run, which returns nil, and waits until every
// Run call has returned. It is what a program calls when asked to stop, with
// a context that bounds how long it may wait:
//
//	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
//	defer cancel()
//	err := engine.Shutdown(ctx)
//
// If ctx ends first, Shutdown returns ctx.Err(): the operations still
// running go on, and so does Run, until Shutdown is called again or Run's
// own context ends (which may interrupt them; Recover resolves what it
// interrupts). Afterwards ReconcileOnce and Apply return [ErrDraining], and
// Run returns nil at once. The journal stays open: its owner closes it after
// Shutdown returns. Shutdown is safe to call more than once, and
// concurrently.
func (e *Engine) Shutdown(ctx context.Context) error {
	if err := e.Drain(ctx); err != nil {
		return err
	}
	e.opsMu.Lock()
	e.shutOnce.Do(func() {
		close(e.shutdown)
		e.runsDone = make(chan struct{})
		if e.runs == 0 {
			close(e.runsDone)
		}
	})
	done := e.runsDone
	e.opsMu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// beginRun counts a Run call, or reports false if the engine was shut down.
func (e *Engine) beginRun() bool {
	e.opsMu.Lock()
	defer e.opsMu.Unlock()
	select {
	case <-e.shutdown:
		return false
	default:
	}
	e.runs++
	return true
}

// endRun counts a Run call as returned, and wakes Shutdown after the last.
func (e *Engine) endRun() {
	e.opsMu.Lock()
	defer e.opsMu.Unlock()
	e.runs--
	if e.runsDone != nil && e.runs == 0 {
		close(e.runsDone)
	}
}

// isDraining reports whether Drain has been called.
func (e *Engine) isDraining() bool {
	e.opsMu.Lock()
	defer e.opsMu.Unlock()
	return e.draining
}

// beginOp counts an operation as started, or reports false if the engine is
// draining and it must not start.
func (e *Engine) beginOp() bool {
	e.opsMu.Lock()
	defer e.opsMu.Unlock()
	if e.draining {
		return false
	}
	e.active++
	return true
}

// endOp counts an operation as ended, and wakes Drain after the last one.
func (e *Engine) endOp() {
	e.opsMu.Lock()
	defer e.opsMu.Unlock()
	e.active--
	if e.draining && e.active == 0 {
		close(e.idle)
	}
}

// Event reports progress of an action, for displays and metrics; see
// Config.OnEvent. An operation's events come in the order of its Phase:
// "start" once its intent is journaled, "task" for each Proxmox task it
// started, and one last event, "done" or "failed". An operation that fails
// before its intent is journaled (the journal refused it, say) has only
// its "failed" event.
//
// An operation that was still in flight in the journal (one that ended
// OutcomeInterrupted, or that a stopped process left behind) gets its
// outcome from Recover, which reports it with a "done" or "failed" event of
// its own, Recovered set: after an interrupted operation's "failed" event,
// or as the only event of an operation another process started.
type Event struct {
	Ref    proxmox.Ref
	Kind   ActionKind
	OpID   string
	Phase  string // "start", "task" (a task was started), "done", "failed"
	UPID   proxmox.UPID
	Detail string
	At     time.Time

	// Set on the last event ("done", "failed") only: the action's outcome,
	// as its ActionReport has it; how long the operation ran; and how much
	// of that it spent waiting for Proxmox tasks to end (zero when it
	// started none).
	Outcome  ActionOutcome
	Duration time.Duration
	TaskWait time.Duration

	// Recovered: Recover resolved the operation; see above. Its Outcome is
	// succeeded, failed or conflict, its Detail says how it was resolved
	// or why it failed, and Duration and TaskWait are zero: the operation
	// ran, if at all, before this Recover, perhaps in another process.
	Recovered bool
}

func (e *Engine) event(ev Event) {
	if e.cfg.OnEvent != nil {
		ev.At = e.cfg.Now()
		e.cfg.OnEvent(ev)
	}
}

// lastEvent reports the end of an operation, whose report is filled in.
func (e *Engine) lastEvent(o *op, rep *ActionReport, phase string) {
	if e.cfg.OnEvent != nil {
		ev := Event{Ref: o.ref, Kind: o.kind, OpID: o.id, Phase: phase, UPID: rep.UPID, Detail: rep.Error,
			Outcome: rep.Outcome, TaskWait: o.taskWait, At: e.cfg.Now()}
		if !o.started.IsZero() {
			ev.Duration = ev.At.Sub(o.started)
		}
		e.cfg.OnEvent(ev)
	}
}

// validTaskUser checks the shape Proxmox gives the user of a task:
// "user@realm", or "user@realm!tokenname" for an API token, without the
// characters a UPID cannot hold.
func validTaskUser(u string) error {
	user, realm, ok := strings.Cut(u, "@")
	if !ok || user == "" || realm == "" {
		return errors.New(`not "user@realm" or "user@realm!tokenname"`)
	}
	if r, tok, isToken := strings.Cut(realm, "!"); isToken && (r == "" || tok == "") {
		return errors.New(`not "user@realm" or "user@realm!tokenname"`)
	}
	if strings.ContainsAny(u, ":/ \t\n\r") {
		return errors.New("contains a character a task id cannot hold")
	}
	return nil
}
