package reconcile

import (
	"encoding/json"
	"errors"
	"maps"
	"sync"
	"time"
)

// Status is a snapshot of what an engine is doing and has done, from
// [Engine.Status]. It is a plain value: its maps and pointers are copies
// the caller owns.
//
// It marshals to JSON with stable member names (snake case); times are
// RFC 3339, and durations are numbers of seconds in members whose names
// end in "_seconds". An error is its message. The JSON form is for
// reading (a health probe, a dashboard); a program in Go reads Status
// itself.
type Status struct {
	// At is when the snapshot was taken.
	At time.Time
	// Recovered is set once a recovery ([Engine.Recover], the one Run
	// starts with, or the one a pass or one-shot runs first) has looked
	// at every operation the journal held in flight, at RecoveredAt. It
	// may have left some unresolved (see Unresolved); until then, the
	// engine does not know what a previous process left in flight. A
	// dry-run engine without a journal has nothing to recover, and is
	// recovered from the start.
	Recovered   bool
	RecoveredAt time.Time
	// Draining is set once [Engine.Drain] (or Shutdown) was called;
	// ShutDown once [Engine.Shutdown] has drained the engine and ended Run.
	Draining, ShutDown bool
	// InFlight is the number of operations being carried out right now,
	// by passes and one-shots: journaled or about to be, and not yet
	// ended.
	InFlight int
	// Unresolved is the number of operations the journal holds in flight
	// that no call of this engine is carrying out: what the next Recover
	// has to resolve. It counts those the latest recovery left
	// unresolved, and those this engine left in flight since (a task that
	// outlived TaskTimeout, a lost answer, an ended context). Before the
	// first recovery it counts only the latter.
	Unresolved int
	// Pass is the pass in progress, nil when none runs.
	Pass *Progress
	// LastPass summarizes the latest pass that ran to its end (or could
	// not act); nil before the first.
	LastPass *PassSummary
	// LastError is the latest error of a pass that could not act, or of a
	// recovery; nil if there was none. A later success does not clear
	// it: compare its time with LastPass.
	LastError *ErrorStatus
}

// PassSummary is what [Status] keeps of a pass's [Report].
type PassSummary struct {
	Pass     int
	Targeted bool
	DryRun   bool
	Start    time.Time
	Duration time.Duration
	// Listed, Observed and Guests are Report.Listed, Report.Observed and
	// the number of guests in the report.
	Listed, Observed, Guests int
	// Counts is Report.Count; Sent and Succeeded are Report.Actions.
	Counts          map[GuestOutcome]int
	Sent, Succeeded int
	Converged       bool
	// Err is the error of a pass that could not act.
	Err error
}

// ErrorStatus is an error with where and when it happened.
type ErrorStatus struct {
	// Source is "pass" or "recover".
	Source string
	Err    error
	At     time.Time
}

// summarize makes the status's summary of a pass.
func summarize(seq int, targeted bool, rep Report, err error) PassSummary {
	sent, ok := rep.Actions()
	return PassSummary{
		Pass: seq, Targeted: targeted, DryRun: rep.DryRun, Start: rep.Start, Duration: rep.Duration,
		Listed: rep.Listed, Observed: rep.Observed, Guests: len(rep.Guests),
		Counts: rep.Count(), Sent: sent, Succeeded: ok, Converged: err == nil && rep.Converged(), Err: err,
	}
}

// engineStatus is what Status reports that the engine keeps nowhere
// else. Its lock is only ever held for a few assignments: never while
// calling out, never while waiting.
type engineStatus struct {
	mu          sync.Mutex
	seq         int      // passes started
	pass        Progress // in progress, if running
	running     bool
	last        *PassSummary // replaced, never changed in place
	lastErr     *ErrorStatus
	recovered   bool
	recoveredAt time.Time
	// unresolved holds the ids of the operations the journal holds in
	// flight that no call is carrying out, as far as this engine knows.
	unresolved map[string]struct{}
}

// Status returns a snapshot of the engine's state: the latest pass, the
// pass in progress and its phase, the operations in flight and those left
// unresolved, whether recovery has completed, and the latest error. It is
// cheap (no I/O), safe for concurrent use, and never waits for a pass: a
// health check or a metrics scrape may call it as often as it likes,
// from OnProgress or OnEvent too.
func (e *Engine) Status() Status {
	s := Status{At: e.cfg.Now()}
	e.opsMu.Lock()
	s.InFlight, s.Draining = e.active, e.draining
	select {
	case <-e.shutdown:
		s.ShutDown = true
	default:
	}
	e.opsMu.Unlock()

	e.st.mu.Lock()
	s.Recovered, s.RecoveredAt = e.st.recovered, e.st.recoveredAt
	s.Unresolved = len(e.st.unresolved)
	if e.st.running {
		p := e.st.pass
		p.Elapsed = s.At.Sub(p.Start)
		s.Pass = &p
	}
	if e.st.last != nil {
		l := *e.st.last
		l.Counts = maps.Clone(l.Counts)
		s.LastPass = &l
	}
	if e.st.lastErr != nil {
		le := *e.st.lastErr
		s.LastError = &le
	}
	e.st.mu.Unlock()
	return s
}

// leftInFlight notes an operation this engine left in flight: Recover has
// to resolve it.
func (e *Engine) leftInFlight(opID string) {
	e.st.mu.Lock()
	defer e.st.mu.Unlock()
	if e.st.unresolved == nil {
		e.st.unresolved = make(map[string]struct{})
	}
	e.st.unresolved[opID] = struct{}{}
}

// recoveryStarted returns the operations known to be unresolved when a
// recovery starts: its reading of the journal sees them all.
func (e *Engine) recoveryStarted() map[string]struct{} {
	e.st.mu.Lock()
	defer e.st.mu.Unlock()
	return maps.Clone(e.st.unresolved)
}

// recoveryEnded updates the status after a recovery that started when
// before were known unresolved. A recovery that looked at every operation
// (it succeeded, or left some unresolved) replaces what was known then;
// either way, what it resolved is no longer unresolved and what it could
// not resolve is, and operations left in flight while it ran stay.
func (e *Engine) recoveryEnded(before map[string]struct{}, rep RecoveryReport, err error) {
	complete := err == nil || errors.Is(err, ErrUnresolved)
	now := e.cfg.Now()
	e.st.mu.Lock()
	defer e.st.mu.Unlock()
	if e.st.unresolved == nil {
		e.st.unresolved = make(map[string]struct{})
	}
	if complete {
		for id := range before {
			delete(e.st.unresolved, id)
		}
		e.st.recovered, e.st.recoveredAt = true, now
	}
	for _, o := range rep.Ops {
		if o.To != "" {
			delete(e.st.unresolved, o.OpID)
		} else {
			e.st.unresolved[o.OpID] = struct{}{}
		}
	}
	if err != nil {
		e.st.lastErr = &ErrorStatus{Source: "recover", Err: err, At: now}
	}
}

// The JSON forms of Status and its parts: stable member names, durations
// in seconds.
type (
	statusJSON struct {
		At          time.Time        `json:"at"`
		Recovered   bool             `json:"recovered"`
		RecoveredAt *time.Time       `json:"recovered_at,omitempty"`
		Draining    bool             `json:"draining"`
		ShutDown    bool             `json:"shut_down"`
		InFlight    int              `json:"in_flight"`
		Unresolved  int              `json:"unresolved"`
		Pass        *progressJSON    `json:"pass,omitempty"`
		LastPass    *passSummaryJSON `json:"last_pass,omitempty"`
		LastError   *errorJSON       `json:"last_error,omitempty"`
	}
	progressJSON struct {
		Pass           int       `json:"pass"`
		Targeted       bool      `json:"targeted,omitempty"`
		Phase          Phase     `json:"phase"`
		Done           int       `json:"done"`
		Total          int       `json:"total"`
		Start          time.Time `json:"start"`
		ElapsedSeconds float64   `json:"elapsed_seconds"`
		Error          string    `json:"error,omitempty"`
	}
	passSummaryJSON struct {
		Pass            int                  `json:"pass"`
		Targeted        bool                 `json:"targeted,omitempty"`
		DryRun          bool                 `json:"dry_run,omitempty"`
		Start           time.Time            `json:"start"`
		DurationSeconds float64              `json:"duration_seconds"`
		Listed          int                  `json:"listed"`
		Observed        int                  `json:"observed"`
		Guests          int                  `json:"guests"`
		Counts          map[GuestOutcome]int `json:"counts"`
		Sent            int                  `json:"actions_sent"`
		Succeeded       int                  `json:"actions_succeeded"`
		Converged       bool                 `json:"converged"`
		Error           string               `json:"error,omitempty"`
	}
	errorJSON struct {
		Source string    `json:"source"`
		Error  string    `json:"error"`
		At     time.Time `json:"at"`
	}
)

// MarshalJSON writes the status with the member names its doc promises.
func (s Status) MarshalJSON() ([]byte, error) {
	out := statusJSON{At: s.At, Recovered: s.Recovered, Draining: s.Draining, ShutDown: s.ShutDown,
		InFlight: s.InFlight, Unresolved: s.Unresolved}
	if !s.RecoveredAt.IsZero() {
		out.RecoveredAt = &s.RecoveredAt
	}
	if s.Pass != nil {
		p := progressToJSON(*s.Pass)
		out.Pass = &p
	}
	if l := s.LastPass; l != nil {
		out.LastPass = &passSummaryJSON{Pass: l.Pass, Targeted: l.Targeted, DryRun: l.DryRun, Start: l.Start,
			DurationSeconds: l.Duration.Seconds(), Listed: l.Listed, Observed: l.Observed, Guests: l.Guests,
			Counts: l.Counts, Sent: l.Sent, Succeeded: l.Succeeded, Converged: l.Converged, Error: errText(l.Err)}
		if out.LastPass.Counts == nil {
			out.LastPass.Counts = map[GuestOutcome]int{}
		}
	}
	if le := s.LastError; le != nil {
		out.LastError = &errorJSON{Source: le.Source, Error: errText(le.Err), At: le.At}
	}
	return json.Marshal(out)
}

// MarshalJSON writes the progress as the JSON form of [Status] does:
// "pass", "targeted", "phase", "done", "total", "start",
// "elapsed_seconds", and "error" when Err is set.
func (p Progress) MarshalJSON() ([]byte, error) { return json.Marshal(progressToJSON(p)) }

func progressToJSON(p Progress) progressJSON {
	return progressJSON{Pass: p.Pass, Targeted: p.Targeted, Phase: p.Phase, Done: p.Done, Total: p.Total,
		Start: p.Start, ElapsedSeconds: p.Elapsed.Seconds(), Error: errText(p.Err)}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
