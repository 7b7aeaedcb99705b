package otel_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/guestward/guestward/journal"
	gwotel "github.com/guestward/guestward/otel"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/queue"
	"github.com/guestward/guestward/reconcile"
)

// setup is a meter provider with a manual reader, a span recorder, and
// the instruments on them.
type setup struct {
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	ins    *gwotel.Instruments
}

func newSetup(t *testing.T, opts ...gwotel.Option) *setup {
	t.Helper()
	s := &setup{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder()}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.spans))
	t.Cleanup(func() {
		_ = mp.Shutdown(context.Background())
		_ = tp.Shutdown(context.Background())
	})
	ins, err := gwotel.New(mp, append([]gwotel.Option{gwotel.WithTracerProvider(tp)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ins.Close() })
	s.ins = ins
	return s
}

// collect returns the current metrics by name.
func (s *setup) collect(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// key renders an attribute set as "k=v,k=v", sorted by key.
func key(set attribute.Set) string {
	var parts []string
	for _, kv := range set.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.String())
	}
	return strings.Join(parts, ",")
}

// counts returns a metric's values by attributes: the sum of a counter,
// the value of a gauge, the count of a histogram.
func counts(t *testing.T, m metricdata.Metrics) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out[key(p.Attributes)] = p.Value
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			out[key(p.Attributes)] = p.Value
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out[key(p.Attributes)] = int64(p.Count)
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			out[key(p.Attributes)] = int64(p.Count)
		}
	default:
		t.Fatalf("%s: unexpected data %T", m.Name, m.Data)
	}
	return out
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func qemu(vmid int) proxmox.Ref { return proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: vmid} }

// A pass over a fake cluster, with every seam wired: each metric the
// package documents shows what happened.
func TestInstrumentsFromEngine(t *testing.T) {
	s := newSetup(t)
	srv := proxmoxtest.Start(t, proxmoxtest.WithNodes("pve1"))
	for _, g := range []proxmoxtest.GuestSpec{
		{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "2048"}},
		{Type: proxmox.QEMU, VMID: 101},
		{Type: proxmox.QEMU, VMID: 102, Lock: "backup"},
	} {
		g.Node = "pve1"
		if err := srv.AddGuest(g); err != nil {
			t.Fatal(err)
		}
	}
	srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/101/status/start", Times: 1, TaskError: "boom"})
	id, secret := srv.APIToken()
	client, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(id, secret),
		proxmox.WithTaskPolling(time.Millisecond, 5*time.Millisecond), s.ins.ProxmoxOption())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.CloseIdleConnections)
	q := queue.New[int](s.ins.QueueOption())
	t.Cleanup(func() { q.Close(context.Background()) })
	prov, err := reconcile.NewStaticProvider([]reconcile.Desired{
		{Ref: qemu(100), Config: map[string]string{"memory": "4096"}},
		{Ref: qemu(101), Power: reconcile.PowerRunning},
		{Ref: qemu(102), Power: reconcile.PowerRunning},
	})
	if err != nil {
		t.Fatal(err)
	}
	mem := journal.NewMemory()
	cfg := reconcile.Config{Proxmox: client, Journal: s.ins.Journal(mem), Provider: prov, Queue: q}
	s.ins.Wire(&cfg)
	eng, err := reconcile.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := eng.ReconcileOnce(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s.ins.OnReport(rep)
	m := s.collect(t)

	wantCounts := []struct {
		metric string
		want   map[string]int64
		why    string
	}{
		{"guestward.actions", map[string]int64{"kind=set_config,outcome=succeeded": 1, "kind=start,outcome=failed": 1},
			"the drifted guest was changed, the start's task failed"},
		{"guestward.pass.guests", map[string]int64{"outcome=changed,skip_reason=": 1, "outcome=failed,skip_reason=": 1, "outcome=skipped,skip_reason=locked": 1},
			"one guest per outcome, the locked one with its reason"},
		{"guestward.guests", map[string]int64{"outcome=changed,skip_reason=": 1, "outcome=failed,skip_reason=": 1, "outcome=skipped,skip_reason=locked": 1},
			"a full pass sets the gauge"},
		{"guestward.task.wait", map[string]int64{"kind=set_config": 1, "kind=start": 1},
			"both operations ran a QEMU task"},
		{"guestward.journal.append.duration", map[string]int64{"state=started": 2, "state=task_running": 2, "state=succeeded": 1, "state=failed": 1},
			"each operation's intent, task and outcome"},
		{"guestward.journal.append.size", map[string]int64{"state=started": 2, "state=task_running": 2, "state=succeeded": 1, "state=failed": 1},
			"every record that was written has a size"},
		{"guestward.pass.duration", map[string]int64{"": 1}, "one pass"},
		{"guestward.pass.phase.duration", map[string]int64{"phase=recover": 1, "phase=desired": 1, "phase=list": 1, "phase=observe": 1, "phase=plan": 1, "phase=act": 1},
			"a full pass takes every phase"},
		{"guestward.queue.wait", map[string]int64{"outcome=ran": 2}, "one job per acting guest"},
		{"guestward.operations.in_flight", map[string]int64{"": 0}, "nothing is in flight after the pass"},
	}
	for _, w := range wantCounts {
		got, ok := m[w.metric]
		if !ok {
			t.Errorf("%s: not recorded (%s)", w.metric, w.why)
			continue
		}
		c := counts(t, got)
		if fmt.Sprint(c) != fmt.Sprint(w.want) {
			t.Errorf("%s: got %v, want %v (%s)", w.metric, c, w.want, w.why)
		}
	}

	api := counts(t, m["guestward.api.request.duration"])
	if sum(api) == 0 {
		t.Fatal("no API request recorded")
	}
	for k := range api {
		for _, hidden := range []string{"UPID", "100", "101", secret, id} {
			if strings.Contains(k, hidden) {
				t.Errorf("API request attributes show %q: %s", hidden, k)
			}
		}
	}
	start := "http.request.method=POST,http.response.status_code=200,node=pve1,url.template=/nodes/{node}/qemu/{vmid}/status/start"
	if api[start] != 1 {
		t.Errorf("the start request: got %d, want 1 attempt recorded under %s; all: %v", api[start], start, api)
	}

	// Spans: the pass with its phases, and one per operation.
	var pass sdktrace.ReadOnlySpan
	phases, actions := map[string]sdktrace.ReadOnlySpan{}, map[string]sdktrace.ReadOnlySpan{}
	for _, sp := range s.spans.Ended() {
		switch {
		case sp.Name() == "guestward.pass":
			pass = sp
		case strings.HasPrefix(sp.Name(), "guestward.pass."):
			phases[strings.TrimPrefix(sp.Name(), "guestward.pass.")] = sp
		case sp.Name() == "guestward.action":
			for _, a := range sp.Attributes() {
				if a.Key == "guestward.kind" {
					actions[a.Value.AsString()] = sp
				}
			}
		}
	}
	if pass == nil || len(phases) != 6 || len(actions) != 2 {
		t.Fatalf("spans: pass %v, phases %d, actions %d", pass != nil, len(phases), len(actions))
	}
	for name, ph := range phases {
		if ph.Parent().SpanID() != pass.SpanContext().SpanID() || ph.StartTime().Before(pass.StartTime()) || ph.EndTime().After(pass.EndTime()) {
			t.Errorf("phase %s is not inside the pass span", name)
		}
	}
	if phases["list"].EndTime() != phases["observe"].StartTime() {
		t.Errorf("phases do not follow each other: list ends %v, observe starts %v", phases["list"].EndTime(), phases["observe"].StartTime())
	}
	if st := actions["start"].Status(); st.Code != codes.Error || !strings.Contains(st.Description, "boom") {
		t.Errorf("failed start span status %+v", st)
	}
	if actions["set_config"].Status().Code == codes.Error || len(actions["set_config"].Events()) != 1 {
		t.Errorf("set_config span: status %+v, events %v", actions["set_config"].Status(), actions["set_config"].Events())
	}
}

// The guests gauge follows full passes: an outcome no longer reported
// drops to zero, and a targeted pass leaves the gauge alone.
func TestGuestsGauge(t *testing.T) {
	s := newSetup(t)
	start := time.Now()
	s.ins.OnReport(reconcile.Report{Start: start, Listed: 3, Guests: []reconcile.GuestReport{
		{Ref: qemu(100), Outcome: reconcile.GuestInSync},
		{Ref: qemu(101), Outcome: reconcile.GuestSkipped, Reason: reconcile.SkipLocked},
	}})
	s.ins.OnReport(reconcile.Report{Start: start, Listed: 3, Guests: []reconcile.GuestReport{
		{Ref: qemu(100), Outcome: reconcile.GuestInSync},
		{Ref: qemu(101), Outcome: reconcile.GuestInSync},
	}})
	// A targeted pass (it lists nothing) over one guest.
	s.ins.OnReport(reconcile.Report{Start: start, Guests: []reconcile.GuestReport{
		{Ref: qemu(101), Outcome: reconcile.GuestSkipped, Reason: reconcile.SkipPending},
	}})
	m := s.collect(t)
	got := counts(t, m["guestward.guests"])
	want := map[string]int64{"outcome=in_sync,skip_reason=": 2, "outcome=skipped,skip_reason=locked": 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("guests gauge %v, want %v", got, want)
	}
	got = counts(t, m["guestward.pass.guests"])
	want = map[string]int64{"outcome=in_sync,skip_reason=": 3, "outcome=skipped,skip_reason=locked": 1, "outcome=skipped,skip_reason=pending": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pass guests %v, want %v", got, want)
	}
	// No phase was timed: none is recorded.
	if _, ok := m["guestward.pass.phase.duration"]; ok {
		if n := sum(counts(t, m["guestward.pass.phase.duration"])); n != 0 {
			t.Errorf("%d phase durations recorded for passes without phases", n)
		}
	}
}

func TestInFlight(t *testing.T) {
	inFlight := func(s *setup) int64 {
		t.Helper()
		return counts(t, s.collect(t)["guestward.operations.in_flight"])[""]
	}
	s := newSetup(t)
	at := time.Now()
	ev := func(op, phase string) reconcile.Event {
		return reconcile.Event{Ref: qemu(100), Kind: reconcile.ActionStart, OpID: op, Phase: phase, At: at, Outcome: reconcile.OutcomeFailed}
	}
	steps := []struct {
		ev   reconcile.Event
		want int64
		why  string
	}{
		{ev("a", "failed"), 0, "an operation that failed before its intent never started: no negative count"},
		{ev("b", "start"), 1, "started"},
		{ev("b", "start"), 1, "a repeated start counts once"},
		{ev("c", "start"), 2, "two in flight"},
		{ev("b", "task"), 2, "a task changes nothing"},
		{ev("b", "done"), 1, "b ended"},
		{ev("b", "done"), 1, "a repeated end counts once"},
		{ev("c", "failed"), 0, "c ended"},
	}
	for n, st := range steps {
		s.ins.OnEvent(st.ev)
		if got := inFlight(s); got != st.want {
			t.Fatalf("step %d (%s %s): in flight %d, want %d (%s)", n, st.ev.OpID, st.ev.Phase, got, st.want, st.why)
		}
	}
	if got := sum(counts(t, s.collect(t)["guestward.actions"])); got != 4 {
		t.Errorf("%d actions counted for 4 last events", got)
	}

	// With WithStatus, the engine's own view wins.
	s = newSetup(t, gwotel.WithStatus(func() (int, int) { return 3, 2 }))
	s.ins.OnEvent(ev("x", "start"))
	m := s.collect(t)
	if got, un := counts(t, m["guestward.operations.in_flight"])[""], counts(t, m["guestward.operations.unresolved"])[""]; got != 3 || un != 2 {
		t.Errorf("with WithStatus: in flight %d, unresolved %d; want 3, 2", got, un)
	}
}

func TestOnRequestAndAppendAttributes(t *testing.T) {
	s := newSetup(t)
	s.ins.OnRequest(proxmox.RequestInfo{Method: "GET", Path: "/cluster/resources", Status: 503, Attempt: 1, Retried: true, Duration: time.Millisecond})
	s.ins.OnRequest(proxmox.RequestInfo{Method: "POST", Path: "/nodes/{node}/qemu/{vmid}/status/start", Node: "pve1", ErrorClass: "network", Duration: time.Millisecond})
	s.ins.OnAppend(journal.AppendInfo{State: journal.Failed, Size: 40, Err: fmt.Errorf("append: %w", journal.ErrTerminal)})
	s.ins.OnAppend(journal.AppendInfo{State: journal.Started, Size: 100, Err: errors.New("disk on fire")})
	m := s.collect(t)
	api := counts(t, m["guestward.api.request.duration"])
	want := map[string]int64{
		"error.type=503,http.request.method=GET,http.response.status_code=503,node=,url.template=/cluster/resources": 1,
		"error.type=network,http.request.method=POST,node=pve1,url.template=/nodes/{node}/qemu/{vmid}/status/start":  1,
	}
	if fmt.Sprint(api) != fmt.Sprint(want) {
		t.Errorf("requests %v\nwant %v", api, want)
	}
	app := counts(t, m["guestward.journal.append.duration"])
	wantApp := map[string]int64{"error.type=other,state=started": 1, "error.type=terminal,state=failed": 1}
	if fmt.Sprint(app) != fmt.Sprint(wantApp) {
		t.Errorf("appends %v, want %v", app, wantApp)
	}
	if _, ok := m["guestward.journal.append.size"]; ok && sum(counts(t, m["guestward.journal.append.size"])) != 0 {
		t.Errorf("a refused record's size was recorded")
	}
}

func TestWireKeepsExistingHooks(t *testing.T) {
	s := newSetup(t)
	var reports, events int
	cfg := reconcile.Config{OnReport: func(reconcile.Report) { reports++ }, OnEvent: func(reconcile.Event) { events++ }}
	s.ins.Wire(&cfg)
	cfg.OnReport(reconcile.Report{Start: time.Now()})
	cfg.OnEvent(reconcile.Event{OpID: "a", Phase: "done", Kind: reconcile.ActionStop, Outcome: reconcile.OutcomeSucceeded, At: time.Now()})
	if reports != 1 || events != 1 {
		t.Errorf("the hooks already there ran %d and %d times", reports, events)
	}
	m := s.collect(t)
	if sum(counts(t, m["guestward.pass.duration"])) != 1 || sum(counts(t, m["guestward.actions"])) != 1 {
		t.Errorf("the instruments did not see the report and the event")
	}
}

func TestNewRefusesNilProvider(t *testing.T) {
	if _, err := gwotel.New(nil); !errors.Is(err, gwotel.ErrNoMeterProvider) {
		t.Fatalf("New(nil): %v", err)
	}
}

// Past the bound on kept attribute sets, requests are still recorded, each
// under its own attributes.
func TestOnRequestManyKeys(t *testing.T) {
	s := newSetup(t)
	const n = 1500
	for k := range n {
		s.ins.OnRequest(proxmox.RequestInfo{Method: "GET", Path: "/nodes/{node}/tasks", Node: fmt.Sprintf("n%d", k), Status: 200, Duration: time.Millisecond})
	}
	s.ins.OnRequest(proxmox.RequestInfo{Method: "GET", Path: "/nodes/{node}/tasks", Node: "n1499", Status: 200, Duration: time.Millisecond})
	got := counts(t, s.collect(t)["guestward.api.request.duration"])
	if len(got) != n || sum(got) != n+1 || got["http.request.method=GET,http.response.status_code=200,node=n1499,url.template=/nodes/{node}/tasks"] != 2 {
		t.Errorf("%d series, %d requests; want %d and %d", len(got), sum(got), n, n+1)
	}
}

// Two engines' instruments on one MeterProvider, told apart by
// WithAttributes: every metric keeps their series apart.
func TestWithAttributesSeparatesEngines(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	var ins []*gwotel.Instruments
	for _, c := range []string{"a", "b"} {
		i, err := gwotel.New(mp, gwotel.WithTracerProvider(tp), gwotel.WithAttributes(attribute.String("cluster", c)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { i.Close() })
		ins = append(ins, i)
	}
	now := time.Now()
	for n, i := range ins {
		for range n + 1 {
			i.OnRequest(proxmox.RequestInfo{Method: "GET", Path: "/cluster/resources", Status: 200, Duration: time.Millisecond})
			i.OnEvent(reconcile.Event{OpID: fmt.Sprint("op", n), Kind: reconcile.ActionStart, Phase: "start", At: now})
			i.OnQueue(queue.Event{Outcome: queue.Ran})
			i.OnAppend(journal.AppendInfo{State: journal.Started, Size: 10})
			i.OnReport(reconcile.Report{Start: now, Duration: time.Second, Listed: 1, Phases: reconcile.Phases{List: time.Millisecond},
				Guests: []reconcile.GuestReport{{Ref: qemu(100), Outcome: reconcile.GuestInSync}}})
		}
	}
	s := &setup{reader: reader}
	m := s.collect(t)
	for _, name := range []string{
		"guestward.api.request.duration", "guestward.queue.wait", "guestward.queue.depth",
		"guestward.journal.append.duration", "guestward.journal.append.size", "guestward.pass.duration",
		"guestward.pass.phase.duration", "guestward.pass.guests", "guestward.guests", "guestward.operations.in_flight",
	} {
		byCluster := map[string]int64{}
		for k, v := range counts(t, m[name]) {
			switch {
			case strings.Contains(k, "cluster=a"):
				byCluster["a"] += v
			case strings.Contains(k, "cluster=b"):
				byCluster["b"] += v
			default:
				t.Errorf("%s: a series without the cluster: %s", name, k)
			}
		}
		if len(byCluster) != 2 {
			t.Errorf("%s: series %v, want one set per cluster", name, counts(t, m[name]))
		}
	}
	for _, sp := range spans.Started() {
		found := false
		for _, a := range sp.Attributes() {
			found = found || a.Key == "cluster"
		}
		if !found && (sp.Name() == "guestward.pass" || sp.Name() == "guestward.action") {
			t.Errorf("span %s has no cluster attribute", sp.Name())
		}
	}
}

// An operation Recover resolved closes its span and in-flight count if this
// process started it, and is counted apart, with no duration recorded.
func TestRecoveredEvent(t *testing.T) {
	s := newSetup(t)
	at := time.Now()
	s.ins.OnEvent(reconcile.Event{Ref: qemu(100), Kind: reconcile.ActionStart, OpID: "a", Phase: "start", At: at})
	s.ins.OnEvent(reconcile.Event{Ref: qemu(100), Kind: reconcile.ActionStart, OpID: "a", Phase: "failed", At: at,
		Outcome: reconcile.OutcomeInterrupted, Duration: time.Second})
	// Recover resolves a, and b, which another process started.
	for _, op := range []string{"a", "b"} {
		s.ins.OnEvent(reconcile.Event{Ref: qemu(100), Kind: reconcile.ActionStart, OpID: op, Phase: "done", At: at,
			Outcome: reconcile.OutcomeSucceeded, Recovered: true})
	}
	m := s.collect(t)
	want := map[string]int64{
		"kind=start,outcome=interrupted":              1,
		"kind=start,outcome=succeeded,recovered=true": 2,
	}
	if got := counts(t, m["guestward.actions"]); !maps.Equal(got, want) {
		t.Errorf("guestward.actions %v, want %v", got, want)
	}
	if got := counts(t, m["guestward.action.duration"]); !maps.Equal(got, map[string]int64{"kind=start,outcome=interrupted": 1}) {
		t.Errorf("guestward.action.duration %v: a recovered operation has no duration to record", got)
	}
	if got := counts(t, m["guestward.operations.in_flight"])[""]; got != 0 {
		t.Errorf("in flight %d, want 0", got)
	}
}
