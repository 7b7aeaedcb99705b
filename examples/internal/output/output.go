// Package output prints what the example programs do, for a person (text)
// or for a program (JSON lines), from guestward's own report types. It is
// not part of guestward's API.
//
// In JSON mode every line is one object whose "type" member says what it
// is: "start", "recovery", "plan", "event", "progress", "report",
// "oneshot", "shutdown" or "exit" (and the programs' own, such as "listen"
// and "health"), and whose "schema" member is [SchemaVersion]. Tests and
// scripts parse these lines; the text form may change.
package output

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

// SchemaVersion is the "schema" member of every JSON line. Under one
// version, members are only ever added; a member removed or changed in
// meaning makes a new version.
const SchemaVersion = 1

// Formats.
const (
	Text = "text"
	JSON = "json"
)

// Printer writes records to one writer, one at a time. It is safe for
// concurrent use: engine events arrive from many goroutines.
type Printer struct {
	mu     sync.Mutex
	w      io.Writer
	json   bool
	now    func() time.Time
	t0     time.Time
	total  int // actions expected, for progress; 0 if unknown
	done   int
	indent string // prefix of the lines of records in text mode
	wall   bool   // text times are wall-clock times, not offsets from t0
	full   bool   // JSON report lines carry the whole report
	err    error  // first write error

	// Text progress: where it goes (nil: nowhere), and the phase and
	// tenth of it last written.
	progW     io.Writer
	progPass  int
	progPhase reconcile.Phase
	progTenth int
}

// wallFormat is how text mode writes wall-clock times.
const wallFormat = "15:04:05.000"

// SetWallClock makes text mode write events and reports with the time of
// day, as a long-running program should, rather than with seconds since the
// printer started (or since ResetClock), which suits a short demonstration.
func (p *Printer) SetWallClock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wall = true
}

// New returns a printer writing format ("text" or "json") to w.
func New(w io.Writer, format string) *Printer {
	return &Printer{w: w, json: format == JSON, now: time.Now, t0: time.Now()}
}

// JSON reports whether the printer writes JSON lines.
func (p *Printer) JSON() bool { return p.json }

// Err returns the first error writing to the output, if any.
func (p *Printer) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// SetIndent sets the prefix of every line the record methods (Recovery,
// Plan, Event, Report, OneShot) write in text mode. Textf and Text write
// as they are told.
func (p *Printer) SetIndent(prefix string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.indent = prefix
}

// record writes a text record, indented.
func (p *Printer) record(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.printf("%s", Indent(s, p.indent))
}

// Textf writes a line in text mode; in JSON mode it writes nothing.
func (p *Printer) Textf(format string, args ...any) {
	if p.json {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.printf(format+"\n", args...)
}

// Text writes s as it is in text mode; in JSON mode it writes nothing.
func (p *Printer) Text(s string) {
	if p.json {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.printf("%s", s)
}

// Object writes v, which must marshal to a JSON object, as one line in JSON
// mode; in text mode it writes nothing.
func (p *Printer) Object(v any) {
	if !p.json {
		return
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b) // one line, with a newline, and "->" left as it is
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if p.err == nil {
			p.err = fmt.Errorf("output: %w", err)
		}
		return
	}
	p.printf("%s", withSchema(b.Bytes()))
}

// withSchema puts "schema" first in the encoded object line.
func withSchema(line []byte) []byte {
	if len(line) < 2 || line[0] != '{' {
		return line
	}
	head := fmt.Sprintf(`{"schema":%d`, SchemaVersion)
	if line[1] == '}' {
		return append([]byte(head), line[1:]...)
	}
	return append([]byte(head+","), line[1:]...)
}

func (p *Printer) printf(format string, args ...any) {
	if p.err != nil {
		return
	}
	_, p.err = fmt.Fprintf(p.w, format, args...)
}

// Start is the first record: what the program runs against. It is a plain
// value.
type Start struct {
	Type           string `json:"type"` // "start"
	Program        string `json:"program"`
	URL            string `json:"url,omitempty"`
	ProxmoxVersion string `json:"proxmox_version,omitempty"`
	Journal        string `json:"journal,omitempty"`
	Backend        string `json:"journal_backend,omitempty"`
	Desired        string `json:"desired,omitempty"`
	DryRun         bool   `json:"dry_run,omitempty"`
	Interval       string `json:"interval,omitempty"`
	Once           bool   `json:"once,omitempty"`
	Demo           bool   `json:"demo,omitempty"`
}

// Start writes the start record (JSON mode only; text programs say it
// their own way).
func (p *Printer) Start(s Start) {
	s.Type = "start"
	p.Object(s)
}

type recoveryRecord struct {
	Type       string                  `json:"type"` // "recovery"
	Ops        []reconcile.RecoveredOp `json:"ops"`  // each with its "guest"
	Unresolved int                     `json:"unresolved"`
	Error      string                  `json:"error,omitempty"`
}

// Recovery writes what Engine.Recover resolved.
func (p *Printer) Recovery(rep reconcile.RecoveryReport, err error) {
	if p.json {
		rec := recoveryRecord{Type: "recovery", Ops: rep.Ops, Unresolved: len(rep.Unresolved())}
		if rec.Ops == nil {
			rec.Ops = []reconcile.RecoveredOp{}
		}
		if err != nil {
			rec.Error = err.Error()
		}
		p.Object(rec)
		return
	}
	var b strings.Builder
	switch {
	case len(rep.Ops) == 0 && err == nil:
		b.WriteString("recover: the journal shows no operation in flight\n")
	case len(rep.Ops) > 0:
		fmt.Fprintf(&b, "recover: %s in flight when the last run ended\n", Count(len(rep.Ops), "operation"))
		for _, op := range rep.Ops {
			to := string(op.To)
			if to == "" {
				to = "UNRESOLVED"
			}
			fmt.Fprintf(&b, "  %s %s (op %s): %s -> %s, %s", op.Ref, op.Kind, op.OpID, op.From, to, op.How)
			if op.Key != "" {
				fmt.Fprintf(&b, ", key %q", op.Key)
			}
			if op.Error != "" {
				fmt.Fprintf(&b, ": %s", op.Error)
			}
			b.WriteString("\n")
		}
	}
	if err != nil {
		fmt.Fprintf(&b, "recover: %v\n", err)
	}
	p.record(b.String())
}

type planRecord struct {
	Type string               `json:"type"` // "plan"
	Plan reconcile.PlanResult `json:"plan"`
}

// Plan writes a plan, in reconcile's own text rendering or as a "plan"
// record.
func (p *Printer) Plan(plan reconcile.PlanResult) {
	if p.json {
		p.Object(planRecord{Type: "plan", Plan: plan})
		return
	}
	p.record(plan.String())
}

// Count returns n and the noun, in the plural unless n is 1: "1 guest",
// "3 guests".
func Count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// Indent prefixes every line of s with prefix.
func Indent(s, prefix string) string {
	if prefix == "" || s == "" {
		return s
	}
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" && l != "\n" {
			b.WriteString(prefix)
		}
		b.WriteString(l)
	}
	return b.String()
}

// ExpectActions sets how many actions the coming pass will run, so that
// text events show progress; 0 turns progress off.
func (p *Printer) ExpectActions(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total, p.done = n, 0
}

type eventRecord struct {
	Type   string               `json:"type"` // "event"
	Guest  string               `json:"guest"`
	Kind   reconcile.ActionKind `json:"kind"`
	Phase  string               `json:"phase"`
	OpID   string               `json:"op_id,omitempty"`
	UPID   proxmox.UPID         `json:"upid,omitempty"`
	Detail string               `json:"detail,omitempty"`
	At     time.Time            `json:"at"`
	// Recovered: Recover resolved the operation, which an earlier run
	// started or left interrupted.
	Recovered bool `json:"recovered,omitempty"`
}

// Event writes the progress of one action; use it as
// reconcile.Config.OnEvent.
func (p *Printer) Event(ev reconcile.Event) {
	if p.json {
		p.Object(eventRecord{Type: "event", Guest: ev.Ref.String(), Kind: ev.Kind, Phase: ev.Phase,
			OpID: ev.OpID, UPID: ev.UPID, Detail: ev.Detail, At: ev.At, Recovered: ev.Recovered})
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var what string
	switch ev.Phase {
	case "start":
		what = "sent"
	case "task":
		what = "running as task " + string(ev.UPID)
	case "done":
		what = "done"
	case "failed":
		what = "FAILED: " + ev.Detail
	default:
		what = ev.Phase
	}
	if ev.Recovered {
		// Not one of the pass's actions: it counts toward no progress.
		what = "recovered: " + what
		if ev.Phase == "done" && ev.Detail != "" {
			what += " (" + ev.Detail + ")"
		}
	}
	progress := ""
	if p.total > 0 && !ev.Recovered && (ev.Phase == "done" || ev.Phase == "failed") {
		p.done++
		progress = fmt.Sprintf("  [%d/%d]", p.done, p.total)
	}
	at := ev.At
	if at.IsZero() {
		at = p.now()
	}
	when := fmt.Sprintf("%6.2fs", at.Sub(p.t0).Seconds())
	if p.wall {
		when = at.Format(wallFormat)
	}
	p.printf("%s%s  %-14s %-10s %s%s\n", p.indent, when, ev.Ref, ev.Kind, what, progress)
}

// ResetClock makes text event times count from now.
func (p *Printer) ResetClock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t0 = p.now()
}

// reportRecord is a pass's summary line. The whole report, guest by guest,
// is in "report" only after SetFullReports(true).
type reportRecord struct {
	Type            string                         `json:"type"` // "report"
	Pass            int                            `json:"pass"`
	Converged       bool                           `json:"converged"`
	Counts          map[reconcile.GuestOutcome]int `json:"counts"`
	Sent            int                            `json:"actions_sent"`
	Succeeded       int                            `json:"actions_succeeded"`
	DurationSeconds float64                        `json:"duration_seconds"`
	Error           string                         `json:"error,omitempty"`
	Report          *reconcile.Report              `json:"report,omitempty"`
}

// SetFullReports makes JSON mode's report lines carry the whole report,
// guest by guest, after the summary; by default they are the summary alone,
// one short line per pass however large the fleet.
func (p *Printer) SetFullReports(full bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.full = full
}

// Report writes the account of pass number n. err is the pass's error, if
// it could not act. In text mode every guest that was not in sync gets a
// line; with listInSync, one more line names the guests in sync.
func (p *Printer) Report(n int, rep reconcile.Report, err error, listInSync bool) {
	sent, ok := rep.Actions()
	if p.json {
		rec := reportRecord{Type: "report", Pass: n, Converged: err == nil && rep.Converged(), Counts: rep.Count(),
			Sent: sent, Succeeded: ok, DurationSeconds: rep.Duration.Seconds()}
		if err != nil {
			rec.Error = err.Error()
		}
		p.mu.Lock()
		if p.full {
			rec.Report = &rep
		}
		p.mu.Unlock()
		p.Object(rec)
		return
	}
	text := ReportText(n, rep, err, listInSync)
	if p.wall {
		text = p.now().Format(wallFormat) + "  " + text // when the pass ended
	}
	p.record(text)
}

// ReportText renders a pass report for a person; see Printer.Report.
func ReportText(n int, rep reconcile.Report, err error, listInSync bool) string {
	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "pass %d: did not act: %v\n", n, err)
		return b.String()
	}
	if len(rep.Guests) == 0 {
		fmt.Fprintf(&b, "pass %d: the desired state declares no guest; nothing to do\n", n)
		return b.String()
	}
	counts := rep.Count()
	outcomes := make([]string, 0, len(counts))
	for _, o := range []reconcile.GuestOutcome{reconcile.GuestInSync, reconcile.GuestChanged, reconcile.GuestPlanned,
		reconcile.GuestSkipped, reconcile.GuestFailed, reconcile.GuestConflict, reconcile.GuestVetoed, reconcile.GuestInterrupted, reconcile.GuestNotStarted} {
		if c := counts[o]; c > 0 {
			outcomes = append(outcomes, fmt.Sprintf("%d %s", c, strings.ReplaceAll(string(o), "_", " ")))
		}
	}
	sent, ok := rep.Actions()
	dur := rep.Duration
	verb := "sent"
	if rep.DryRun {
		verb = "planned"
	}
	fmt.Fprintf(&b, "pass %d: %s: %s; %s %s, %d succeeded (%.1fs)\n",
		n, Count(len(rep.Guests), "guest"), strings.Join(outcomes, ", "), Count(sent, "action"), verb, ok, dur.Seconds())
	if rep.DesiredErr != "" {
		fmt.Fprintf(&b, "  warning: acted on the last good desired state: %s\n", rep.DesiredErr)
	}
	var inSync []string
	for _, g := range rep.Guests {
		if g.Outcome == reconcile.GuestInSync {
			inSync = append(inSync, g.Ref.String())
			continue
		}
		fmt.Fprintf(&b, "  %-14s %-11s %s\n", g.Ref, strings.ReplaceAll(string(g.Outcome), "_", " "), guestSummary(g))
	}
	if listInSync && len(inSync) > 0 {
		sort.Strings(inSync)
		fmt.Fprintf(&b, "  in sync: %s\n", strings.Join(inSync, ", "))
	}
	return b.String()
}

// guestSummary says in a few words what happened to one guest.
func guestSummary(g reconcile.GuestReport) string {
	var parts []string
	for _, a := range g.Actions {
		s := fmt.Sprintf("%s %s", a.Action.Kind, a.Outcome)
		if a.Duration > 0 {
			s += fmt.Sprintf(" in %.2fs", a.Duration.Seconds())
		}
		if a.Error != "" {
			s += ": " + a.Error
		}
		parts = append(parts, s)
	}
	switch g.Outcome {
	case reconcile.GuestSkipped:
		return fmt.Sprintf("(%s) %s", g.Reason, g.Detail)
	case reconcile.GuestInSync:
		if g.Detail != "" {
			return g.Detail
		}
		return ""
	}
	if len(parts) == 0 {
		return g.Detail
	}
	return strings.Join(parts, ", ")
}

type oneShotRecord struct {
	Type   string               `json:"type"` // "oneshot"
	Key    string               `json:"key"`
	Guest  string               `json:"guest"`
	Kind   reconcile.ActionKind `json:"kind"`
	Result reconcile.Result     `json:"result"`
	Error  string               `json:"error,omitempty"`
}

// OneShot writes the outcome of Engine.Apply.
func (p *Printer) OneShot(s reconcile.OneShot, res reconcile.Result, err error) {
	if p.json {
		rec := oneShotRecord{Type: "oneshot", Key: s.Key, Guest: s.Ref.String(), Kind: s.Kind, Result: res}
		if err != nil {
			rec.Error = err.Error()
		}
		p.Object(rec)
		return
	}
	p.record(OneShotText(s, res, err) + "\n")
}

// OneShotText says, for a person, what a one-shot operation did. A failure
// says whether it spent the key: one that proves Proxmox did nothing
// (Result.KeyUnused) leaves the key usable for the same request, and any
// other failure needs a new key to try again.
func OneShotText(s reconcile.OneShot, res reconcile.Result, err error) string {
	what := fmt.Sprintf("%s %s", s.Kind, s.Ref)
	task := ""
	if res.UPID != "" {
		task = ", task " + string(res.UPID)
	}
	attempt := ""
	if res.Attempt > 1 {
		attempt = fmt.Sprintf(" (attempt %d)", res.Attempt)
	}
	switch {
	case errors.Is(err, reconcile.ErrKeyConflict):
		return fmt.Sprintf("%s (key %q): refused, nothing was sent: %v; a key names one request, so this one needs a new key",
			what, s.Key, err)
	case err != nil && res.OpID == "":
		return fmt.Sprintf("%s (key %q): not run: %v", what, s.Key, err)
	case err != nil && res.KeyUnused:
		return fmt.Sprintf("%s (key %q): op %s%s is %s: %v; %s", what, s.Key, res.OpID, attempt, res.State, err, keyUnusedText)
	case err != nil:
		return fmt.Sprintf("%s (key %q): op %s%s is %s: %v", what, s.Key, res.OpID, attempt, res.State, err)
	case res.Replayed && res.Applied():
		return fmt.Sprintf("%s (key %q): already applied by op %s%s; nothing was sent", what, s.Key, res.OpID, task)
	case res.KeyUnused:
		// A replay is of a spent key, so this is an attempt that ran,
		// here or in a call this one joined.
		return fmt.Sprintf("%s (key %q): FAILED in op %s%s%s: %s; %s", what, s.Key, res.OpID, attempt, task, res.Error, keyUnusedText)
	case res.Replayed:
		return fmt.Sprintf("%s (key %q): this key was already used by op %s%s, which failed: %s; nothing was sent (use a new key to try again)",
			what, s.Key, res.OpID, attempt, res.Error)
	case res.Applied():
		return fmt.Sprintf("%s (key %q): applied by op %s%s%s", what, s.Key, res.OpID, attempt, task)
	default:
		return fmt.Sprintf("%s (key %q): FAILED in op %s%s%s: %s; the key is used (use a new key to try again)",
			what, s.Key, res.OpID, attempt, task, res.Error)
	}
}

type revertRecord struct {
	Type    string           `json:"type"` // "revert"
	Reverts string           `json:"reverts"`
	Result  reconcile.Result `json:"result"`
	Error   string           `json:"error,omitempty"`
}

// Revert writes the outcome of Engine.Revert of operation opID.
func (p *Printer) Revert(opID string, res reconcile.Result, err error) {
	if p.json {
		rec := revertRecord{Type: "revert", Reverts: opID, Result: res}
		if err != nil {
			rec.Error = err.Error()
		}
		p.Object(rec)
		return
	}
	p.record(RevertText(opID, res, err) + "\n")
}

// RevertText says, for a person, what the revert of an operation did.
func RevertText(opID string, res reconcile.Result, err error) string {
	what := "revert of op " + opID
	if res.Kind != "" {
		what += fmt.Sprintf(" (%s %s)", res.Kind, res.Ref)
	}
	switch {
	case errors.Is(err, reconcile.ErrRevertConflict):
		return fmt.Sprintf("%s: refused, nothing was sent: %v; -force reverts against the guest as it is now", what, err)
	case err != nil && res.OpID == "":
		return fmt.Sprintf("%s: not run: %v", what, err)
	case err != nil:
		return fmt.Sprintf("%s: op %s is %s: %v", what, res.OpID, res.State, err)
	case res.Replayed && res.Applied():
		return fmt.Sprintf("%s: already reverted by op %s; nothing was sent", what, res.OpID)
	case res.Applied():
		return fmt.Sprintf("%s: reverted by op %s", what, res.OpID)
	case res.KeyUnused:
		return fmt.Sprintf("%s: FAILED in op %s: %s; Proxmox did nothing, so the revert may be tried again", what, res.OpID, res.Error)
	default:
		return fmt.Sprintf("%s: FAILED in op %s: %s; an operation is reverted at most once", what, res.OpID, res.Error)
	}
}

// keyUnusedText explains Result.KeyUnused to a person.
const keyUnusedText = "Proxmox did nothing, so the key is still unused: the same request with the same key runs again"

type shutdownRecord struct {
	Type   string `json:"type"` // "shutdown"
	Reason string `json:"reason"`
}

type exitRecord struct {
	Type   string `json:"type"` // "exit"
	Code   int    `json:"code"`
	Reason string `json:"reason,omitempty"`
}

// Shutdown writes that the program is stopping, and why.
func (p *Printer) Shutdown(reason string) {
	if p.json {
		p.Object(shutdownRecord{Type: "shutdown", Reason: reason})
		return
	}
	if p.wall {
		reason = p.now().Format(wallFormat) + "  " + reason
	}
	p.Textf("%s", reason)
}

// Exit writes the last record: the exit code and why (JSON mode only).
func (p *Printer) Exit(code int, reason string) {
	p.Object(exitRecord{Type: "exit", Code: code, Reason: reason})
}

type progressRecord struct {
	Type           string          `json:"type"` // "progress"
	Pass           int             `json:"pass"`
	Targeted       bool            `json:"targeted,omitempty"`
	Phase          reconcile.Phase `json:"phase"`
	Done           int             `json:"done"`
	Total          int             `json:"total"`
	ElapsedSeconds float64         `json:"elapsed_seconds"`
	Error          string          `json:"error,omitempty"`
	At             time.Time       `json:"at"`
}

// SetProgressWriter sets where text mode writes pass progress: a line as
// each phase with work ends, one every tenth while a phase of a hundred
// guests or more goes on, and the end of the pass. Nil, the default,
// writes none. JSON mode writes every progress record to the output, as
// the engine coalesced them, whatever is set here.
func (p *Printer) SetProgressWriter(w io.Writer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.progW = w
}

// Progress writes where a pass stands; use it as
// reconcile.Config.OnProgress.
func (p *Printer) Progress(pr reconcile.Progress) {
	at := pr.Start.Add(pr.Elapsed)
	if p.json {
		rec := progressRecord{Type: "progress", Pass: pr.Pass, Targeted: pr.Targeted, Phase: pr.Phase,
			Done: pr.Done, Total: pr.Total, ElapsedSeconds: pr.Elapsed.Seconds(), At: at}
		if pr.Err != nil {
			rec.Error = pr.Err.Error()
		}
		p.Object(rec)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.progW == nil || p.err != nil {
		return
	}
	if pr.Pass != p.progPass || pr.Phase != p.progPhase {
		p.progPass, p.progPhase, p.progTenth = pr.Pass, pr.Phase, 0
	}
	tenth := 0
	if pr.Total > 0 {
		tenth = pr.Done * 10 / pr.Total
	}
	switch {
	case pr.Phase == reconcile.PhaseDone:
	case pr.Total > 0 && pr.Done == pr.Total:
	case pr.Total >= 100 && tenth > p.progTenth:
	default:
		return
	}
	p.progTenth = tenth
	what := "pass"
	if pr.Targeted {
		what = "targeted pass"
	}
	line := fmt.Sprintf("%s %d: %s %d/%d (%.1fs)", what, pr.Pass, pr.Phase, pr.Done, pr.Total, pr.Elapsed.Seconds())
	if pr.Phase == reconcile.PhaseDone {
		line = fmt.Sprintf("%s %d: done, %s (%.1fs)", what, pr.Pass, Count(pr.Total, "guest"), pr.Elapsed.Seconds())
		if pr.Err != nil {
			line += ": did not act: " + pr.Err.Error()
		}
	}
	when := fmt.Sprintf("%6.2fs", at.Sub(p.t0).Seconds())
	if p.wall {
		when = at.Format(wallFormat)
	}
	if _, err := fmt.Fprintf(p.progW, "%s  %s\n", when, line); err != nil {
		p.progW = nil // a progress display that fails is not worth failing for
	}
}
