// Package otel reports what a guestward engine does as OpenTelemetry metrics
// and traces. It lives in a Go module of its own, so that the core module,
// which only offers plain observer functions, depends on no metrics library;
// import it as gwotel beside go.opentelemetry.io/otel.
//
// # The model
//
// The core reports through five seams, each a function called as things
// happen; [Instruments] holds one method for each, turning what it is told
// into measurements:
//
//	seam                                  Instruments method
//	reconcile.Config.OnReport             OnReport   (every pass of Run)
//	reconcile.Config.OnEvent              OnEvent    (every operation's start, task and end)
//	queue.WithObserver                    OnQueue    (every job that leaves the queue)
//	proxmox.WithRequestObserver           OnRequest  (every attempt at an API request)
//	journal.Observe                       OnAppend   (every journal append)
//
// [Instruments.Wire] installs OnReport and OnEvent in a reconcile.Config
// (keeping functions already there), [Instruments.ProxmoxOption] and
// [Instruments.QueueOption] are the options for the client and the queue,
// and [Instruments.Journal] wraps a journal. Engine.ReconcileOnce and
// ReconcileGuests return their report instead of calling OnReport: pass it to
// [Instruments.OnReport] yourself.
//
// Nothing here starts a goroutine or reads a clock the core did not read; the
// state it keeps is small and bounded by the core's vocabulary (the open
// operations' spans, a count of operations in flight, the outcome pairs the
// guests gauge has shown, one attribute set per request shape); the exporter (Prometheus, OTLP, ...) is the caller's, configured on
// the MeterProvider and TracerProvider given to [New].
//
// # Metrics
//
// Durations are histograms in seconds, sizes in bytes. Attribute values
// come from small fixed sets, but for the node names of a cluster:
//
//	guestward.pass.duration           s          a pass, start to end
//	guestward.pass.phase.duration     s          phase: recover, desired, list, observe, plan, act
//	guestward.pass.guests             {guest}    counter; outcome, skip_reason (per pass)
//	guestward.guests                  {guest}    gauge, as of the last full pass; outcome, skip_reason
//	guestward.actions                 {action}   counter; kind, outcome, recovered (only when true)
//	guestward.action.duration         s          kind, outcome
//	guestward.task.wait               s          kind: time an operation waited for its Proxmox tasks
//	guestward.operations.in_flight    {operation} gauge
//	guestward.operations.unresolved   {operation} gauge (only with WithStatus)
//	guestward.queue.wait              s          outcome: submission to start
//	guestward.queue.depth             {job}      gauge: jobs waiting, as the last job left
//	guestward.api.request.duration    s          http.request.method, url.template, guestward.node,
//	                                             http.response.status_code, error.type
//	guestward.journal.append.duration s          state, error.type
//	guestward.journal.append.size     By         state
//
// [WithAttributes] adds attributes of the caller's to every measurement and
// span: one engine per cluster in one process, on one MeterProvider, keeps
// each cluster's series apart with a "cluster" attribute.
//
// A phase a pass did not take (a dry run does not recover; a targeted pass
// does not list) is not recorded. guestward.actions counts the operations the
// engine ran, from passes, one-shots and reverts; an action a Policy vetoed
// is not run, and shows as a guest with outcome "vetoed". An operation
// Recover resolved (interrupted, or left in flight by a stopped process)
// is counted again with recovered="true" and the outcome Recover found;
// guestward.action.duration leaves it out.
//
// # Traces
//
// With [WithTracerProvider], each pass given to OnReport becomes a span
// "guestward.pass" with a child span per phase, and each operation a span
// "guestward.action" from its start to its end, with an event for each
// Proxmox task it started. The seams carry no context.Context, so these spans
// are roots of their own traces: an operation run by a hub's request is not
// linked to that request's span.
//
// # Concurrency
//
// An Instruments is safe for concurrent use; its methods are quick and never
// block, as the seams require.
package otel
