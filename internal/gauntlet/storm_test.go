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
// ran accounted for by exactly one journaled operation, every change the
// other writer made to options we do not manage still in place, no write
// of ours accepted against a configuration we had not read, retries within
// their bounds, and no goroutine left behind.

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
	read       map[int]map[string]bool // digests returned by Config, by vmid
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
	// applied counts the writes Proxmox carried out (answered 200, or
	// handled and then dropped), per vmid and operation kind: each
	// operation may be carried out once.
	applied map[string]int
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
		kind := "set_config"
		if parts[5] == "status" && len(parts) > 6 {
			kind = parts[6]
		}
		if r.Status == 200 || r.Dropped && r.Handled {
			c.applied[fmt.Sprintf("%d/%s", vmid, kind)]++
		}
	}
}

func TestFaultStorm(t *testing.T) {
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
	defer srv.Close()

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
	declare := func() []reconcile.Desired {
		var ds []reconcile.Desired
		for _, g := range declared {
			ds = append(ds, g.desired())
		}
		return ds
	}
	prov, err := reconcile.NewStaticProvider(declare())
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

	counts := requestCounts{byGuest: map[int]int{}, applied: map[string]int{}}
	var faults atomic.Int64 // faults that fired
	var handles []*proxmoxtest.FaultHandle
	keys := map[string]reconcile.Result{} // one-shot keys and their first result
	var keyOrder []string
	var aborted, maxAttempts int
	rounds := sized(30, 150)

	for round := 1; round <= rounds; round++ {
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
		if err := prov.Set(declare()); err != nil {
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
			f, node := randomFault(rng, srv, writer, guests, targets, &faults)
			if node != "" {
				offline = node
				continue
			}
			handles = append(handles, srv.Inject(f))
		}
		if offline != "" {
			if err := srv.SetNodeOnline(offline, false); err != nil {
				t.Fatal(err)
			}
			faults.Add(1)
		}
		// Last, so that the round's faults on reads match first.
		handles = append(handles, srv.Inject(pacer))

		// One-shot operations arrive during the pass, new keys and
		// repeated ones.
		var wg sync.WaitGroup
		var shotMu sync.Mutex
		for n := range rng.IntN(4) {
			key := fmt.Sprintf("hub/%d/%d", round, n)
			shotMu.Lock()
			if len(keyOrder) > 0 && rng.IntN(3) == 0 {
				key = keyOrder[rng.IntN(len(keyOrder))] // the hub retries an old request
			}
			shotMu.Unlock()
			shot := randomOneShot(rng, key, oneShots, client, ctx)
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := engine.Apply(ctx, shot)
				shotMu.Lock()
				defer shotMu.Unlock()
				fig.add("oneshot_calls", 1)
				if err != nil {
					fig.add("oneshot_errors", 1)
					return
				}
				if first, seen := keys[key]; seen {
					if res.OpID != first.OpID {
						t.Errorf("key %q ran twice: op %s, then op %s", key, first.OpID, res.OpID)
					}
					if !res.Replayed {
						t.Errorf("key %q: a repeated request was not replayed: %+v", key, res)
					}
					fig.add("oneshot_replays", 1)
					return
				}
				keys[key] = res
				keyOrder = append(keyOrder, key)
				if res.Replayed {
					fig.add("oneshot_replays", 1)
				}
			}()
		}

		rep, err := engine.ReconcileOnce(ctx)
		wg.Wait()
		if err != nil {
			if !errors.Is(err, reconcile.ErrPassAborted) || ctx.Err() != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			aborted++
		}
		for _, g := range rep.Guests {
			fig.add("guest_"+string(g.Outcome), 1)
			for _, a := range g.Actions {
				fig.add("action_"+string(a.Outcome), 1)
				maxAttempts = max(maxAttempts, a.Attempts)
			}
		}

		// The round's faults end with it.
		for _, h := range handles {
			h.Remove()
		}
		handles = handles[:0]
		if offline != "" {
			if err := srv.SetNodeOnline(offline, true); err != nil {
				t.Fatal(err)
			}
		}
		counts.add(srv.Requests())
		srv.ResetRequests()
	}

	// The faults stop: no more writer, faults or locks.
	close(stopWriter)
	<-writerDone
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
			t.Fatalf("not converged after %d passes once the faults stopped:\n%s", passes, rep)
		}
	}
	fig.set("convergence_passes", passes)
	if inflight, err := jr.InFlight(ctx); err != nil || len(inflight) != 0 {
		t.Fatalf("in flight after convergence: %v %+v", err, inflight)
	}
	// The hub asks again for every request it made: each is answered
	// from the journal, and nothing runs.
	tasksBefore := len(srv.Tasks())
	for key, first := range keys {
		res, err := engine.Apply(ctx, reconcile.OneShot{Key: key, Ref: oneShots[0].ref, Kind: reconcile.ActionStart})
		if err != nil || !res.Replayed || res.OpID != first.OpID || !res.State.Terminal() {
			t.Errorf("key %q asked again: %+v %v, first %+v", key, res, err, first)
		}
	}
	if err := srv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Tasks()) - tasksBefore; n != 0 {
		t.Errorf("asking again for used keys started %d tasks", n)
	}
	counts.add(srv.Requests())

	// The declared state holds, and nothing the other writer did to
	// options we do not manage was lost.
	lost := 0
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
				lost++
				t.Errorf("lost update: %s %s is %q, the other writer left %q", g.ref, k, got, v)
			}
		}
	}
	if len(writer.errors) > 0 {
		t.Errorf("the other writer failed %d times, first: %s", len(writer.errors), writer.errors[0])
	}

	// Every task is one operation's, and every operation ran at most once.
	ops, err := opsOf(ctx, jr)
	if err != nil {
		t.Fatal(err)
	}
	isOurs := func(proxmox.Ref) bool { return true }
	dups := 0
	for _, p := range taskClaims(srv.Tasks(), ops, isOurs) {
		dups++
		t.Error(p)
	}
	for _, p := range outcomeTruth(srv.Tasks(), ops) {
		t.Error(p)
		fig.add("untrue_outcomes", 1)
	}
	opsByGuest := map[int]int{}
	opsByKind := map[string]int{}
	for _, op := range ops {
		opsByGuest[op.VMID]++
		opsByKind[fmt.Sprintf("%d/%s", op.VMID, op.Kind)]++
		// Every operation that succeeded ran a task, except those that
		// Proxmox answers synchronously: an LXC config change, and an LXC
		// start or stop that finds the container already in that state
		// (which the engine counts as done).
		lxcSync := op.Params["type"] == "lxc" && (op.Kind == "set_config" || op.Kind == "start" || op.Kind == "stop")
		if op.State == journal.Succeeded && op.UPID == "" && !lxcSync {
			t.Errorf("operation %s (%s on %d) is recorded as succeeded but never had a task", op.OpID, op.Kind, op.VMID)
		}
	}
	for key, first := range keys {
		en, ok, err := jr.LatestByKey(ctx, key)
		if err != nil || !ok || en.OpID != first.OpID || !en.State.Terminal() {
			t.Errorf("key %q: journal %+v %v %v, first result %+v", key, en, ok, err, first)
		}
	}

	// Bounded retries: no guest got more writes than its operations
	// allow, every attempt counted.
	perOp := stormEngineRetries * (1 + stormClientRetries)
	for vmid, n := range counts.byGuest {
		if n > perOp*opsByGuest[vmid] {
			t.Errorf("guest %d got %d writes for %d operations (at most %d each)", vmid, n, opsByGuest[vmid], perOp)
		}
	}
	for k, n := range counts.applied {
		if n > opsByKind[k] {
			dups++
			t.Errorf("%s: Proxmox carried out %d writes for %d operations", k, n, opsByKind[k])
		}
	}
	if maxAttempts > stormEngineRetries {
		t.Errorf("an action made %d attempts, the bound is %d", maxAttempts, stormEngineRetries)
	}

	watch.mu.Lock()
	for _, v := range watch.violations {
		t.Error(v)
	}
	fig.set("digest_violations", len(watch.violations))
	fig.set("config_writes_accepted", watch.accepted)
	fig.set("config_writes_refused_digest", watch.refused)
	watch.mu.Unlock()

	// Everything stops, and no goroutine stays behind.
	if err := engine.Queue().Close(ctx); err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	if err := jr.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	checkNoGoroutineLeak(t, baseline)

	fig.set("guests", len(guests))
	fig.set("rounds", rounds)
	fig.set("faults_injected", int(faults.Load()))
	fig.set("other_writer_edits", writer.edits)
	fig.set("operations", len(ops))
	fig.set("tasks", len(srv.Tasks()))
	fig.set("oneshot_keys", len(keys))
	fig.set("requests", counts.total)
	fig.set("write_requests", counts.writes)
	fig.set("passes_aborted", aborted)
	fig.set("max_attempts", maxAttempts)
	fig.set("duplicates", dups)
	fig.set("lost_updates", lost)
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
			f.TaskError = "start failed: QEMU exited with code 1"
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
