package reconcile_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// arrival returns a fault hook that closes the channel on the first
// request it sees.
func arrival() (func(), <-chan struct{}) {
	ch := make(chan struct{})
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }, ch
}

func inSyncFleet(f *fixture, n int) []proxmox.Ref {
	f.t.Helper()
	var refs []proxmox.Ref
	var ds []reconcile.Desired
	for i := range n {
		ref := qemu(100 + i)
		f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: ref.VMID, Config: map[string]string{"cores": "2"}})
		ds = append(ds, reconcile.Desired{Ref: ref, Config: map[string]string{"cores": "2"}})
		refs = append(refs, ref)
	}
	f.desire(ds...)
	return refs
}

// Status shows the pass in progress, its phase and how far it got, while
// a guest's read is held; afterwards, no pass and the last one's summary.
func TestStatusDuringObserve(t *testing.T) {
	f := newFixture(t, nil, func(c *reconcile.Config) { c.NodeConcurrency = 1 })
	refs := inSyncFleet(f, 6)
	release := make(chan struct{})
	arrived, held := arrival()
	f.srv.Inject(proxmoxtest.Fault{Method: "GET", Path: "/nodes/pve1/qemu/103/pending", Before: arrived, Wait: release})

	if s := f.eng.Status(); s.Pass != nil || s.LastPass != nil || s.Recovered {
		t.Fatalf("a new engine's status: %+v", s)
	}
	done := make(chan error, 1)
	go func() { _, err := f.eng.ReconcileOnce(ctxT(t)); done <- err }()
	<-held
	s := f.eng.Status()
	if s.Pass == nil || s.Pass.Phase != reconcile.PhaseObserve || s.Pass.Total != len(refs) || s.Pass.Done != 3 || s.Pass.Pass != 1 {
		// One worker per node takes the guests in vmid order: 100 to 102
		// are read, 103 is held.
		t.Fatalf("status during observation: pass %+v", s.Pass)
	}
	if !s.Recovered || s.InFlight != 0 || s.Pass.Start.IsZero() || s.Pass.Elapsed < 0 {
		t.Errorf("status during observation: %+v", s)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s = f.eng.Status()
	if s.Pass != nil || s.LastPass == nil {
		t.Fatalf("status after the pass: %+v", s)
	}
	l := s.LastPass
	if l.Pass != 1 || l.Guests != len(refs) || l.Counts[reconcile.GuestInSync] != len(refs) || !l.Converged || l.Err != nil || l.Listed != len(refs) {
		t.Errorf("last pass %+v", l)
	}
	// A copy: changing it changes nothing inside the engine.
	l.Counts[reconcile.GuestFailed] = 99
	if f.eng.Status().LastPass.Counts[reconcile.GuestFailed] != 0 {
		t.Error("Status returned the engine's own map")
	}
}

// While an action's request is held, Status shows the act phase and one
// operation in flight; a targeted pass says it is targeted.
func TestStatusDuringAct(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"cores": "1"}})
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"cores": "2"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning, Config: map[string]string{"cores": "1"}},
		reconcile.Desired{Ref: qemu(101), Config: map[string]string{"cores": "2"}})
	release := make(chan struct{})
	arrived, held := arrival()
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/pve1/qemu/100/status/start", Before: arrived, Wait: release})
	done := make(chan error, 1)
	go func() { _, err := f.eng.ReconcileGuests(ctxT(t), qemu(100), qemu(101)); done <- err }()
	<-held
	s := f.eng.Status()
	if s.Pass == nil || s.Pass.Phase != reconcile.PhaseAct || s.Pass.Done != 0 || s.Pass.Total != 1 || !s.Pass.Targeted {
		t.Fatalf("status while acting: pass %+v", s.Pass)
	}
	if s.InFlight != 1 || s.Unresolved != 0 {
		t.Errorf("status while acting: %d in flight, %d unresolved; want 1 and 0", s.InFlight, s.Unresolved)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s = f.eng.Status()
	if s.InFlight != 0 || s.Pass != nil || s.LastPass.Sent != 1 || s.LastPass.Succeeded != 1 || !s.LastPass.Targeted || s.LastPass.Listed != 0 {
		t.Errorf("status after acting: %+v, last pass %+v", s, s.LastPass)
	}
}

// A pass whose context ends while a guest's read is held still ends every
// phase at done == total, and its done event carries the error.
func TestProgressOfCancelledPass(t *testing.T) {
	var log progressLog
	f := newFixture(t, nil, withProgress(&log), func(c *reconcile.Config) { c.NodeConcurrency = 1 })
	inSyncFleet(f, 4)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	arrived, held := arrival()
	f.srv.Inject(proxmoxtest.Fault{Method: "GET", Path: "/nodes/pve1/qemu/101/pending", Before: arrived, Wait: release})
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { _, err := f.eng.ReconcileOnce(ctx); done <- err }()
	<-held
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("pass error %v", err)
	}
	by := checkProgress(t, log.take())
	if d := by[reconcile.PhaseDone][0]; !errors.Is(d.Err, context.Canceled) {
		t.Errorf("done event %+v", d)
	}
	if ob := by[reconcile.PhaseObserve]; ob[len(ob)-1].Total != 4 {
		t.Errorf("observe events %+v", ob)
	}
	s := f.eng.Status()
	if s.LastError == nil || s.LastError.Source != "pass" || !errors.Is(s.LastError.Err, context.Canceled) || s.Pass != nil {
		t.Errorf("status %+v", s)
	}
}

// An operation left in flight by a crash is counted unresolved by the
// engine that left it; a new engine on the same journal knows nothing of
// it until it recovers, then counts what recovery could not resolve, and
// nothing once a later recovery resolves it.
func TestStatusUnresolvedAcrossRestart(t *testing.T) {
	f := newFixture(t, nil)
	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"cores": "2"}})
	f.desire(reconcile.Desired{Ref: qemu(100), Power: reconcile.PowerRunning})
	first := f.newEngine(f.j)
	rep, err := first.ReconcileOnce(crashAt(t, checkpoint.AfterTaskRecord))
	if err != nil || outcome(rep, qemu(100)).Outcome != reconcile.GuestInterrupted {
		t.Fatalf("crashing pass: %v, %+v", err, rep.Guests)
	}
	if s := first.Status(); s.Unresolved != 1 || s.InFlight != 0 || !s.Recovered {
		t.Errorf("the crashed engine: %d unresolved, %d in flight, recovered %v; want 1, 0, true", s.Unresolved, s.InFlight, s.Recovered)
	}

	second := f.newEngine(f.j)
	h := second.HealthHandler()
	if s := second.Status(); s.Recovered || s.Unresolved != 0 || s.LastError != nil {
		t.Errorf("a new engine before recovery: %+v", s)
	}
	if code, _ := health(t, h, "GET"); code != http.StatusServiceUnavailable {
		t.Errorf("health before recovery: %d", code)
	}
	// The task's node does not answer: the operation stays unresolved.
	f.srv.Inject(proxmoxtest.Fault{Method: "GET", Path: "/nodes/pve1/tasks/*/status", Status: 595})
	if _, err := second.Recover(ctxT(t)); !errors.Is(err, reconcile.ErrUnresolved) {
		t.Fatalf("Recover with the node away: %v", err)
	}
	s := second.Status()
	if !s.Recovered || s.Unresolved != 1 || s.LastError == nil || s.LastError.Source != "recover" || !errors.Is(s.LastError.Err, reconcile.ErrUnresolved) {
		t.Errorf("after a recovery that left one unresolved: %+v (last error %+v)", s, s.LastError)
	}
	if code, body := health(t, h, "GET"); code != http.StatusOK || body["status"].(map[string]any)["unresolved"] != 1.0 {
		t.Errorf("health with one unresolved: %d %v; want 200 (ready, the body tells)", code, body)
	}
	f.srv.ClearFaults()
	if _, err := second.Recover(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if s := second.Status(); s.Unresolved != 0 || !s.Recovered {
		t.Errorf("after the recovery that resolved it: %+v", s)
	}
	// The crashed engine's own next pass recovers too.
	if _, err := first.ReconcileOnce(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if s := first.Status(); s.Unresolved != 0 {
		t.Errorf("the crashed engine after its next pass: %d unresolved", s.Unresolved)
	}
}

// A pass that cannot act is the last error, and the last pass, with its
// time; the health stays 200.
func TestStatusLastError(t *testing.T) {
	f := newFixture(t, nil)
	inSyncFleet(f, 2)
	f.srv.Inject(proxmoxtest.Fault{Method: "GET", Path: "/cluster/resources", Status: 403, Times: 1})
	_, err := f.eng.ReconcileOnce(ctxT(t))
	if !errors.Is(err, reconcile.ErrPassAborted) {
		t.Fatalf("pass error %v", err)
	}
	s := f.eng.Status()
	if s.LastError == nil || s.LastError.Source != "pass" || !errors.Is(s.LastError.Err, reconcile.ErrPassAborted) || s.LastError.At.IsZero() {
		t.Fatalf("last error %+v", s.LastError)
	}
	if s.LastPass == nil || !errors.Is(s.LastPass.Err, reconcile.ErrPassAborted) || s.LastPass.Converged {
		t.Errorf("last pass %+v", s.LastPass)
	}
	code, body := health(t, f.eng.HealthHandler(), "GET")
	st := body["status"].(map[string]any)
	if code != http.StatusOK || st["last_error"].(map[string]any)["source"] != "pass" || st["last_pass"].(map[string]any)["error"] == nil {
		t.Errorf("health after a failed pass: %d %v", code, body)
	}
	// A good pass replaces the last pass; the last error stays, older.
	f.pass()
	s2 := f.eng.Status()
	if s2.LastPass.Err != nil || s2.LastPass.Pass != 2 || s2.LastError == nil || s2.LastError.At.After(s2.LastPass.Start) {
		t.Errorf("after a good pass: last pass %+v, last error %+v", s2.LastPass, s2.LastError)
	}
}

// health asks h with method and returns the code and the decoded body.
func health(t *testing.T, h http.Handler, method string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, "/healthz", nil))
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode == http.StatusMethodNotAllowed || method == "HEAD" {
		return res.StatusCode, nil
	}
	if got := res.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("content type %q", got)
	}
	if got := res.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("cache control %q", got)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("health body %q: %v", body, err)
	}
	if ready := res.StatusCode == http.StatusOK; m["ready"] != ready {
		t.Errorf("code %d with ready %v", res.StatusCode, m["ready"])
	}
	return res.StatusCode, m
}

// holdJournal holds InFlight, which every recovery reads first, until
// released: a recovery that has not completed, without sleeping.
type holdJournal struct {
	*journal.MemoryJournal
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHoldJournal() *holdJournal {
	return &holdJournal{MemoryJournal: journal.NewMemory(), entered: make(chan struct{}), release: make(chan struct{})}
}

func (j *holdJournal) InFlight(ctx context.Context) ([]journal.Entry, error) {
	j.once.Do(func() { close(j.entered) })
	select {
	case <-j.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return j.MemoryJournal.InFlight(ctx)
}

// The health handler answers 503 while Run's recovery is held, 200 once it
// completed, 503 after Shutdown; GET and HEAD only.
func TestHealthHandler(t *testing.T) {
	f := newFixture(t, nil)
	inSyncFleet(f, 2)
	j := newHoldJournal()
	reports := make(chan reconcile.Report, 16)
	e := f.newEngine(j, func(c *reconcile.Config) {
		c.OnReport = func(r reconcile.Report) { reports <- r }
	})
	h := e.HealthHandler()
	run := make(chan error, 1)
	go func() { run <- e.Run(context.Background()) }()
	<-j.entered
	code, body := health(t, h, "GET")
	if code != http.StatusServiceUnavailable || body["reason"] == nil || body["status"].(map[string]any)["recovered"] != false {
		t.Fatalf("health during recovery: %d %v", code, body)
	}
	close(j.release)
	<-reports // the first pass ran, so recovery completed
	code, body = health(t, h, "GET")
	st := body["status"].(map[string]any)
	if code != http.StatusOK || body["reason"] != nil || st["recovered"] != true {
		t.Fatalf("health after recovery: %d %v", code, body)
	}
	for _, member := range []string{"at", "recovered", "recovered_at", "draining", "shut_down", "in_flight", "unresolved", "last_pass"} {
		if _, ok := st[member]; !ok {
			t.Errorf("status has no %q: %v", member, st)
		}
	}
	lp := st["last_pass"].(map[string]any)
	for _, member := range []string{"pass", "start", "duration_seconds", "listed", "observed", "guests", "counts", "actions_sent", "actions_succeeded", "converged"} {
		if _, ok := lp[member]; !ok {
			t.Errorf("last pass has no %q: %v", member, lp)
		}
	}
	if code, _ := health(t, h, "HEAD"); code != http.StatusOK {
		t.Errorf("HEAD: %d", code)
	}
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(m, "/healthz", nil))
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d, Allow %q", m, rec.Code, rec.Header().Get("Allow"))
		}
	}
	// Draining, the first half of a stop: not ready any more.
	if err := e.Drain(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	code, body = health(t, h, "GET")
	if code != http.StatusServiceUnavailable || body["status"].(map[string]any)["draining"] != true || body["status"].(map[string]any)["shut_down"] != false {
		t.Errorf("health while draining: %d %v", code, body)
	}
	if err := e.Shutdown(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-run; err != nil {
		t.Fatalf("Run after Shutdown: %v", err)
	}
	code, body = health(t, h, "GET")
	if code != http.StatusServiceUnavailable || body["status"].(map[string]any)["shut_down"] != true {
		t.Errorf("health after Shutdown: %d %v", code, body)
	}
}

// HEAD answers with the headers and no body.
func TestHealthHeadHasNoBody(t *testing.T) {
	f := newFixture(t, nil)
	rec := httptest.NewRecorder()
	f.eng.HealthHandler().ServeHTTP(rec, httptest.NewRequest("HEAD", "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") == "" {
		t.Errorf("HEAD before recovery: %d, body %q, length %q", rec.Code, rec.Body.String(), rec.Header().Get("Content-Length"))
	}
}

// A dry-run engine without a journal has nothing to recover: it is ready
// from the start, and Run does not try to recover.
func TestDryRunIsReady(t *testing.T) {
	f := newFixture(t, nil)
	inSyncFleet(f, 1)
	reports := make(chan reconcile.Report, 4)
	e := f.newEngine(nil, func(c *reconcile.Config) {
		c.DryRun = true
		c.OnReport = func(r reconcile.Report) { reports <- r }
	})
	if code, _ := health(t, e.HealthHandler(), "GET"); code != http.StatusOK {
		t.Errorf("dry run: health %d", code)
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	run := make(chan error, 1)
	go func() { run <- e.Run(ctx) }()
	<-reports
	cancel()
	<-run
	if s := e.Status(); s.LastError != nil || s.LastPass == nil || !s.LastPass.DryRun {
		t.Errorf("dry run status %+v", s)
	}
}

// Status and the health handler may be called at any time, from any
// goroutine, while Run runs passes and actions: run under -race.
func TestStatusConcurrentWithRun(t *testing.T) {
	f := newFixture(t, nil)
	for i := range 6 {
		f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100 + i, Config: map[string]string{"cores": "1"}})
	}
	var ds []reconcile.Desired
	for i := range 6 {
		ds = append(ds, reconcile.Desired{Ref: qemu(100 + i), Power: reconcile.PowerRunning, Config: map[string]string{"cores": "2"}})
	}
	f.desire(ds...)
	reports := make(chan reconcile.Report, 64)
	var e *reconcile.Engine
	e = f.newEngine(f.j, func(c *reconcile.Config) {
		c.OnReport = func(r reconcile.Report) { reports <- r }
		// OnProgress may ask for the status: it must not deadlock.
		c.OnProgress = func(reconcile.Progress) { _ = e.Status() }
	})
	h := e.HealthHandler()
	ctx, cancel := context.WithCancel(ctxT(t))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			last := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := e.Status()
				if s.Pass != nil && (s.Pass.Done > s.Pass.Total || s.Pass.Pass < last) {
					t.Errorf("status %+v", s.Pass)
				}
				if s.Pass != nil {
					last = s.Pass.Pass
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
				_, _ = json.Marshal(s)
			}
		})
	}
	run := make(chan error, 1)
	go func() { run <- e.Run(ctx) }()
	for range 3 {
		<-reports
		e.Trigger()
	}
	close(stop)
	wg.Wait()
	cancel()
	<-run
	if s := e.Status(); s.LastPass == nil || s.LastPass.Pass < 3 {
		t.Errorf("status after three passes: %+v", s)
	}
}
