package otel

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/queue"
	"github.com/guestward/guestward/reconcile"
)

// ScopeName is the instrumentation scope of every instrument and span this
// package makes.
const ScopeName = "github.com/guestward/guestward/otel"

// ErrNoMeterProvider is returned by [New] for a nil MeterProvider.
var ErrNoMeterProvider = errors.New("otel: no MeterProvider")

// Option configures [New].
type Option struct {
	fn func(*settings)
}

type settings struct {
	tp     trace.TracerProvider
	status func() (inFlight, unresolved int)
	base   []attribute.KeyValue
}

// WithAttributes adds attrs to every measurement and span, such as the
// cluster an engine drives ("cluster", "fleet-a"), so that the engines of
// a process that drives several clusters can share one MeterProvider
// without their series merging. Keep them few and fixed: each value makes
// a series of every metric.
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return Option{func(s *settings) { s.base = append(s.base, attrs...) }}
}

// WithTracerProvider makes spans for passes and operations with tp (see the
// package documentation). Without it, no spans are made.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return Option{func(s *settings) { s.tp = tp }}
}

// WithStatus reads the gauges guestward.operations.in_flight and
// guestward.operations.unresolved from fn, at each collection, instead of
// counting operations in flight from OnEvent (which sees neither the
// operations another engine sharing the journal runs, nor those left
// unresolved after a crash). fn must be quick and safe for concurrent use.
func WithStatus(fn func() (inFlight, unresolved int)) Option {
	return Option{func(s *settings) { s.status = fn }}
}

// Instruments turns what a guestward engine reports into OpenTelemetry
// measurements and spans. Make one with [New] per engine; it is safe for
// concurrent use.
type Instruments struct {
	// bg is the context measurements and root spans are made under: the
	// core's seams carry none, so nothing here belongs to a caller's
	// trace.
	bg     context.Context
	tracer trace.Tracer // nil without WithTracerProvider
	status func() (inFlight, unresolved int)
	reg    metric.Registration
	base   []attribute.KeyValue // WithAttributes
	noAttr metric.MeasurementOption

	passDur, phaseDur, actionDur, taskWait metric.Float64Histogram
	queueWait, apiDur, appendDur           metric.Float64Histogram
	appendSize                             metric.Int64Histogram
	passGuests, actions                    metric.Int64Counter
	guests, queueDepth                     metric.Int64Gauge

	inFlight atomic.Int64 // operations started and not ended, from OnEvent

	// requestAttrs holds, by requestKey, the attribute option of
	// OnRequest's measurements, made once per key; requestKeys counts
	// the keys made.
	requestAttrs sync.Map
	requestKeys  atomic.Int64

	mu   sync.Mutex
	open map[string]trace.Span // by op id: operations started and not ended
	// seen holds the outcome and skip reason pairs the guests gauge has
	// shown, so that one no pass reports any more drops to zero.
	seen map[attribute.Set]bool
}

// Bucket boundaries, in seconds, for the durations this package records:
// the defaults of the SDK are made for milliseconds.
var (
	passBuckets    = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	requestBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	appendBuckets  = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}
	sizeBuckets    = []float64{64, 128, 256, 512, 1024, 4096, 16384, 65536, 262144}
)

// New makes the instruments with mp, and the spans with the
// TracerProvider of WithTracerProvider, if any.
func New(mp metric.MeterProvider, opts ...Option) (*Instruments, error) {
	if mp == nil {
		return nil, ErrNoMeterProvider
	}
	var s settings
	for _, o := range opts {
		if o.fn != nil {
			o.fn(&s)
		}
	}
	i := &Instruments{
		// The seams carry no context: see the bg field.
		bg:     context.Background(),
		status: s.status,
		base:   s.base,
		open:   make(map[string]trace.Span),
		seen:   make(map[attribute.Set]bool),
	}
	i.noAttr = i.attrs()
	if s.tp != nil {
		i.tracer = s.tp.Tracer(ScopeName)
	}
	m := mp.Meter(ScopeName)
	var errs []error
	hist := func(name, unit, desc string, buckets []float64) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit(unit), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(buckets...))
		errs = append(errs, err)
		return h
	}
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	gauge := func(name, unit, desc string) metric.Int64Gauge {
		g, err := m.Int64Gauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	i.passDur = hist("guestward.pass.duration", "s", "Duration of a reconcile pass.", passBuckets)
	i.phaseDur = hist("guestward.pass.phase.duration", "s", "Duration of one phase of a reconcile pass.", passBuckets)
	i.actionDur = hist("guestward.action.duration", "s", "Duration of an operation, from its intent to its outcome.", passBuckets)
	i.taskWait = hist("guestward.task.wait", "s", "Time an operation waited for its Proxmox tasks to end.", passBuckets)
	i.queueWait = hist("guestward.queue.wait", "s", "Time a job waited in the per-guest queue before it started.", passBuckets)
	i.apiDur = hist("guestward.api.request.duration", "s", "Duration of one attempt at a Proxmox API request.", requestBuckets)
	i.appendDur = hist("guestward.journal.append.duration", "s", "Duration of a journal append, until the record is durable.", appendBuckets)
	var err error
	i.appendSize, err = m.Int64Histogram("guestward.journal.append.size", metric.WithUnit("By"),
		metric.WithDescription("Size of a journal record in the journal's binary format."), metric.WithExplicitBucketBoundaries(sizeBuckets...))
	errs = append(errs, err)
	i.passGuests = counter("guestward.pass.guests", "{guest}", "Declared guests reported by passes, by outcome and skip reason.")
	i.actions = counter("guestward.actions", "{action}", "Operations run, by kind and outcome.")
	i.guests = gauge("guestward.guests", "{guest}", "Declared guests by outcome and skip reason, as of the last full pass.")
	i.queueDepth = gauge("guestward.queue.depth", "{job}", "Jobs waiting in the queue, as the last job left it.")

	inFlight, err := m.Int64ObservableGauge("guestward.operations.in_flight", metric.WithUnit("{operation}"),
		metric.WithDescription("Operations started and not ended."))
	errs = append(errs, err)
	observed := []metric.Observable{inFlight}
	var unresolved metric.Int64ObservableGauge
	if i.status != nil {
		unresolved, err = m.Int64ObservableGauge("guestward.operations.unresolved", metric.WithUnit("{operation}"),
			metric.WithDescription("Operations left in flight that recovery could not resolve yet."))
		errs = append(errs, err)
		observed = append(observed, unresolved)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("otel: making instruments: %w", err)
	}
	i.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if i.status == nil {
			o.ObserveInt64(inFlight, i.inFlight.Load(), i.noAttr)
			return nil
		}
		n, u := i.status()
		o.ObserveInt64(inFlight, int64(n), i.noAttr)
		o.ObserveInt64(unresolved, int64(u), i.noAttr)
		return nil
	}, observed...)
	if err != nil {
		return nil, fmt.Errorf("otel: registering the gauges: %w", err)
	}
	return i, nil
}

// Close stops the gauges read at collection time, and ends the spans of
// operations still open. The other instruments stay usable.
func (i *Instruments) Close() error {
	i.mu.Lock()
	for id, sp := range i.open {
		if sp != nil {
			sp.End()
		}
		delete(i.open, id)
	}
	i.mu.Unlock()
	return i.reg.Unregister()
}

// Wire installs OnReport and OnEvent in cfg, after the functions already
// there, which still run first.
func (i *Instruments) Wire(cfg *reconcile.Config) {
	if prev := cfg.OnReport; prev != nil {
		cfg.OnReport = func(r reconcile.Report) { prev(r); i.OnReport(r) }
	} else {
		cfg.OnReport = i.OnReport
	}
	if prev := cfg.OnEvent; prev != nil {
		cfg.OnEvent = func(e reconcile.Event) { prev(e); i.OnEvent(e) }
	} else {
		cfg.OnEvent = i.OnEvent
	}
}

// ProxmoxOption is the client option that reports requests to OnRequest.
func (i *Instruments) ProxmoxOption() proxmox.Option { return proxmox.WithRequestObserver(i.OnRequest) }

// QueueOption is the queue option that reports jobs to OnQueue.
func (i *Instruments) QueueOption() queue.Option { return queue.WithObserver(i.OnQueue) }

// Journal returns j with its appends reported to OnAppend (see
// journal.Observe, which keeps j's optional capabilities).
func (i *Instruments) Journal(j journal.Journal) journal.Journal {
	return journal.Observe(j, i.OnAppend)
}

// Phases in the order a pass takes them, with their attribute sets.
var phaseNames = [...]string{"recover", "desired", "list", "observe", "plan", "act"}

func phaseDurations(p reconcile.Phases) [len(phaseNames)]time.Duration {
	return [...]time.Duration{p.Recover, p.Desired, p.List, p.Observe, p.Plan, p.Act}
}

type guestKey struct {
	outcome reconcile.GuestOutcome
	reason  reconcile.SkipReason
}

// OnReport records a pass: its duration and its phases', and its guests by
// outcome and skip reason. A report of a full pass (one that listed the
// cluster's guests) also sets the guestward.guests gauge.
func (i *Instruments) OnReport(rep reconcile.Report) {
	ctx := i.bg
	i.passDur.Record(ctx, rep.Duration.Seconds(), i.noAttr)
	durs := phaseDurations(rep.Phases)
	for n, d := range durs {
		if d > 0 {
			i.phaseDur.Record(ctx, d.Seconds(), i.attrs(attribute.String("phase", phaseNames[n])))
		}
	}
	counts := make(map[guestKey]int64)
	for _, g := range rep.Guests {
		counts[guestKey{g.Outcome, g.Reason}]++
	}
	full := rep.Listed > 0
	i.mu.Lock()
	current := make(map[attribute.Set]bool, len(counts))
	for k, n := range counts {
		set := i.set(attribute.String("outcome", string(k.outcome)), attribute.String("skip_reason", string(k.reason)))
		i.passGuests.Add(ctx, n, metric.WithAttributeSet(set))
		if full {
			i.guests.Record(ctx, n, metric.WithAttributeSet(set))
			current[set] = true
			i.seen[set] = true
		}
	}
	if full {
		for set := range i.seen {
			if !current[set] {
				i.guests.Record(ctx, 0, metric.WithAttributeSet(set))
			}
		}
	}
	i.mu.Unlock()
	if i.tracer != nil {
		i.passSpans(rep, durs)
	}
}

// passSpans makes the span of a pass that ended, and one per phase. The
// phases follow each other without a gap from the pass's start, as the
// engine times them.
func (i *Instruments) passSpans(rep reconcile.Report, durs [len(phaseNames)]time.Duration) {
	sent, succeeded := rep.Actions()
	ctx, sp := i.tracer.Start(i.bg, "guestward.pass", trace.WithTimestamp(rep.Start), trace.WithAttributes(
		attribute.Int("guestward.guests", len(rep.Guests)),
		attribute.Int("guestward.listed", rep.Listed),
		attribute.Int("guestward.observed", rep.Observed),
		attribute.Int("guestward.actions.sent", sent),
		attribute.Int("guestward.actions.succeeded", succeeded),
		attribute.Bool("guestward.dry_run", rep.DryRun),
	), trace.WithAttributes(i.base...))
	at := rep.Start
	for n, d := range durs {
		if d <= 0 {
			continue
		}
		_, ps := i.tracer.Start(ctx, "guestward.pass."+phaseNames[n], trace.WithTimestamp(at))
		at = at.Add(d)
		ps.End(trace.WithTimestamp(at))
	}
	if !rep.Converged() {
		sp.SetStatus(codes.Error, "not every declared guest is in sync")
	}
	sp.End(trace.WithTimestamp(rep.Start.Add(rep.Duration)))
}

// OnEvent records an operation's progress: its start and end for the
// in-flight gauge and its span, and at its end the action by kind and
// outcome, its duration, and its wait for Proxmox tasks. An operation
// Recover resolved is counted with the attribute recovered=true, and its
// duration and task wait, unknown, are not recorded.
func (i *Instruments) OnEvent(ev reconcile.Event) {
	switch ev.Phase {
	case "start":
		var sp trace.Span
		if i.tracer != nil {
			_, sp = i.tracer.Start(i.bg, "guestward.action", trace.WithTimestamp(ev.At), trace.WithAttributes(i.opAttrs(ev)...))
		}
		i.mu.Lock()
		if _, dup := i.open[ev.OpID]; !dup {
			i.open[ev.OpID] = sp
			i.inFlight.Add(1)
		}
		i.mu.Unlock()
	case "task":
		if i.tracer == nil {
			return
		}
		i.mu.Lock()
		sp := i.open[ev.OpID]
		i.mu.Unlock()
		if sp != nil {
			sp.AddEvent("proxmox task started", trace.WithTimestamp(ev.At), trace.WithAttributes(attribute.String("proxmox.upid", string(ev.UPID))))
		}
	case "done", "failed":
		ctx := i.bg
		if ev.Recovered {
			// Its duration and task wait are unknown: count it only.
			i.actions.Add(ctx, 1, i.attrs(attribute.String("kind", string(ev.Kind)), attribute.String("outcome", string(ev.Outcome)),
				attribute.Bool("recovered", true)))
		} else {
			attrs := i.attrs(attribute.String("kind", string(ev.Kind)), attribute.String("outcome", string(ev.Outcome)))
			i.actions.Add(ctx, 1, attrs)
			i.actionDur.Record(ctx, ev.Duration.Seconds(), attrs)
			if ev.UPID != "" || ev.TaskWait > 0 {
				i.taskWait.Record(ctx, ev.TaskWait.Seconds(), i.attrs(attribute.String("kind", string(ev.Kind))))
			}
		}
		i.mu.Lock()
		sp, started := i.open[ev.OpID]
		if started {
			delete(i.open, ev.OpID)
			i.inFlight.Add(-1)
		}
		i.mu.Unlock()
		if i.tracer == nil {
			return
		}
		if sp == nil {
			// It failed before its intent was journaled, and never
			// started; or Recover resolved it, and it started before.
			_, sp = i.tracer.Start(i.bg, "guestward.action", trace.WithTimestamp(ev.At.Add(-ev.Duration)), trace.WithAttributes(i.opAttrs(ev)...))
		}
		sp.SetAttributes(attribute.String("guestward.outcome", string(ev.Outcome)))
		if ev.Recovered {
			sp.SetAttributes(attribute.Bool("guestward.recovered", true))
		}
		if ev.UPID != "" {
			sp.SetAttributes(attribute.String("proxmox.upid", string(ev.UPID)))
		}
		if ev.Phase == "failed" {
			sp.SetStatus(codes.Error, ev.Detail)
		}
		sp.End(trace.WithTimestamp(ev.At))
	}
}

func (i *Instruments) opAttrs(ev reconcile.Event) []attribute.KeyValue {
	return append([]attribute.KeyValue{
		attribute.String("guestward.op_id", ev.OpID),
		attribute.String("guestward.kind", string(ev.Kind)),
		attribute.String("proxmox.node", ev.Ref.Node),
		attribute.String("proxmox.type", string(ev.Ref.Type)),
		attribute.Int("proxmox.vmid", ev.Ref.VMID),
	}, i.base...)
}

// set is the attribute set of kvs and the WithAttributes ones.
func (i *Instruments) set(kvs ...attribute.KeyValue) attribute.Set {
	return attribute.NewSet(append(kvs, i.base...)...)
}

// attrs is the measurement option of kvs and the WithAttributes ones.
func (i *Instruments) attrs(kvs ...attribute.KeyValue) metric.MeasurementOption {
	return metric.WithAttributeSet(i.set(kvs...))
}

// OnQueue records a job that left the queue: how long it waited, and the
// depth it left behind.
func (i *Instruments) OnQueue(ev queue.Event) {
	ctx := i.bg
	i.queueWait.Record(ctx, ev.Waited.Seconds(), i.attrs(attribute.String("outcome", ev.Outcome.String())))
	i.queueDepth.Record(ctx, int64(ev.Depth), i.noAttr)
}

// OnRequest records one attempt at a Proxmox API request, by method, path
// template, node, status and error class.
func (i *Instruments) OnRequest(ri proxmox.RequestInfo) {
	k := requestKey{ri.Method, ri.Path, ri.Node, ri.Status, ri.ErrorClass}
	opt, ok := i.requestAttrs.Load(k)
	if !ok {
		opt = metric.WithAttributeSet(i.set(k.attributes()...))
		// The keys are few by construction (path templates, a cluster's
		// nodes, HTTP statuses); the bound is a guard, not a cache size.
		if i.requestKeys.Add(1) <= maxRequestKeys {
			i.requestAttrs.Store(k, opt)
		}
	}
	i.apiDur.Record(i.bg, ri.Duration.Seconds(), opt.(metric.RecordOption))
}

// requestKey is what the attributes of a request's measurement are made
// of.
type requestKey struct {
	method, path, node string
	status             int
	class              string
}

// maxRequestKeys bounds the attribute sets OnRequest keeps.
const maxRequestKeys = 1024

func (k requestKey) attributes() []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", k.method),
		attribute.String("url.template", k.path),
		attribute.String("node", k.node),
	}
	if k.status > 0 {
		attrs = append(attrs, attribute.Int("http.response.status_code", k.status))
	}
	switch {
	case k.class != "":
		attrs = append(attrs, attribute.String("error.type", k.class))
	case k.status >= 400:
		attrs = append(attrs, attribute.String("error.type", strconv.Itoa(k.status)))
	}
	return attrs
}

// OnAppend records a journal append: its duration by record state (and
// error class, for a refused or failed one) and its record's size.
func (i *Instruments) OnAppend(ai journal.AppendInfo) {
	ctx := i.bg
	state := attribute.String("state", string(ai.State))
	if ai.Err != nil {
		i.appendDur.Record(ctx, ai.Duration.Seconds(), i.attrs(state, attribute.String("error.type", appendErrorClass(ai.Err))))
		return
	}
	i.appendDur.Record(ctx, ai.Duration.Seconds(), i.attrs(state))
	i.appendSize.Record(ctx, int64(ai.Size), i.attrs(state))
}

// appendErrorClass names the class of a journal error, from the journal's
// sentinels.
func appendErrorClass(err error) string {
	for _, c := range []struct {
		target error
		name   string
	}{
		{context.Canceled, "canceled"},
		{context.DeadlineExceeded, "timeout"},
		{journal.ErrClosed, "closed"},
		{journal.ErrKeyConflict, "key_conflict"},
		{journal.ErrTerminal, "terminal"},
		{journal.ErrInvalidTransition, "invalid_transition"},
		{journal.ErrInvalidEntry, "invalid_entry"},
	} {
		if errors.Is(err, c.target) {
			return c.name
		}
	}
	return "other"
}
