package output

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

var web = proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}

func TestCountAndIndent(t *testing.T) {
	if Count(1, "guest") != "1 guest" || Count(0, "guest") != "0 guests" || Count(3, "action") != "3 actions" {
		t.Error("Count does not pluralize as it should")
	}
	if got := Indent("a\n\nb\n", "  "); got != "  a\n\n  b\n" {
		t.Errorf("Indent = %q", got)
	}
}

func TestTextModeWritesNoJSONAndViceVersa(t *testing.T) {
	var text, js bytes.Buffer
	pt, pj := New(&text, Text), New(&js, JSON)
	for _, p := range []*Printer{pt, pj} {
		p.Textf("hello %d", 1)
		p.Start(Start{Program: "agent"})
		p.Exit(0, "done")
	}
	if text.String() != "hello 1\n" {
		t.Errorf("text mode wrote %q", text.String())
	}
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("json mode wrote %q", js.String())
	}
	var exit map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &exit); err != nil || exit["type"] != "exit" || exit["code"] != 0.0 {
		t.Errorf("exit record %q: %v", lines[1], err)
	}
}

func TestEventProgress(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, Text)
	p.ExpectActions(2)
	p.Event(reconcile.Event{Ref: web, Kind: reconcile.ActionStart, Phase: "start"})
	p.Event(reconcile.Event{Ref: web, Kind: reconcile.ActionStart, Phase: "task", UPID: "UPID:x"})
	p.Event(reconcile.Event{Ref: web, Kind: reconcile.ActionStart, Phase: "done"})
	// An operation Recover resolved is not one of the pass's actions.
	p.Event(reconcile.Event{Ref: web, Kind: reconcile.ActionStart, Phase: "done", Detail: "task adopted", Recovered: true})
	p.Event(reconcile.Event{Ref: web, Kind: reconcile.ActionStop, Phase: "failed", Detail: "VM is locked"})
	out := b.String()
	for _, want := range []string{"sent", "running as task UPID:x", "done  [1/2]", "recovered: done (task adopted)\n", "FAILED: VM is locked  [2/2]"} {
		if !strings.Contains(out, want) {
			t.Errorf("events lack %q:\n%s", want, out)
		}
	}
}

func TestReportText(t *testing.T) {
	rep := reconcile.Report{
		Start:    time.Now(),
		Duration: 1500 * time.Millisecond,
		Guests: []reconcile.GuestReport{
			{Ref: web, Outcome: reconcile.GuestChanged, Actions: []reconcile.ActionReport{
				{Action: reconcile.Action{Kind: reconcile.ActionStart}, Outcome: reconcile.OutcomeSucceeded, Duration: time.Second}}},
			{Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 101}, Outcome: reconcile.GuestSkipped,
				Reason: reconcile.SkipLocked, Detail: "locked (backup)"},
			{Ref: proxmox.Ref{Node: "pve1", Type: proxmox.LXC, VMID: 200}, Outcome: reconcile.GuestInSync},
		},
	}
	out := ReportText(1, rep, nil, true)
	for _, want := range []string{
		"pass 1: 3 guests: 1 in sync, 1 changed, 1 skipped; 1 action sent, 1 succeeded (1.5s)",
		"start succeeded in 1.00s",
		"(locked) locked (backup)",
		"in sync: pve1/lxc/200",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if out := ReportText(2, reconcile.Report{}, errors.New("listing guests: boom"), false); !strings.Contains(out, "did not act: listing guests: boom") {
		t.Errorf("aborted pass: %q", out)
	}
	if out := ReportText(3, reconcile.Report{}, nil, false); !strings.Contains(out, "declares no guest") {
		t.Errorf("empty pass: %q", out)
	}
}

func TestOneShotText(t *testing.T) {
	op := reconcile.OneShot{Key: "k", Ref: web, Kind: reconcile.ActionStart}
	const newKey, sameKey = "use a new key", "the same request with the same key runs again"
	conflict := fmt.Errorf("%w: key \"k\" names stop on pve1/qemu/100", reconcile.ErrKeyConflict)
	for _, tc := range []struct {
		name string
		res  reconcile.Result
		err  error
		want []string
		not  []string // what would mislead: a spent key called usable, or the reverse
	}{
		{"applied", reconcile.Result{OpID: "op1", State: journal.Succeeded, UPID: "UPID:a", Attempt: 1}, nil,
			[]string{"applied by op op1, task UPID:a"}, []string{"attempt", newKey, sameKey}},
		{"applied on a later attempt", reconcile.Result{OpID: "op2", State: journal.Succeeded, Attempt: 2}, nil,
			[]string{"applied by op op2 (attempt 2)"}, []string{newKey, sameKey}},
		{"replayed success", reconcile.Result{OpID: "op1", State: journal.Succeeded, Replayed: true}, nil,
			[]string{"already applied by op op1; nothing was sent"}, []string{newKey, sameKey}},
		{"replayed failure: the key is spent", reconcile.Result{OpID: "op1", State: journal.Failed, Error: "QEMU exited", Replayed: true}, nil,
			[]string{"already used by op op1, which failed: QEMU exited", "nothing was sent", newKey}, []string{sameKey}},
		{"failure that may have acted: the key is spent", reconcile.Result{OpID: "op1", State: journal.Failed, Error: "QEMU exited"}, nil,
			[]string{"FAILED in op op1: QEMU exited", "the key is used", newKey}, []string{sameKey, "did nothing"}},
		{"failure that did nothing: the key is unused", reconcile.Result{OpID: "op1", State: journal.Failed, Error: "VM is locked (backup)", KeyUnused: true, Attempt: 1}, nil,
			[]string{"FAILED in op op1: VM is locked (backup)", "Proxmox did nothing", "still unused", sameKey}, []string{newKey, "already used"}},
		{"a later attempt that did nothing", reconcile.Result{OpID: "op3", State: journal.Failed, Error: "VM is locked (backup)", KeyUnused: true, Attempt: 3}, nil,
			[]string{"FAILED in op op3 (attempt 3): VM is locked (backup)", sameKey}, []string{newKey}},
		{"a joined call that did nothing", reconcile.Result{OpID: "op1", State: journal.Failed, Error: "VM is locked (backup)", KeyUnused: true, Replayed: true}, nil,
			[]string{"Proxmox did nothing", sameKey}, []string{newKey, "already used"}},
		{"key used for another request", reconcile.Result{Key: "k"}, conflict,
			[]string{"refused, nothing was sent", "names stop on pve1/qemu/100", "needs a new key"}, []string{sameKey, "not run"}},
		{"refused before journaling", reconcile.Result{}, errors.New("vetoed"), []string{"not run: vetoed"}, []string{newKey, sameKey}},
		{"interrupted", reconcile.Result{OpID: "op1", State: journal.TaskRunning}, errors.New("interrupted"),
			[]string{"op op1 is task_running: interrupted"}, []string{newKey, sameKey}},
	} {
		got := OneShotText(op, tc.res, tc.err)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: OneShotText(%+v, %v) = %q, want it to contain %q", tc.name, tc.res, tc.err, got, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(got, n) {
				t.Errorf("%s: OneShotText(%+v, %v) = %q, should not say %q", tc.name, tc.res, tc.err, got, n)
			}
		}
	}
}

// The JSON record carries what a program needs to decide whether to ask
// again with the same key: key_unused and the attempt.
func TestOneShotJSON(t *testing.T) {
	op := reconcile.OneShot{Key: "k", Ref: web, Kind: reconcile.ActionStart}
	type record struct {
		Type   string `json:"type"`
		Key    string `json:"key"`
		Error  string `json:"error"`
		Result struct {
			State     string `json:"state"`
			KeyUnused bool   `json:"key_unused"`
			Attempt   int    `json:"attempt"`
			Replayed  bool   `json:"replayed"`
		} `json:"result"`
	}
	parse := func(res reconcile.Result, err error) record {
		t.Helper()
		var b bytes.Buffer
		New(&b, JSON).OneShot(op, res, err)
		var rec record
		if err := json.Unmarshal(b.Bytes(), &rec); err != nil || rec.Type != "oneshot" || rec.Key != "k" {
			t.Fatalf("oneshot record %q: %v", b.String(), err)
		}
		return rec
	}
	rec := parse(reconcile.Result{Key: "k", Ref: web, Kind: reconcile.ActionStart, OpID: "op2", State: journal.Failed,
		Error: "VM is locked (backup)", KeyUnused: true, Attempt: 2}, nil)
	if !rec.Result.KeyUnused || rec.Result.Attempt != 2 || rec.Result.State != "failed" {
		t.Errorf("a failure that did nothing: %+v", rec)
	}
	rec = parse(reconcile.Result{Key: "k", Ref: web, Kind: reconcile.ActionStart, OpID: "op1", State: journal.Failed,
		Error: "QEMU exited", Attempt: 1, Replayed: true}, nil)
	if rec.Result.KeyUnused || !rec.Result.Replayed || rec.Result.Attempt != 1 {
		t.Errorf("a spent key: %+v", rec)
	}
	rec = parse(reconcile.Result{Key: "k", Ref: web, Kind: reconcile.ActionStart},
		fmt.Errorf("%w: key \"k\" names stop on pve1/qemu/100", reconcile.ErrKeyConflict))
	if rec.Result.KeyUnused || rec.Error == "" || rec.Result.State != "" {
		t.Errorf("a key used for another request: %+v", rec)
	}
}

func TestRecoveryText(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, Text)
	p.Recovery(reconcile.RecoveryReport{Ops: []reconcile.RecoveredOp{
		{OpID: "op1", Ref: web, Kind: reconcile.ActionStart, From: journal.Started, To: journal.Succeeded, How: "task adopted"},
		{OpID: "op2", Ref: web, Kind: reconcile.ActionStop, From: journal.TaskRunning, How: "", Error: "node offline"},
	}}, errors.New("1 of 2 unresolved"))
	out := b.String()
	for _, want := range []string{"2 operations in flight", "pve1/qemu/100 start (op op1): started -> succeeded, task adopted",
		"UNRESOLVED", "node offline", "recover: 1 of 2 unresolved"} {
		if !strings.Contains(out, want) {
			t.Errorf("recovery lacks %q:\n%s", want, out)
		}
	}
	var js bytes.Buffer
	New(&js, JSON).Recovery(reconcile.RecoveryReport{Ops: []reconcile.RecoveredOp{{OpID: "op1", Ref: web}}}, nil)
	if !strings.Contains(js.String(), `"guest":"pve1/qemu/100"`) {
		t.Errorf("the JSON recovery record does not name the guest: %s", js.String())
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestErrKeepsTheFirstWriteError(t *testing.T) {
	p := New(failWriter{}, Text)
	p.Textf("a")
	p.Textf("b")
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Err = %v", err)
	}
}

func TestReportTextWithoutInSyncList(t *testing.T) {
	rep := reconcile.Report{Guests: []reconcile.GuestReport{{Ref: web, Outcome: reconcile.GuestInSync}}}
	if out := ReportText(1, rep, nil, false); strings.Contains(out, "pve1/qemu/100") {
		t.Errorf("a daemon's report lists guests in sync: %q", out)
	}
}

func TestWallClock(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, Text)
	p.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC) }
	p.SetWallClock()
	p.Event(reconcile.Event{Ref: web, Kind: reconcile.ActionStart, Phase: "start", At: p.now()})
	p.Report(7, reconcile.Report{}, nil, false)
	p.Shutdown("stopping")
	for _, want := range []string{"03:04:05.006  pve1/qemu/100", "03:04:05.006  pass 7:", "03:04:05.006  stopping"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

// Every JSON line carries the schema version, first, whatever its type.
func TestJSONLinesCarryTheSchema(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, JSON)
	p.Start(Start{Program: "agent"})
	p.Object(struct{}{})
	p.Object(map[string]int{"n": 1})
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if !strings.HasPrefix(line, `{"schema":1`) {
			t.Errorf("line without the schema first: %s", line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["schema"] != float64(SchemaVersion) {
			t.Errorf("line %s: %v, schema %v", line, err, m["schema"])
		}
	}
}

// A pass's JSON line is its summary, in seconds; the whole report only when
// asked for.
func TestReportLineIsASummary(t *testing.T) {
	rep := reconcile.Report{Duration: 1500 * time.Millisecond,
		Guests: []reconcile.GuestReport{{Outcome: reconcile.GuestInSync}}}
	for _, full := range []bool{false, true} {
		var b bytes.Buffer
		p := New(&b, JSON)
		p.SetFullReports(full)
		p.Report(1, rep, nil, false)
		var m map[string]any
		if err := json.Unmarshal(b.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		if m["duration_seconds"] != 1.5 || m["converged"] != true {
			t.Errorf("full=%v: %v", full, m)
		}
		if _, has := m["report"]; has != full {
			t.Errorf("full=%v: the whole report is there: %v", full, has)
		}
	}
}

// A pass over 500 guests, as the engine reports it: each phase from 0 to
// its total, every hundredth of the observe phase.
func progressOfPass(err error) []reconcile.Progress {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var out []reconcile.Progress
	add := func(ph reconcile.Phase, done, total int) {
		out = append(out, reconcile.Progress{Pass: 7, Phase: ph, Done: done, Total: total, Start: start,
			Elapsed: time.Duration(len(out)) * time.Millisecond})
	}
	add(reconcile.PhaseList, 0, 0)
	add(reconcile.PhaseList, 500, 500)
	for d := 0; d <= 500; d += 5 {
		add(reconcile.PhaseObserve, d, 500)
	}
	add(reconcile.PhasePlan, 0, 500)
	add(reconcile.PhasePlan, 500, 500)
	add(reconcile.PhaseAct, 0, 0)
	add(reconcile.PhaseDone, 500, 500)
	out[len(out)-1].Err = err
	return out
}

// JSON mode writes every progress event as a "progress" line carrying the
// schema; text mode writes a thinned few lines to the progress writer, and
// none without one.
func TestProgress(t *testing.T) {
	var js bytes.Buffer
	pj := New(&js, JSON)
	evs := progressOfPass(errors.New("listing guests: refused"))
	for _, ev := range evs {
		pj.Progress(ev)
	}
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	if len(lines) != len(evs) {
		t.Fatalf("%d JSON lines for %d events", len(lines), len(evs))
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m["schema"] != float64(SchemaVersion) || m["type"] != "progress" || m["pass"] != 7.0 ||
			m["phase"] != string(evs[i].Phase) || m["done"] != float64(evs[i].Done) || m["total"] != float64(evs[i].Total) {
			t.Fatalf("line %d: %s", i, l)
		}
		if _, ok := m["elapsed_seconds"].(float64); !ok {
			t.Fatalf("line %d has no elapsed_seconds: %s", i, l)
		}
		if (m["error"] != nil) != (evs[i].Err != nil) {
			t.Fatalf("line %d: error %v", i, m["error"])
		}
	}

	var stdout, progress bytes.Buffer
	pt := New(&stdout, Text)
	for _, ev := range evs {
		pt.Progress(ev) // no progress writer: nothing
	}
	pt.SetProgressWriter(&progress)
	for _, ev := range progressOfPass(nil) {
		pt.Progress(ev)
	}
	if stdout.Len() != 0 {
		t.Errorf("text progress went to the output: %q", stdout.String())
	}
	got := progress.String()
	// list's end, a line per tenth of observe (its end included), plan's
	// end, and done; not act, which had nothing to do.
	if n := strings.Count(got, "\n"); n != 1+10+1+1 {
		t.Errorf("%d progress lines, want 13:\n%s", n, got)
	}
	for _, want := range []string{"pass 7: list 500/500", "pass 7: observe 50/500", "pass 7: observe 500/500", "pass 7: plan 500/500", "pass 7: done, 500 guests"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "act") {
		t.Errorf("an act line for an act phase with nothing to do:\n%s", got)
	}
}
