package gauntlet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// The fault storm runs the engine in this process against the fake cluster
// while the fake misbehaves in every way it can, round after round, with a
// second writer editing the guests all along and one-shot operations
// arriving in the middle of passes. Then the faults stop, and the fleet
// must converge within a bounded number of passes, with every task Proxmox
// ran accounted for by exactly one journaled operation, every idempotency
// key run again only after attempts that proved Proxmox did nothing (and a
// key refused for any request but its own), every change the other writer
// made to options we do not manage still in place, no write of ours
// accepted against a configuration we had not read, retries within their
// bounds, and no goroutine left behind.

const (
	stormEngineRetries = 3 // reconcile.Config.Retries
	stormClientRetries = 2 // proxmox.WithRetry
	// maxConvergePasses bounds the passes the fleet may take to converge
	// once the faults stop: one to act, one to find nothing left to do.
	maxConvergePasses = 3
)

// stormGuest is one guest of the storm and what is declared for it.
type stormGuest struct {
	ref     proxmox.Ref
	oneShot bool // a target of one-shot operations; not declared
	// The declared state; changed between rounds.
	power reconcile.Power
	desc  string
	tags  string
}

// nameKey is the option the other writer renames a guest through: an
// option the desired state never manages.
func nameKey(t proxmox.GuestType) string {
	if t == proxmox.LXC {
		return "hostname"
	}
	return "name"
}

func (g *stormGuest) desired() reconcile.Desired {
	return reconcile.Desired{Ref: g.ref, Power: g.power, Config: map[string]string{
		"memory": "1024", "description": g.desc, "tags": g.tags,
	}}
}

// otherWriter edits guests behind the engine's back, as a person in the
// GUI would: it renames guests and flips onboot (options nobody declares),
// and sometimes rewrites a declared description. It remembers the last
// value it gave every option it does not share with the desired state, so
// that the storm can check that none of them was lost.
type otherWriter struct {
	srv *proxmoxtest.Server
	mu  sync.Mutex // held across an edit and its bookkeeping: edits are totally ordered
	seq int
	// last holds the last value written to each unmanaged option, by vmid.
	last   map[int]map[string]string
	edits  int
	errors []string
}

func (w *otherWriter) edit(ref proxmox.Ref, set map[string]string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.srv.UpdateConfig(ref, set, nil); err != nil {
		if !errors.Is(err, proxmoxtest.ErrClosed) {
			w.errors = append(w.errors, err.Error())
		}
		return
	}
	w.edits++
	for k, v := range set {
		if k == "description" {
			continue // declared: the desired state wins it back
		}
		if w.last[ref.VMID] == nil {
			w.last[ref.VMID] = map[string]string{}
		}
		w.last[ref.VMID][k] = v
	}
}

// editRandom makes one edit to a random guest.
func (w *otherWriter) editRandom(rng *rand.Rand, guests []*stormGuest) {
	w.mu.Lock()
	w.seq++
	seq := w.seq
	w.mu.Unlock()
	g := guests[rng.IntN(len(guests))]
	set := map[string]string{}
	switch rng.IntN(4) {
	case 0:
		set["onboot"] = strconv.Itoa(seq % 2)
	case 1:
		set[nameKey(g.ref.Type)] = fmt.Sprintf("w%d-%d", g.ref.VMID, seq)
	case 2:
		set["onboot"] = strconv.Itoa(seq % 2)
		set[nameKey(g.ref.Type)] = fmt.Sprintf("w%d-%d", g.ref.VMID, seq)
	default:
		set["description"] = fmt.Sprintf("edited by hand (%d)", seq)
	}
	w.edit(g.ref, set)
}

// digestWatch wraps the client the engine uses and checks, on every
// configuration write of a declared guest, the optimistic-concurrency chain
// from our side: the write carries a digest, and that digest is one the
// engine read for this guest. Proxmox applies a write only while the
// guest's configuration still has that digest, that is (the digest being a
// hash of the file) while it is the very configuration we read: no change
// of ours lands on one we did not observe. That last step is Proxmox's (and
// the fake's, tested in proxmoxtest); the storm counts the writes it
// refused.
type digestWatch struct {
	reconcile.Proxmox
	checked map[int]bool // the declared guests; one-shot changes may omit the digest

	mu         sync.Mutex
	read       map[int]map[string]bool // digests returned by Config and PendingConfig, by vmid
	violations []string
	accepted   int // configuration writes accepted
	refused    int // configuration writes refused for a changed digest
}

func (w *digestWatch) Config(ctx context.Context, ref proxmox.Ref) (proxmox.Config, error) {
	c, err := w.Proxmox.Config(ctx, ref)
	if err == nil {
		w.mu.Lock()
		if w.read[ref.VMID] == nil {
			w.read[ref.VMID] = map[string]bool{}
		}
		w.read[ref.VMID][c.Digest] = true
		w.mu.Unlock()
	}
	return c, err
}

func (w *digestWatch) PendingConfig(ctx context.Context, ref proxmox.Ref) (proxmox.PendingConfig, error) {
	pc, err := w.Proxmox.PendingConfig(ctx, ref)
	if err == nil {
		w.mu.Lock()
		if w.read[ref.VMID] == nil {
			w.read[ref.VMID] = map[string]bool{}
		}
		w.read[ref.VMID][pc.Config.Digest] = true
		w.mu.Unlock()
	}
	return pc, err
}

func (w *digestWatch) SetConfig(ctx context.Context, ref proxmox.Ref, ch proxmox.ConfigChange) (proxmox.UPID, error) {
	if !w.checked[ref.VMID] {
		return w.Proxmox.SetConfig(ctx, ref, ch)
	}
	w.mu.Lock()
	switch {
	case ch.Digest == "":
		w.violations = append(w.violations, fmt.Sprintf("%s: configuration write without a digest: %v", ref, ch.Set))
	case !w.read[ref.VMID][ch.Digest]:
		w.violations = append(w.violations, fmt.Sprintf("%s: configuration write with digest %s, which was never read", ref, ch.Digest))
	}
	w.mu.Unlock()
	upid, err := w.Proxmox.SetConfig(ctx, ref, ch)
	w.mu.Lock()
	switch {
	case err == nil:
		w.accepted++
	case errors.Is(err, proxmox.ErrDigestMismatch):
		w.refused++
	}
	w.mu.Unlock()
	return upid, err
}

// requestCounts tallies the fake server's request log.
type requestCounts struct {
	total, writes int
	byGuest       map[int]int // writes per vmid
	// applied counts the writes Proxmox carried out, per vmid and
	// operation kind: each operation may be carried out once. A write
	// that starts a task is counted by its task (addTasks): the request
	// log says that a dropped request was handled, not whether its
	// handler acted or refused (a reboot of a stopped VM dies before it
	// starts one), and the engine sends a write again once it finds no
	// task for it. A synchronous write (an LXC configuration change) is
	// counted when it was answered 200, or handled and then dropped.
	applied map[string]int
}

// addTasks counts the tasks Proxmox ran as the writes it carried out.
func (c *requestCounts) addTasks(tasks []proxmoxtest.Task) {
	for _, t := range tasks {
		kind := strings.TrimPrefix(strings.TrimPrefix(t.Type, "qm"), "vz")
		if kind == "config" {
			kind = "set_config"
		}
		c.applied[fmt.Sprintf("%d/%s", t.Guest.VMID, kind)]++
	}
}

func (c *requestCounts) add(reqs []proxmoxtest.Request) {
	for _, r := range reqs {
		c.total++
		if r.Method == "GET" {
			continue
		}
		c.writes++
		// /nodes/{node}/{type}/{vmid}/config or .../status/{action}
		parts := strings.Split(r.Path, "/")
		if len(parts) < 6 {
			continue
		}
		vmid, err := strconv.Atoi(parts[4])
		if err != nil {
			continue
		}
		c.byGuest[vmid]++
		if parts[3] == string(proxmox.LXC) && parts[5] == "config" && (r.Status == 200 || r.Dropped && r.Handled) {
			c.applied[fmt.Sprintf("%d/set_config", vmid)]++
		}
	}
}

// TestFaultStorm runs the storm in the steps the comment at the top of this
// file describes; the state they share is a *storm.
func TestFaultStorm(t *testing.T) {
	s := newStorm(t)
	for round := 1; round <= s.rounds; round++ {
		s.round(round)
	}
	s.calm()
	s.converge()
	s.hubAsksAgain()
	s.declaredStateHolds()
	s.atMostOnce()
	s.boundedRetries()
	s.stop()
}

// storm is the state the steps of TestFaultStorm share.
type storm struct {
	t        *testing.T
	rng      *rand.Rand
	fig      *figures
	baseline int // goroutines before the test
	ctx      context.Context
	nodes    []string
	srv      *proxmoxtest.Server
	// guests are all of them; declared the ones the desired state
	// manages, oneShots the ones only one-shot operations touch.
	guests, declared, oneShots []*stormGuest
	prov                       *reconcile.StaticProvider
	client                     *proxmox.Client
	watch                      *digestWatch
	jr                         *journal.FileJournal
	engine                     *reconcile.Engine
	// The other writer, its stop, and the fault that paces it.
	writer                 *otherWriter
	stopWriter, writerDone chan struct{}
	pacer                  proxmoxtest.Fault

	rounds      int
	counts      requestCounts
	faults      atomic.Int64 // faults that fired
	handles     []*proxmoxtest.FaultHandle
	keys        map[string]*hubKey // the hub's one-shot keys
	keyOrder    []string           // in the order the hub made them
	aborted     int                // passes that could not act
	maxAttempts int                // the most attempts one action made
	// What the journal holds at the end, and what the checks found.
	ops        []journal.Entry
	opsByGuest map[int]int
	opsByKind  map[string]int
	dups, lost int
}

// declare is the desired state of the declared guests.
func declare(declared []*stormGuest) []reconcile.Desired {
	var ds []reconcile.Desired
	for _, g := range declared {
		ds = append(ds, g.desired())
	}
	return ds
}

// newStorm builds the fleet, the engine and the other writer.
func newStorm(t *testing.T) *storm {
	rng := newRand(t)
	fig := newFigures(t)
	baseline := runtime.NumGoroutine()
	ctx := ctxFor(t, sized(3*time.Minute, 30*time.Minute))

	nodes := []string{"pve1", "pve2", "pve3"}
	versions := []string{proxmoxtest.PVE74, proxmoxtest.PVE80, proxmoxtest.PVE81, proxmoxtest.PVE82, proxmoxtest.PVE83, proxmoxtest.PVE84, proxmoxtest.PVE90}
	version := versions[rng.IntN(len(versions))]
	visibility := rng.IntN(3) // status requests that find a new task not there yet
	fig.set("pve_version", version)
	srv, err := proxmoxtest.NewServer(
		proxmoxtest.WithNodes(nodes...),
		proxmoxtest.WithVersion(version),
		proxmoxtest.WithTaskVisibilityDelay(visibility),
		proxmoxtest.WithSeed(rng.Uint64()),
		proxmoxtest.WithRequestLogLimit(1<<22),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close) // stop closes it; a step that fails leaves it to the cleanup

	// The fleet: declared guests of both types on every node, stopped,
	// with less memory than declared, and a few QEMU guests that only
	// one-shot operations touch.
	nDeclared := sized(30, 240)
	nOneShot := sized(5, 24)
	var guests, declared, oneShots []*stormGuest
	for i := range nDeclared + nOneShot {
		g := &stormGuest{ref: proxmox.Ref{Node: nodes[i%len(nodes)], Type: proxmox.QEMU, VMID: 100 + i}}
		if i%3 == 2 {
			g.ref.Type = proxmox.LXC
		}
		g.oneShot = i >= nDeclared
		cfg := map[string]string{"memory": "512", "description": "initial", "tags": "init", "onboot": "0",
			nameKey(g.ref.Type): fmt.Sprintf("g%d", g.ref.VMID)}
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: g.ref.Node, Type: g.ref.Type, VMID: g.ref.VMID, Config: cfg}); err != nil {
			t.Fatal(err)
		}
		guests = append(guests, g)
		if g.oneShot {
			oneShots = append(oneShots, g)
		} else {
			g.power, g.desc, g.tags = reconcile.PowerStopped, "declared", "managed"
			declared = append(declared, g)
		}
	}
	prov, err := reconcile.NewStaticProvider(declare(declared))
	if err != nil {
		t.Fatal(err)
	}

	client := newClient(t, srv)
	watch := &digestWatch{Proxmox: client, checked: map[int]bool{}, read: map[int]map[string]bool{}}
	for _, g := range declared {
		watch.checked[g.ref.VMID] = true
	}
	jr, err := journal.OpenFile(filepath.Join(t.TempDir(), "storm.journal"), journal.WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	engine, err := reconcile.NewEngine(reconcile.Config{
		Proxmox: watch, Journal: jr, Provider: prov,
		Concurrency: 1 + rng.IntN(8), Retries: stormEngineRetries,
		RetryMin: time.Millisecond, RetryMax: 4 * time.Millisecond,
		SettleDelay: 2 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}

	// The other writer edits guests all through the storm, on its own
	// goroutine. It is paced by the engine's reads rather than by a clock,
	// so that the race is as fierce on a slow machine as on a fast one:
	// every few reads let it make an edit.
	writer := &otherWriter{srv: srv, last: map[int]map[string]string{}}
	writerRng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
	stopWriter := make(chan struct{})
	writerDone := make(chan struct{})
	poke := make(chan struct{}, 1)
	go func() {
		defer close(writerDone)
		for {
			select {
			case <-stopWriter:
				return
			case <-poke:
				writer.editRandom(writerRng, guests)
			}
		}
	}()
	var reads atomic.Int64
	pacer := proxmoxtest.Fault{Method: "GET", Before: func() {
		if reads.Add(1)%4 == 0 {
			select {
			case poke <- struct{}{}:
			default:
			}
		}
	}}

	return &storm{t: t, rng: rng, fig: fig, baseline: baseline, ctx: ctx, nodes: nodes, srv: srv,
		guests: guests, declared: declared, oneShots: oneShots, prov: prov, client: client, watch: watch,
		jr: jr, engine: engine, writer: writer, stopWriter: stopWriter, writerDone: writerDone, pacer: pacer,
		counts:     requestCounts{byGuest: map[int]int{}, applied: map[string]int{}},
		keys:       map[string]*hubKey{},
		rounds:     sized(30, 150),
		opsByGuest: map[int]int{}, opsByKind: map[string]int{},
	}
}

// round is one round of the storm: a new declared state for some guests,
// locks, faults, one-shot operations during the pass, and the pass.
func (s *storm) round(round int) {
	t, rng, fig, ctx, srv, engine, guests, declared, oneShots, prov, client, writer := s.t, s.rng, s.fig, s.ctx, s.srv, s.engine, s.guests, s.declared, s.oneShots, s.prov, s.client, s.writer
	// A new declared state for some guests. The faults of the round
	// aim mostly at the requests these changes call for.
	var targets []faultTarget
	for _, g := range declared {
		if rng.IntN(3) == 0 {
			if g.power == reconcile.PowerRunning {
				g.power = reconcile.PowerStopped
				targets = append(targets, faultTarget{g, "status/stop"})
			} else {
				g.power = reconcile.PowerRunning
				targets = append(targets, faultTarget{g, "status/start"})
			}
		}
		if rng.IntN(3) == 0 {
			g.desc = fmt.Sprintf("round %d: a&b;c=d %%00 ü", round)
			targets = append(targets, faultTarget{g, "config"})
		}
		if rng.IntN(4) == 0 {
			g.tags = fmt.Sprintf("managed;r%d", round)
			targets = append(targets, faultTarget{g, "config"})
		}
	}
	if err := prov.Set(declare(declared)); err != nil {
		t.Fatal(err)
	}

	// Locks come and go between passes (and appear during them,
	// through faults).
	for _, g := range guests {
		if st, _ := srv.Guest(g.ref); st.Lock != "" && rng.IntN(2) == 0 {
			if err := srv.SetLock(g.ref, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	if rng.IntN(2) == 0 {
		g := guests[rng.IntN(len(guests))]
		if err := srv.SetLock(g.ref, "backup"); err != nil {
			t.Fatal(err)
		}
		fig.add("locks_between_passes", 1)
	}

	// Faults for this round.
	offline := ""
	for range 2 + rng.IntN(6) {
		f, node := randomFault(rng, srv, writer, guests, targets, &s.faults)
		if node != "" {
			offline = node
			continue
		}
		s.handles = append(s.handles, srv.Inject(f))
	}
	if offline != "" {
		if err := srv.SetNodeOnline(offline, false); err != nil {
			t.Fatal(err)
		}
		s.faults.Add(1)
	}
	// Last, so that the round's faults on reads match first.
	s.handles = append(s.handles, srv.Inject(s.pacer))

	// One-shot operations arrive during the pass: new requests, and
	// old ones the hub retries with their key (whether or not the
	// first call answered), now and then with a request that is not
	// the one the key names.
	var wg sync.WaitGroup
	var shotMu sync.Mutex
	for n := range rng.IntN(4) {
		var (
			shot     reconcile.OneShot
			conflict bool
		)
		shotMu.Lock()
		if len(s.keyOrder) > 0 && rng.IntN(3) == 0 {
			hk := s.keys[s.keyOrder[rng.IntN(len(s.keyOrder))]]
			shot = hk.shot // the hub retries an old request
			// A key the journal holds refuses another request; one
			// whose first call is not answered yet may still be
			// taken by it, so only the former is tried.
			if len(hk.attempts) > 0 && rng.IntN(4) == 0 {
				shot, conflict = otherRequest(shot), true
			}
		}
		shotMu.Unlock()
		if shot.Key == "" {
			shot = randomOneShot(rng, fmt.Sprintf("hub/%d/%d", round, n), oneShots, client, ctx)
			if rng.IntN(4) == 0 {
				// Its task fails after Proxmox may have acted: the
				// key is spent, and a retry must not run it again.
				s.handles = append(s.handles, srv.Inject(proxmoxtest.Fault{Path: writePath(shot), Times: 1, TaskError: stormTaskError}))
				fig.add("oneshot_tasks_failed", 1)
			}
			shotMu.Lock()
			s.keys[shot.Key] = &hubKey{shot: shot, attempts: map[int]reconcile.Result{}}
			s.keyOrder = append(s.keyOrder, shot.Key)
			shotMu.Unlock()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := engine.Apply(ctx, shot)
			shotMu.Lock()
			defer shotMu.Unlock()
			fig.add("oneshot_calls", 1)
			switch {
			case conflict:
				fig.add("oneshot_conflicts", 1)
				if !errors.Is(err, reconcile.ErrKeyConflict) || res.OpID != "" {
					t.Errorf("key %q asked for another request (%s on %s): %+v %v, want %v and no operation",
						shot.Key, shot.Kind, shot.Ref, res, err, reconcile.ErrKeyConflict)
				}
				return
			case errors.Is(err, reconcile.ErrKeyConflict):
				t.Errorf("key %q: its own request was refused as another: %v", shot.Key, err)
				return
			case err != nil:
				fig.add("oneshot_errors", 1)
				return
			}
			if res.Replayed {
				fig.add("oneshot_replays", 1)
			}
			if res.KeyUnused {
				fig.add("oneshot_answers_key_unused", 1)
			}
			for _, p := range s.keys[shot.Key].add(res) {
				t.Error(p)
			}
		}()
	}

	rep, err := engine.ReconcileOnce(ctx)
	wg.Wait()
	if err != nil {
		if !errors.Is(err, reconcile.ErrPassAborted) || ctx.Err() != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		s.aborted++
	}
	for _, g := range rep.Guests {
		fig.add("guest_"+string(g.Outcome), 1)
		for _, a := range g.Actions {
			fig.add("action_"+string(a.Outcome), 1)
			s.maxAttempts = max(s.maxAttempts, a.Attempts)
		}
	}

	// The round's faults end with it.
	for _, h := range s.handles {
		h.Remove()
	}
	s.handles = s.handles[:0]
	if offline != "" {
		if err := srv.SetNodeOnline(offline, true); err != nil {
			t.Fatal(err)
		}
	}
	s.counts.add(srv.Requests())
	srv.ResetRequests()
}

// calm stops the faults: no more writer, faults or locks, every node online.
func (s *storm) calm() {
	t, fig, ctx, srv, jr, guests, nodes := s.t, s.fig, s.ctx, s.srv, s.jr, s.guests, s.nodes
	// The faults stop: no more writer, faults or locks.
	close(s.stopWriter)
	<-s.writerDone
	srv.ClearFaults()
	for _, g := range guests {
		if err := srv.SetLock(g.ref, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		if err := srv.SetNodeOnline(n, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	// Operations the storm left in flight are resolved by the engine
	// itself, before its next pass: nobody calls Recover.
	inflight, err := jr.InFlight(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fig.set("in_flight_when_faults_stopped", len(inflight))
}

// converge runs passes until the fleet is in line, within a bound.
func (s *storm) converge() {
	t, fig, ctx, engine, jr := s.t, s.fig, s.ctx, s.engine, s.jr
	// Convergence within a bounded number of passes.
	passes := 0
	for {
		passes++
		rep, err := engine.ReconcileOnce(ctx)
		if err != nil {
			t.Fatalf("convergence pass %d: %v", passes, err)
		}
		sent, _ := rep.Actions()
		if rep.Converged() && sent == 0 {
			break
		}
		if passes >= maxConvergePasses {
			t.Fatalf("not converged after %d passes once the s.faults stopped:\n%s", passes, rep)
		}
	}
	fig.set("convergence_passes", passes)
	if inflight, err := jr.InFlight(ctx); err != nil || len(inflight) != 0 {
		t.Fatalf("in flight after convergence: %v %+v", err, inflight)
	}
}

// hubAsksAgain has the hub ask again for every request it made, with its key.
func (s *storm) hubAsksAgain() {
	t, fig, ctx, srv, engine := s.t, s.fig, s.ctx, s.srv, s.engine
	// The hub asks again for every request it made, with its key. First
	// with another request: a key the journal holds refuses it, and
	// nothing is sent. Then with the request itself: a key that is spent
	// (its last attempt may have acted) is answered from the journal and
	// nothing runs; a key left unused (never journaled, or its last
	// attempt proved that Proxmox did nothing) runs the request again,
	// as its next attempt.
	tasksBefore := len(srv.Tasks())
	ran := 0
	for _, key := range s.keyOrder {
		hk := s.keys[key]
		held, ok, err := engine.Lookup(ctx, key)
		if err != nil {
			t.Fatalf("key %q: Lookup: %v", key, err)
		}
		if ok {
			for _, p := range hk.agrees(held) {
				t.Error(p)
			}
			n := len(srv.Requests())
			other := otherRequest(hk.shot)
			if res, err := engine.Apply(ctx, other); !errors.Is(err, reconcile.ErrKeyConflict) || res.OpID != "" {
				t.Errorf("key %q asked for another request (%s on %s): %+v %v, want %v", key, other.Kind, other.Ref, res, err, reconcile.ErrKeyConflict)
			}
			if sent := srv.Requests()[n:]; len(sent) != 0 {
				t.Errorf("key %q: a request refused for its key sent %d requests, first %s %s", key, len(sent), sent[0].Method, sent[0].Path)
			}
		} else if len(hk.attempts) > 0 {
			t.Errorf("key %q: the hub saw %d attempts, but Lookup finds none", key, len(hk.attempts))
		}
		res, err := engine.Apply(ctx, hk.shot)
		switch {
		case err != nil:
			t.Errorf("key %q asked again: %v", key, err)
			continue
		case !ok:
			ran++
			if res.Replayed || res.Attempt != 1 {
				t.Errorf("key %q asked again, never journaled before: %+v, want its first attempt", key, res)
			}
		case held.KeyUnused:
			ran++
			if res.Replayed || res.Attempt != held.Attempt+1 || res.OpID == held.OpID {
				t.Errorf("key %q asked again, left unused by attempt %d (op %s): %+v, want attempt %d", key, held.Attempt, held.OpID, res, held.Attempt+1)
			}
		default:
			if !res.Replayed || res.OpID != held.OpID || res.Attempt != held.Attempt || res.State != held.State || res.KeyUnused {
				t.Errorf("key %q asked again, spent by attempt %d (op %s, %s): %+v, want its replay", key, held.Attempt, held.OpID, held.State, res)
			}
		}
		for _, p := range hk.add(res) {
			t.Error(p)
		}
	}
	if err := srv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Tasks()) - tasksBefore; n > ran {
		t.Errorf("asking again for %d s.keys, of which %d were unused, started %d tasks", len(s.keys), ran, n)
	}
	fig.set("oneshot_keys_run_again_at_the_end", ran)
	s.counts.add(srv.Requests())
}

// declaredStateHolds checks the declared state, and the other writer's changes.
func (s *storm) declaredStateHolds() {
	t, srv, guests, writer := s.t, s.srv, s.guests, s.writer
	// The declared state holds, and nothing the other writer did to
	// options we do not manage was lost.
	for _, g := range guests {
		st, ok := srv.Guest(g.ref)
		if !ok {
			t.Fatalf("%s vanished", g.ref)
		}
		if !g.oneShot {
			if st.Running != (g.power == reconcile.PowerRunning) || st.Config["memory"] != "1024" {
				t.Errorf("%s: running=%v memory=%s, declared %s", g.ref, st.Running, st.Config["memory"], g.power)
			}
		}
		for k, v := range writer.last[g.ref.VMID] {
			if got := st.Config[k]; got != v {
				s.lost++
				t.Errorf("s.lost update: %s %s is %q, the other writer left %q", g.ref, k, got, v)
			}
		}
	}
	if len(writer.errors) > 0 {
		t.Errorf("the other writer failed %d times, first: %s", len(writer.errors), writer.errors[0])
	}
}

// atMostOnce checks that every task is one operation's, and that every
// operation and every key ran at most once.
func (s *storm) atMostOnce() {
	t, fig, ctx, srv, engine, jr := s.t, s.fig, s.ctx, s.srv, s.engine, s.jr
	// Every task is one operation's, and every operation ran at most once.
	var err error
	s.ops, err = opsOf(ctx, jr)
	if err != nil {
		t.Fatal(err)
	}
	isOurs := func(proxmox.Ref) bool { return true }
	for _, p := range taskClaims(srv.Tasks(), s.ops, isOurs) {
		s.dups++
		t.Error(p)
	}
	for _, p := range outcomeTruth(srv.Tasks(), s.ops) {
		t.Error(p)
		fig.add("untrue_outcomes", 1)
	}
	for _, op := range s.ops {
		s.opsByGuest[op.VMID]++
		s.opsByKind[fmt.Sprintf("%d/%s", op.VMID, op.Kind)]++
		// Every operation that succeeded ran a task, except those that
		// Proxmox answers synchronously: an LXC config change, and an LXC
		// start or stop that finds the container already in that state
		// (which the engine counts as done).
		lxcSync := op.Params["type"] == "lxc" && (op.Kind == "set_config" || op.Kind == "start" || op.Kind == "stop")
		if op.State == journal.Succeeded && op.UPID == "" && !lxcSync {
			t.Errorf("operation %s (%s on %d) is recorded as succeeded but never had a task", op.OpID, op.Kind, op.VMID)
		}
	}
	// Every key ran at most once: an attempt followed only attempts that
	// did nothing, by the journal and Proxmox's tasks, and what Lookup
	// finds for the key is its last attempt, the one the hub saw last.
	attempts, problems := keyAttempts(s.ops)
	problems = append(problems, keysAtMostOnce(attempts, srv.Tasks())...)
	for _, p := range problems {
		s.dups++
		t.Error(p)
	}
	for key, hk := range s.keys {
		held, ok, err := engine.Lookup(ctx, key)
		at := attempts[key]
		if err != nil || !ok || len(at) == 0 {
			t.Errorf("key %q: Lookup %+v %v %v, %d attempts in the journal", key, held, ok, err, len(at))
			continue
		}
		last := at[len(at)-1]
		if held.OpID != last.OpID || held.Attempt != len(at) || held.State != last.State || !held.State.Terminal() {
			t.Errorf("key %q: Lookup %+v, but its last attempt (%d) in the journal is %+v", key, held, len(at), last)
		}
		for _, p := range hk.agrees(held) {
			t.Error(p)
		}
		if held.KeyUnused {
			fig.add("oneshot_keys_unused_at_the_end", 1)
		}
	}
}

// boundedRetries checks the bounds on retries and the digest guard.
func (s *storm) boundedRetries() {
	t, fig, srv, watch := s.t, s.fig, s.srv, s.watch
	// Bounded retries: no guest got more writes than its operations
	// allow, every attempt counted.
	perOp := stormEngineRetries * (1 + stormClientRetries)
	for vmid, n := range s.counts.byGuest {
		if n > perOp*s.opsByGuest[vmid] {
			t.Errorf("guest %d got %d writes for %d operations (at most %d each)", vmid, n, s.opsByGuest[vmid], perOp)
		}
	}
	s.counts.addTasks(srv.Tasks())
	for k, n := range s.counts.applied {
		if n > s.opsByKind[k] {
			s.dups++
			t.Errorf("%s: Proxmox carried out %d writes for %d operations", k, n, s.opsByKind[k])
		}
	}
	if s.maxAttempts > stormEngineRetries {
		t.Errorf("an action made %d attempts, the bound is %d", s.maxAttempts, stormEngineRetries)
	}

	watch.mu.Lock()
	for _, v := range watch.violations {
		t.Error(v)
	}
	fig.set("digest_violations", len(watch.violations))
	fig.set("config_writes_accepted", watch.accepted)
	fig.set("config_writes_refused_digest", watch.refused)
	watch.mu.Unlock()
}

// stop closes everything, checks that no goroutine stays behind, and
// records the figures.
func (s *storm) stop() {
	t, fig, ctx, srv, engine, jr, guests, client, writer := s.t, s.fig, s.ctx, s.srv, s.engine, s.jr, s.guests, s.client, s.writer
	// Everything stops, and no goroutine stays behind.
	if err := engine.Queue().Close(ctx); err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	if err := jr.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	checkNoGoroutineLeak(t, s.baseline)

	fig.set("guests", len(guests))
	fig.set("s.rounds", s.rounds)
	fig.set("faults_injected", int(s.faults.Load()))
	fig.set("other_writer_edits", writer.edits)
	fig.set("operations", len(s.ops))
	fig.set("tasks", len(srv.Tasks()))
	fig.set("oneshot_keys", len(s.keys))
	fig.set("requests", s.counts.total)
	fig.set("write_requests", s.counts.writes)
	fig.set("passes_aborted", s.aborted)
	fig.set("max_attempts", s.maxAttempts)
	fig.set("duplicates", s.dups)
	fig.set("lost_updates", s.lost)
}

// randomOneShot makes a one-shot operation on a random one-shot guest. A
// configuration change carries the digest read just before, as a hub
// that read the guest would send.
func randomOneShot(rng *rand.Rand, key string, targets []*stormGuest, c *proxmox.Client, ctx context.Context) reconcile.OneShot {
	g := targets[rng.IntN(len(targets))]
	s := reconcile.OneShot{Key: key, Ref: g.ref}
	switch rng.IntN(4) {
	case 0:
		s.Kind = reconcile.ActionStart
	case 1:
		s.Kind = reconcile.ActionStop
	case 2:
		s.Kind = reconcile.ActionReboot
	default:
		s.Kind = reconcile.ActionSetConfig
		s.Set = map[string]string{"description": "one-shot " + key}
		if cfg, err := c.Config(ctx, g.ref); err == nil && rng.IntN(2) == 0 {
			s.Digest = cfg.Digest
		}
	}
	return s
}

// stormTaskError is how the storm's failing tasks end: a failure that does
// not prove Proxmox did nothing.
const stormTaskError = "start failed: QEMU exited with code 1"

// writePath is the API path of the write s sends.
func writePath(s reconcile.OneShot) string {
	suffix := "status/" + string(s.Kind)
	if s.Kind == reconcile.ActionSetConfig {
		suffix = "config"
	}
	return fmt.Sprintf("/nodes/*/%s/%d/%s", s.Ref.Type, s.Ref.VMID, suffix)
}

// otherRequest returns a request that is not s, under s's key: the same
// guest, and another action.
func otherRequest(s reconcile.OneShot) reconcile.OneShot {
	o := reconcile.OneShot{Key: s.Key, Ref: s.Ref, Kind: reconcile.ActionStart}
	if s.Kind == reconcile.ActionStart {
		o.Kind = reconcile.ActionStop
	}
	return o
}

// hubKey is a one-shot key the hub used: the request it names, and the
// first result Apply returned for each attempt at it.
type hubKey struct {
	shot     reconcile.OneShot
	attempts map[int]reconcile.Result
}

// nothingDone are the classes of failure that prove Proxmox did nothing,
// the only ones that may leave a key unused (see reconcile.OneShot.Key):
// a request the client refused to send, one Proxmox refused before acting
// (400, 401, 403, 501, or a transient refusal that outlasted the retries),
// and a refusal of the guest's.
var nothingDone = []error{
	proxmox.ErrInvalidConfig, proxmox.ErrInvalidArgument, proxmox.ErrInvalidRef,
	proxmox.ErrInvalidParameter, proxmox.ErrUnauthorized, proxmox.ErrForbidden, proxmox.ErrNotImplemented,
	proxmox.ErrTransient,
	proxmox.ErrLocked, proxmox.ErrDigestMismatch, proxmox.ErrNotFound, proxmox.ErrAlreadyRunning, proxmox.ErrNotRunning,
}

// provesNothingDone reports whether err is of a class in nothingDone.
func provesNothingDone(err error) bool {
	for _, class := range nothingDone {
		if errors.Is(err, class) {
			return true
		}
	}
	return false
}

// agrees checks that res, an answer about k's key, answers k's request.
func (k *hubKey) agrees(res reconcile.Result) []string {
	s := k.shot
	if res.Key != s.Key || res.Ref != s.Ref || res.Kind != s.Kind {
		return []string{fmt.Sprintf("key %q names %s on %s, but an answer for it is about key %q, %s on %s", s.Key, s.Kind, s.Ref, res.Key, res.Kind, res.Ref)}
	}
	return nil
}

// add records res, the answer of a call with k's request, and checks it
// against the answers before: the key's at-most-once rule seen from the
// hub. Each attempt is one operation, answered the same every time; only
// an attempt that proved Proxmox did nothing is followed by another; and a
// key is left unused only by a failure of a class that proves it.
func (k *hubKey) add(res reconcile.Result) []string {
	key := k.shot.Key
	problems := k.agrees(res)
	if res.OpID == "" || res.Attempt < 1 || !res.State.Terminal() {
		return append(problems, fmt.Sprintf("key %q: an answer without an error names no finished attempt: %+v", key, res))
	}
	if prev, seen := k.attempts[res.Attempt]; seen {
		switch {
		case res.OpID != prev.OpID:
			problems = append(problems, fmt.Sprintf("key %q ran twice: attempt %d is op %s, then op %s", key, res.Attempt, prev.OpID, res.OpID))
		case !res.Replayed:
			problems = append(problems, fmt.Sprintf("key %q: attempt %d (op %s) ran again, or was not reported as replayed: %+v", key, res.Attempt, res.OpID, res))
		case res.State != prev.State || res.KeyUnused != prev.KeyUnused:
			problems = append(problems, fmt.Sprintf("key %q: attempt %d (op %s) answered %s (key unused %v), then %s (key unused %v)",
				key, res.Attempt, res.OpID, prev.State, prev.KeyUnused, res.State, res.KeyUnused))
		}
		return problems
	}
	k.attempts[res.Attempt] = res
	// A new attempt: every attempt before it must have left the key
	// unused, and it must have too if a later one was seen already (the
	// answers of concurrent calls are recorded in any order).
	for n, r := range k.attempts {
		switch {
		case n < res.Attempt && !r.KeyUnused:
			problems = append(problems, fmt.Sprintf("key %q ran twice: attempt %d (op %s) %s and spent the key, yet attempt %d (op %s) ran",
				key, n, r.OpID, r.State, res.Attempt, res.OpID))
		case n > res.Attempt && !res.KeyUnused:
			problems = append(problems, fmt.Sprintf("key %q ran twice: attempt %d (op %s) %s and spent the key, yet attempt %d (op %s) ran",
				key, res.Attempt, res.OpID, res.State, n, r.OpID))
		}
	}
	if !res.Replayed && res.KeyUnused {
		// A fresh answer carries its failure's class: a key is left
		// unused only by a failure that proves Proxmox did nothing, and
		// a task only by an exit that refused the request (a task that
		// failed for another reason may have acted).
		task := errors.Is(res.Err, proxmox.ErrTaskFailed)
		if res.State != journal.Failed || !provesNothingDone(res.Err) || task && !refusedExit(res.Error) {
			problems = append(problems, fmt.Sprintf("key %q: op %s left the key unused after %s: %v", key, res.OpID, res.State, res.Err))
		}
	}
	return problems
}

// faultTarget is a request a round is expected to make: a guest and the
// end of the path of its write.
type faultTarget struct {
	g      *stormGuest
	suffix string
}

// randomFault returns a fault for one round, or the name of a node to take
// off the network for the round.
func randomFault(rng *rand.Rand, srv *proxmoxtest.Server, w *otherWriter, guests []*stormGuest, targets []faultTarget, fired *atomic.Int64) (proxmoxtest.Fault, string) {
	g := guests[rng.IntN(len(guests))]
	typ := string(g.ref.Type)
	guestPath := func(suffix string) string { return fmt.Sprintf("/nodes/*/%s/%d/%s", typ, g.ref.VMID, suffix) }
	writePaths := []string{guestPath("status/start"), guestPath("status/stop"), guestPath("status/reboot"), guestPath("config")}
	if len(targets) > 0 && rng.IntN(3) != 0 {
		// Aim at a request this round will make.
		tg := targets[rng.IntN(len(targets))]
		g, typ = tg.g, string(tg.g.ref.Type)
		writePaths = []string{guestPath(tg.suffix)}
	}
	readPaths := []string{"/cluster/resources", guestPath("status/current"), guestPath("config"), guestPath("pending"), "/nodes/*/tasks", "/nodes/*/tasks/*/status"}
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	count := func() { fired.Add(1) }
	f := proxmoxtest.Fault{Times: 1 + rng.IntN(3)}
	switch rng.IntN(11) {
	case 0: // 5xx burst on a read
		f.Method, f.Path = "GET", pick(readPaths)
		f.Status = []int{500, 502, 503, 504, 595, 596, 599}[rng.IntN(7)]
	case 1: // 5xx on a write: a proxy's (outcome unknown) or provably not executed
		f.Path = pick(writePaths)
		f.Status = []int{502, 503, 504, 595, 596, 599}[rng.IntN(6)]
	case 2: // the config lock could not be taken: nothing ran
		f.Path = pick(writePaths)
		f.Status, f.Message = 500, fmt.Sprintf("can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout", g.ref.VMID)
	case 3: // latency
		f.Path = pick(append(readPaths, writePaths...))
		f.Delay = time.Duration(1+rng.IntN(10)) * time.Millisecond
		f.Times = 1 + rng.IntN(10)
	case 4: // dropped before handling: nothing happened
		f.Path = pick(append(readPaths, writePaths...))
		f.Drop = proxmoxtest.DropBeforeHandling
	case 5: // dropped after handling: it happened, the answer is lost
		f.Method, f.Path = "", pick(writePaths)
		f.Drop = proxmoxtest.DropAfterHandling
	case 6: // a failing or warning task
		f.Method, f.Path = "POST", pick(writePaths)
		if rng.IntN(3) == 0 {
			f.TaskWarnings = 1
		} else {
			f.TaskError = stormTaskError
		}
	case 7: // a lock appears between our read and our write
		f.Path = pick(writePaths)
		f.Before = func() { _ = srv.SetLock(g.ref, "backup") }
	case 8: // another writer changes a declared option between read and write
		f.Path = guestPath("config")
		f.Method = map[proxmox.GuestType]string{proxmox.QEMU: "POST", proxmox.LXC: "PUT"}[g.ref.Type]
		f.Before = func() { w.edit(g.ref, map[string]string{"description": "raced"}) }
	case 9: // a lock flickers around a status read
		f.Method, f.Path = "GET", guestPath("status/current")
		f.Before = func() { _ = srv.SetLock(g.ref, "snapshot") }
		f.After = func() { _ = srv.SetLock(g.ref, "") }
	default: // a node drops off the network for the round
		return proxmoxtest.Fault{}, []string{"pve2", "pve3"}[rng.IntN(2)]
	}
	before := f.Before
	f.Before = func() {
		count()
		if before != nil {
			before()
		}
	}
	return f, ""
}
