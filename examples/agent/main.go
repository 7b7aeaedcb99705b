package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/output"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, the default behaviour comes back: a
		// second one ends the process at once, without waiting.
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// settings is the agent's configuration, from flags and the environment.
type settings struct {
	conn        cli.Conn
	logs        *cli.LogFlags
	output      cli.ChoiceFlag
	desired     string
	journal     string
	interval    time.Duration
	jitter      time.Duration
	concurrency int
	settle      time.Duration
	grace       time.Duration
	dryRun      bool
	allowIrrev  bool
	fullReports bool
	once        bool
	demo        bool
	demoPVE     string
	listen      string
	healthAddr  string
	hubKeys     string
	agentID     string
	keyIDs      []string // of the keys -hub-keys names, once read
	tlsCert     string
	tlsKey      string
	tlsClientCA string
	opsTLS      *tls.Config // for -listen, once read; nil without TLS
	healthTLS   *tls.Config // for -health-listen, once read; nil without TLS
}

func newFlags(stderr io.Writer) (*flag.FlagSet, *settings) {
	s := &settings{
		logs:   cli.NewLogFlags("warn"),
		output: cli.ChoiceFlag{Value: output.Text, Choices: []string{output.Text, output.JSON}},
	}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
	s.conn.Register(fs)
	fs.StringVar(&s.desired, "desired", "", "desired-state JSON `file`, read again whenever it changes (env GUESTWARD_DESIRED)")
	fs.StringVar(&s.journal, "journal", "", "journal `path`; .db, .bolt or .bbolt picks the bbolt backend, anything else the file backend (env GUESTWARD_JOURNAL)")
	fs.DurationVar(&s.interval, "interval", 30*time.Second, "time between the starts of two passes (env GUESTWARD_INTERVAL)")
	fs.DurationVar(&s.jitter, "jitter", 0, "random variation of -interval either way; 0 means a tenth of it (env GUESTWARD_JITTER)")
	fs.IntVar(&s.concurrency, "concurrency", 8, "guests observed and changed at once (env GUESTWARD_CONCURRENCY)")
	fs.DurationVar(&s.settle, "settle-delay", 10*time.Second,
		"how long after an interrupted write recovery waits before concluding it never reached Proxmox (env GUESTWARD_SETTLE_DELAY)")
	fs.DurationVar(&s.grace, "shutdown-grace", 30*time.Second,
		"on SIGINT or SIGTERM, how long to let running operations finish before stopping (env GUESTWARD_SHUTDOWN_GRACE)")
	fs.BoolVar(&s.dryRun, "dry-run", false, "plan and report, change nothing, and leave the journal alone (env GUESTWARD_DRY_RUN)")
	fs.BoolVar(&s.allowIrrev, "allow-irreversible", false, "perform actions that cannot be undone, such as growing a disk; without it such guests are skipped (env GUESTWARD_ALLOW_IRREVERSIBLE; -demo allows them)")
	fs.BoolVar(&s.once, "once", false, "recover, run one pass and exit: 0 converged, 3 not converged, 1 could not run")
	fs.Var(&s.output, "output", "what goes to stdout: text for a person, json for one JSON object per line (env GUESTWARD_OUTPUT)")
	fs.BoolVar(&s.fullReports, "full-reports", false, "with -output json: each pass's report line carries the whole report, guest by guest, not only the summary (env GUESTWARD_FULL_REPORTS)")
	fs.StringVar(&s.listen, "listen", "", "take operations signed by a hub, as POST "+OpsPath+" on this `address` (host:port; HTTPS with -tls-cert, else plain HTTP) (env GUESTWARD_LISTEN)")
	fs.StringVar(&s.healthAddr, "health-listen", "", "serve the engine's health as GET "+HealthPath+" on this `address` (host:port; HTTPS with -tls-cert, else plain HTTP; 127.0.0.1:port keeps it on this host) (env GUESTWARD_HEALTH_LISTEN)")
	fs.StringVar(&s.hubKeys, "hub-keys", "", "with -listen: PEM `file` of the hub public keys to trust, one PUBLIC KEY block each (env GUESTWARD_HUB_KEYS)")
	fs.StringVar(&s.agentID, "agent-id", "", "with -listen: this agent's `id`; operations signed for another id are refused (env GUESTWARD_AGENT_ID)")
	s.registerTLS(fs)
	s.logs.Register(fs)
	fs.BoolVar(&s.demo, "demo", false, "run the demonstration against an in-process fake Proxmox VE cluster; needs nothing else")
	fs.StringVar(&s.demoPVE, "demo-pve", "", "with -demo: the Proxmox VE `version` the fake cluster emulates, 7.4 to 9.0 (default 8.4.1)")
	return fs, s
}

const usageHead = `guestward agent: keep the Proxmox VE guests a desired-state file declares in that state.

Usage:
  agent -demo                       show it working against a fake cluster, no setup
  agent -url URL -token-id ID -desired FILE -journal PATH [flags]

The token secret comes from GUESTWARD_TOKEN_SECRET or a file (-token-secret-file),
never from a flag. Every flag can also be set by the environment variable named
in its description; a flag given on the command line wins.

Flags:
`

func bindings() []cli.Binding {
	b := cli.ConnBindings()
	b = append(b, cli.LogBindings()...)
	b = append(b, tlsBindings()...)
	return append(b,
		cli.Binding{Flag: "desired", Env: "GUESTWARD_DESIRED"},
		cli.Binding{Flag: "journal", Env: "GUESTWARD_JOURNAL"},
		cli.Binding{Flag: "interval", Env: "GUESTWARD_INTERVAL"},
		cli.Binding{Flag: "jitter", Env: "GUESTWARD_JITTER"},
		cli.Binding{Flag: "concurrency", Env: "GUESTWARD_CONCURRENCY"},
		cli.Binding{Flag: "settle-delay", Env: "GUESTWARD_SETTLE_DELAY"},
		cli.Binding{Flag: "shutdown-grace", Env: "GUESTWARD_SHUTDOWN_GRACE"},
		cli.Binding{Flag: "dry-run", Env: "GUESTWARD_DRY_RUN"},
		cli.Binding{Flag: "allow-irreversible", Env: "GUESTWARD_ALLOW_IRREVERSIBLE"},
		cli.Binding{Flag: "output", Env: "GUESTWARD_OUTPUT"},
		cli.Binding{Flag: "full-reports", Env: "GUESTWARD_FULL_REPORTS"},
		cli.Binding{Flag: "listen", Env: "GUESTWARD_LISTEN"},
		cli.Binding{Flag: "health-listen", Env: "GUESTWARD_HEALTH_LISTEN"},
		cli.Binding{Flag: "hub-keys", Env: "GUESTWARD_HUB_KEYS"},
		cli.Binding{Flag: "agent-id", Env: "GUESTWARD_AGENT_ID"},
	)
}

// run is the whole program: main only wires it to the process. A stop
// request (SIGINT, SIGTERM) ends ctx. It returns the exit code.
func run(ctx context.Context, args []string, env cli.LookupEnv, stdout, stderr io.Writer) int {
	// The log and the text progress lines both write to stderr, from
	// many goroutines: one lock keeps their lines whole.
	stderr = &lockedWriter{w: stderr}
	fs, s := newFlags(stderr)
	version := cli.RegisterVersion(fs)
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cli.ExitOK
		}
		return fail(stderr, err)
	}
	if *version {
		fmt.Fprintln(stdout, cli.Version("agent"))
		return cli.ExitOK
	}
	if err := cli.ApplyEnv(fs, env, bindings()); err != nil {
		return fail(stderr, err)
	}
	if err := s.validate(fs); err != nil {
		return fail(stderr, err)
	}
	verifier, err := s.verifier()
	if err != nil {
		return fail(stderr, err)
	}
	if err := s.loadTLS(); err != nil {
		return fail(stderr, err)
	}
	logger := s.logs.Logger(stderr)
	out := output.New(stdout, s.output.Value)
	out.SetFullReports(s.fullReports)
	var code int
	if s.demo {
		code = runDemo(ctx, s, verifier, logger, out, stderr)
	} else {
		code = runAgent(ctx, s, verifier, env, logger, out, stderr)
	}
	if err := out.Err(); err != nil && code == cli.ExitOK {
		fmt.Fprintf(stderr, "agent: writing the output: %v\n", err)
		return cli.ExitFailure
	}
	return code
}

// lockedWriter serializes the writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// fail reports err on stderr and returns the exit code its kind calls for.
func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "agent: %v\n", err)
	if cli.IsUsage(err) {
		fmt.Fprintln(stderr, "agent: run 'agent -h' for the flags and their environment variables")
		return cli.ExitUsage
	}
	return cli.ExitFailure
}

// validate checks what can be checked without I/O.
func (s *settings) validate(fs *flag.FlagSet) error {
	switch {
	case s.interval <= 0:
		return cli.Usagef("-interval must be positive, not %v", s.interval)
	case s.jitter < 0:
		return cli.Usagef("-jitter must not be negative, not %v", s.jitter)
	case s.jitter > s.interval:
		return cli.Usagef("-jitter %v exceeds -interval %v", s.jitter, s.interval)
	case s.concurrency < 1:
		return cli.Usagef("-concurrency must be at least 1, not %d", s.concurrency)
	case s.settle <= 0:
		return cli.Usagef("-settle-delay must be positive, not %v", s.settle)
	case s.grace < 0:
		return cli.Usagef("-shutdown-grace must not be negative, not %v", s.grace)
	case s.listen != "" && (s.hubKeys == "" || s.agentID == ""):
		return cli.Usagef("-listen takes signed operations: set -hub-keys (the hub keys to trust) and -agent-id (this agent's id) too")
	case s.listen == "" && (s.hubKeys != "" || s.agentID != ""):
		return cli.Usagef("-hub-keys and -agent-id apply only with -listen")
	case s.listen != "" && s.dryRun:
		return cli.Usagef("-listen runs operations, which a -dry-run agent does not")
	case s.listen != "" && s.once:
		return cli.Usagef("-listen serves until stopped; drop -once")
	case s.healthAddr != "" && s.once:
		return cli.Usagef("-health-listen serves until stopped; drop -once")
	case s.healthAddr != "" && s.demo:
		return cli.Usagef("-health-listen applies to the agent's daemon, not to -demo")
	}
	if err := s.validateTLS(); err != nil {
		return err
	}
	if s.demo {
		for _, name := range []string{"url", "token-id", "token-secret-file", "ca-file", "fingerprint", "desired", "journal", "dry-run", "once"} {
			if cli.Given(fs, name) {
				return cli.Usagef("-demo brings its own cluster, desired state and journal: drop -%s", name)
			}
		}
		return nil
	}
	if cli.Given(fs, "demo-pve") {
		return cli.Usagef("-demo-pve only applies with -demo")
	}
	if s.desired == "" {
		return cli.Usagef("no desired state: set -desired or GUESTWARD_DESIRED (a JSON file; see the reconcile package's FileProvider for the format)")
	}
	if s.journal == "" && !s.dryRun {
		return cli.Usagef("no journal: set -journal or GUESTWARD_JOURNAL (a path ending in .db, .bolt or .bbolt picks the bbolt backend, any other the file backend)")
	}
	return nil
}

// runAgent is the daemon (and -once): connect, open the journal, recover,
// then pass after pass until stopped.
func runAgent(ctx context.Context, s *settings, verifier *signedop.Verifier, env cli.LookupEnv, logger *slog.Logger, out *output.Printer,
	stderr io.Writer) int {
	client, err := s.conn.Client(env, logger)
	if err != nil {
		return fail(stderr, err)
	}
	defer client.CloseIdleConnections()

	provider, err := reconcile.NewFileProvider(s.desired)
	if err != nil {
		return fail(stderr, cli.Usagef("%v", err))
	}
	declared, err := provider.Desired(ctx)
	if err != nil {
		return fail(stderr, cli.Usagef("desired state: %v", err))
	}

	version, err := cli.Probe(ctx, client, s.conn.URL)
	if err != nil {
		if ctx.Err() != nil && !s.once {
			// A stop request before any work started: nothing to
			// finish, and a supervisor asked for exactly this.
			fmt.Fprintln(stderr, "agent: stopped on request before the first pass")
			return cli.ExitOK
		}
		return fail(stderr, err)
	}

	// A dry run changes nothing and writes no journal, so it does not open
	// one: it must not take the lock of a journal a running agent holds.
	var (
		jr      journal.Journal = journal.NewMemory()
		backend string
	)
	if !s.dryRun {
		jr, backend, err = cli.OpenJournal(s.journal, logger)
		if err != nil {
			return fail(stderr, err)
		}
	}
	code := serve(ctx, s, verifier, client, jr, provider, logger, out, startInfo{
		version: version.Version, backend: backend, declared: len(declared),
	}, stderr)
	if err := jr.Close(); err != nil {
		fmt.Fprintf(stderr, "agent: closing the journal: %v\n", err)
		if code == cli.ExitOK {
			code = cli.ExitFailure
		}
	}
	return code
}

type startInfo struct {
	version  string
	backend  string
	declared int
}

// serve runs the engine on an open journal and returns the exit code.
func serve(ctx context.Context, s *settings, verifier *signedop.Verifier, client *proxmox.Client, jr journal.Journal, provider reconcile.DesiredProvider,
	logger *slog.Logger, out *output.Printer, info startInfo, stderr io.Writer) int {
	// The engine works under work, which ends only once a stop request
	// has let running operations finish (see Engine.Drain below).
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	passes := 0
	cfg := reconcile.Config{
		Proxmox:     client,
		Journal:     jr,
		Provider:    provider,
		Concurrency: s.concurrency,
		Interval:    s.interval,
		Jitter:      s.jitter,
		DryRun:      s.dryRun,
		SettleDelay: s.settle,
		// Actions that cannot be undone (a disk grown) only when asked.
		AllowIrreversible: s.allowIrrev,
		// Lost answers are matched only to tasks this token started.
		TaskUser:   s.conn.TokenID,
		Logger:     logger,
		OnEvent:    out.Event,
		OnProgress: out.Progress,
		OnReport: func(rep reconcile.Report) {
			passes++ // Run calls OnReport from one goroutine, pass after pass
			out.Report(passes, rep, nil, false)
		},
	}
	engine, err := reconcile.NewEngine(cfg)
	if err != nil {
		return fail(stderr, cli.Usagef("%v", err))
	}
	// In text, progress goes beside the log: stdout keeps the records.
	out.SetProgressWriter(stderr)

	journalPath := s.journal
	if s.dryRun {
		journalPath = ""
	}
	out.Start(output.Start{Program: "agent", URL: s.conn.URL, ProxmoxVersion: info.version, Journal: journalPath,
		Backend: info.backend, Desired: s.desired, DryRun: s.dryRun, Interval: s.interval.String(), Once: s.once})
	mode := fmt.Sprintf("a pass every %v", s.interval)
	if s.once {
		mode = "one pass"
	}
	if s.dryRun {
		mode += ", dry run: nothing is changed"
	}
	out.SetWallClock()
	jdesc := fmt.Sprintf("journal %s (%s backend)", s.journal, info.backend)
	if s.dryRun {
		jdesc = "no journal"
	}
	out.Textf("guestward agent: Proxmox VE %s at %s; %s declared in %s; %s; %s",
		info.version, s.conn.URL, output.Count(info.declared, "guest"), s.desired, jdesc, mode)
	if s.healthAddr != "" {
		// Up before recovery: it answers 503 until recovery has completed.
		hs, err := startHealth(s.healthAddr, s.healthTLS, engine, logger)
		if err != nil {
			fmt.Fprintf(stderr, "agent: %v\n", err)
			return exit(out, cli.ExitFailure, err.Error())
		}
		// Stopped last (deferred first): it answers 503 while the engine
		// drains.
		defer hs.stop(healthGrace)
		hs.announce(out)
	}

	drained := make(chan struct{})
	go func() {
		defer close(drained)
		select {
		case <-ctx.Done():
		case <-work.Done():
			return
		}
		out.Shutdown(fmt.Sprintf("stopping: no new operation starts; waiting up to %v for running ones", s.grace))
		grace, cancelGrace := context.WithTimeout(work, s.grace)
		if err := engine.Drain(grace); err != nil {
			// Cancelling work interrupts them: they stay in flight in
			// the journal, and the next start's Recover resolves them.
			logger.Warn("operations still running at the end of the grace period are interrupted", "grace", s.grace)
		}
		cancelGrace()
		cancelWork()
	}()
	defer func() { cancelWork(); <-drained }()

	if !s.dryRun {
		rrep, rerr := engine.Recover(work)
		out.Recovery(rrep, rerr)
		if rerr != nil {
			if ctx.Err() != nil && !s.once {
				// Stopped on request: what is left stays in flight in
				// the journal, and the next start resolves it.
				return exit(out, cli.ExitOK, "stopped during recovery")
			}
			if s.once || ctx.Err() != nil {
				return exit(out, cli.ExitFailure, "recovery did not finish: "+rerr.Error())
			}
			// Run tries again before its first pass, and before every
			// pass until it succeeds; meanwhile a guest whose operation
			// is unresolved is left alone.
			logger.Error("recovery did not finish; retrying before each pass", "err", rerr)
		}
	}

	if verifier != nil {
		ops, err := startOps(s.listen, s.opsTLS, engine, verifier, logger)
		if err != nil {
			fmt.Fprintf(stderr, "agent: %v\n", err)
			return exit(out, cli.ExitFailure, err.Error())
		}
		// Stopped before the engine's work ends (deferred later, run
		// earlier): a request in progress is let finish within the grace.
		defer ops.stop(s.grace)
		ops.announce(out, s.agentID, s.keyIDs, "")
	}

	if s.once {
		rep, err := engine.ReconcileOnce(work)
		out.Report(1, rep, err, false)
		switch {
		case ctx.Err() != nil:
			return exit(out, cli.ExitFailure, "interrupted")
		case err != nil:
			return exit(out, cli.ExitFailure, err.Error())
		case !rep.Converged():
			return exit(out, cli.ExitNotConverged, "not every declared guest is in its declared state")
		}
		return exit(out, cli.ExitOK, "converged")
	}

	_ = engine.Run(work) // returns once work ends; the queue is drained by then
	if ctx.Err() == nil {
		// work ended without a stop request: cannot happen, but say so.
		return exit(out, cli.ExitFailure, "the engine stopped on its own")
	}
	return exit(out, cli.ExitOK, "stopped")
}

func exit(out *output.Printer, code int, reason string) int {
	out.Exit(code, reason)
	return code
}
