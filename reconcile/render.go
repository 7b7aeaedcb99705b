package reconcile

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// refJSON is how a guest reference appears in JSON output.
type refJSON struct {
	Guest string            `json:"guest"`
	Node  string            `json:"node"`
	Type  proxmox.GuestType `json:"type"`
	VMID  int               `json:"vmid"`
}

func jsonRef(r proxmox.Ref) refJSON {
	return refJSON{Guest: r.String(), Node: r.Node, Type: r.Type, VMID: r.VMID}
}

// MarshalJSON renders the plan of one guest with its reference spelled out.
func (g GuestPlan) MarshalJSON() ([]byte, error) {
	type plain GuestPlan
	return json.Marshal(struct {
		refJSON
		plain
	}{jsonRef(g.Ref), plain(g)})
}

// MarshalJSON renders a plan as {"summary": {...}, "guests": [...]}.
func (r PlanResult) MarshalJSON() ([]byte, error) {
	inSync, act, skip := r.Count()
	guests := r.Guests
	if guests == nil {
		guests = []GuestPlan{}
	}
	return json.Marshal(struct {
		Summary summaryJSON `json:"summary"`
		Guests  []GuestPlan `json:"guests"`
	}{summaryJSON{InSync: inSync, Act: act, Skip: skip, Actions: len(r.Actions())}, guests})
}

type summaryJSON struct {
	InSync  int `json:"in_sync"`
	Act     int `json:"act"`
	Skip    int `json:"skip"`
	Actions int `json:"actions"`
}

// String renders the plan for a person; see [PlanResult.WriteText].
func (r PlanResult) String() string {
	var b strings.Builder
	_ = r.WriteText(&b)
	return b.String()
}

// WriteText writes the plan for a person: one block per guest that needs
// attention, with each differing option and why it differs, the power
// change and the actions in order, then one line per guest in sync, then a
// summary.
//
//	pve1/qemu/100: act
//	    memory current: desired "4096", actual "2048"
//	    net0 bridge: desired "vmbr1", actual "vmbr0"
//	    args: delete (now "-no-reboot")
//	    power: stopped -> running
//	    1. set_config pve1/qemu/100 memory=4096 net0=virtio,bridge=vmbr1 -args [reversible]
//	    2. start pve1/qemu/100 [reversible]
//	pve1/qemu/101: skip (locked): locked (backup)
//	pve1/lxc/200: in sync
//	3 guests: 1 in sync, 1 to change (2 actions), 1 skipped
func (r PlanResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	var inSync []GuestPlan
	for _, g := range r.Guests {
		switch g.Verdict {
		case InSync:
			inSync = append(inSync, g)
			continue
		case Skip:
			ew.printf("%s: skip (%s): %s\n", g.Ref, g.Reason, g.Detail)
			if len(g.Diffs) > 0 {
				writeDiffs(ew, g.Diffs)
			}
			continue
		}
		ew.printf("%s: %s\n", g.Ref, g.Verdict)
		writeDiffs(ew, g.Diffs)
		if g.Power != "" {
			ew.printf("    power: %s\n", g.Power)
		}
		for i, a := range g.Actions {
			ew.printf("    %d. %s [%s]\n", i+1, a, classText(a))
		}
	}
	for _, g := range inSync {
		if g.Detail != "" {
			ew.printf("%s: in sync (%s)\n", g.Ref, g.Detail)
		} else {
			ew.printf("%s: in sync\n", g.Ref)
		}
	}
	n, act, skip := r.Count()
	ew.printf("%s: %d in sync, %d to change (%s), %d skipped\n",
		plural(len(r.Guests), "guest"), n, act, plural(len(r.Actions()), "action"), skip)
	return ew.err
}

// classText is an action's class as the text renderings show it: the
// class, and for an irreversible action why.
func classText(a Action) string {
	switch {
	case a.Class == "":
		return "unclassified"
	case a.Why != "":
		return string(a.Class) + ": " + a.Why
	}
	return string(a.Class)
}

// plural writes a count with its noun, in the plural unless the count is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func writeDiffs(ew *errWriter, diffs []FieldDiff) {
	for _, d := range diffs {
		switch {
		case d.Desired == "":
			ew.printf("    %s: delete (now %q)\n", d.Field, d.Actual)
		case len(d.Details) > 0:
			for _, x := range d.Details {
				ew.printf("    %s\n", x)
			}
		case d.Actual == "":
			ew.printf("    %s: absent -> %q\n", d.Field, d.Desired)
		default:
			ew.printf("    %s: %q -> %q\n", d.Field, d.Actual, d.Desired)
		}
	}
}

// errWriter keeps the first write error, so that rendering code can print
// freely and report once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

// MarshalJSON renders a guest's report with its reference spelled out.
func (g GuestReport) MarshalJSON() ([]byte, error) {
	type plain GuestReport
	return json.Marshal(struct {
		refJSON
		plain
	}{jsonRef(g.Ref), plain(g)})
}

// MarshalJSON renders a recovered operation with its guest spelled out.
func (o RecoveredOp) MarshalJSON() ([]byte, error) {
	type plain RecoveredOp
	return json.Marshal(struct {
		refJSON
		plain
	}{jsonRef(o.Ref), plain(o)})
}

// String renders the report for a person; see [Report.WriteText].
func (r Report) String() string {
	var b strings.Builder
	_ = r.WriteText(&b)
	return b.String()
}

// WriteText writes the report for a person: one line per guest that was
// acted on, skipped or failed, with each action's outcome, then a summary
// line with the counts and the duration.
//
//	pve1/qemu/100: changed
//	    set_config succeeded (op 20261125T101500Z-9c1e..., task UPID:pve1:...)
//	    start succeeded (op 20261125T101500Z-77a0..., task UPID:pve1:...)
//	pve1/qemu/104: skipped (locked): locked (backup)
//	12 guests in 180ms: 8 in sync, 2 changed, 2 skipped; 3 actions sent, 3 succeeded
func (r Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	if r.DesiredErr != "" {
		ew.printf("warning: %s\n", r.DesiredErr)
	}
	for _, g := range r.Guests {
		switch g.Outcome {
		case GuestInSync:
			continue
		case GuestSkipped:
			ew.printf("%s: skipped (%s): %s\n", g.Ref, g.Reason, g.Detail)
			continue
		}
		if g.Detail != "" && g.Outcome != GuestChanged {
			ew.printf("%s: %s: %s\n", g.Ref, g.Outcome, g.Detail)
		} else {
			ew.printf("%s: %s\n", g.Ref, g.Outcome)
		}
		for _, a := range g.Actions {
			ew.printf("    %s %s", a.Action.Kind, a.Outcome)
			if a.Outcome == OutcomePlanned {
				ew.printf(" [%s]", classText(a.Action))
			}
			if a.OpID != "" {
				ew.printf(" (op %s", a.OpID)
				if a.UPID != "" {
					ew.printf(", task %s", a.UPID)
				}
				ew.printf(")")
			}
			if a.Error != "" && a.Outcome != OutcomeSucceeded {
				ew.printf(": %s", a.Error)
			}
			ew.printf("\n")
		}
	}
	counts := r.Count()
	sent, ok := r.Actions()
	var parts []string
	for _, o := range []GuestOutcome{GuestInSync, GuestChanged, GuestPlanned, GuestSkipped, GuestConflict, GuestVetoed, GuestFailed, GuestInterrupted, GuestNotStarted} {
		if counts[o] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[o], strings.ReplaceAll(string(o), "_", " ")))
		}
	}
	if len(parts) == 0 {
		parts = []string{"nothing declared"}
	}
	verb := "sent"
	if r.DryRun {
		verb = "planned"
	}
	ew.printf("%s in %s: %s; %s %s, %d succeeded\n", plural(len(r.Guests), "guest"),
		r.Duration.Round(time.Millisecond), strings.Join(parts, ", "), plural(sent, "action"), verb, ok)
	return ew.err
}
