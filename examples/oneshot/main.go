// Command oneshot runs one operation on one guest at most once, ever: the
// operation carries an idempotency key, and a second run with the same key
// reports the recorded outcome instead of acting again, even after a
// restart, because the journal remembers the key.
//
//	go run ./examples/oneshot -demo
//	go run ./examples/oneshot -key deploy-4711/start-web-2 -guest pve1/qemu/101 -do start -journal /var/lib/guestward/journal
//	go run ./examples/oneshot -key resize-db -guest pve1/qemu/103 -do set_config -set memory=16384 -set cores=4 -journal j.db
//
// This is how a hub's request should reach a guest: the hub names the
// request (its request id, say), guestward journals the operation under
// that key before calling Proxmox, and a retried or duplicated request
// cannot start a second task. See reconcile.Engine.Apply.
//
// A key names one request: this guest, this action, these options. It is
// spent once Proxmox may have acted on the request, whether the operation
// then succeeded or failed; to try a spent request again, give it a new
// key. A failure that proves Proxmox did nothing (the guest was locked,
// the digest was stale, a power action found the guest in the other state,
// Proxmox refused the request before acting on it) leaves the key unused,
// and says so: the same command runs the request again. The same key with
// another request is refused, and nothing is sent.
//
// With -demo it runs against the demonstration fleet (a fake Proxmox VE
// cluster in this process) and shows it: the first run starts a stopped
// VM; the journal is closed and opened again, as by a restart; the second
// run with the same key sends nothing and says the key was already applied;
// and the fake server confirms that Proxmox ran one start task.
//
// Otherwise the connection flags, the journal flag and the environment are
// the agent's (see examples/agent); use the agent's journal path only when
// the agent is stopped, since a journal has one owner at a time. The
// operation goes through the same journal and recovery as the agent's: a
// run first resolves what a crashed run left in flight.
//
// With -revert OPID it undoes the succeeded operation OPID instead (see
// reconcile.Engine.Revert): a configuration change gets the values it
// replaced back, a start is shut down, a stop or shutdown is started. It is
// refused when the guest changed since (-force reverts against the guest
// as it is now), and for an operation that failed or cannot be undone. A
// revert, too, runs at most once: running the same -revert again reports
// the first revert's outcome.
//
//	go run ./examples/oneshot -revert 20261205T101500Z-9c1e0f2a3b4c5d6e -journal j.db
//
// An action that cannot be undone (a cipassword, a disk attached, ...) is
// refused unless -allow-irreversible approves it.
//
// Exit codes: 0 the operation (or revert) succeeded, now or in an earlier
// run with the same key (or of the same operation); 1 it failed, now or
// earlier (the output says whether the key is spent or still unused), was
// refused (an irreversible action without approval, a guest that changed
// since the operation to revert), or could not run; 2 a setting is wrong,
// a key already used for another request and an operation id the journal
// does not know included.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/demo"
	"github.com/guestward/guestward/examples/internal/output"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// kvFlag collects repeated key=value pairs.
type kvFlag map[string]string

func (m kvFlag) String() string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, " ")
}

func (m kvFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return errors.New("want option=value")
	}
	if _, dup := m[k]; dup {
		return fmt.Errorf("option %q given twice", k)
	}
	m[k] = val
	return nil
}

type settings struct {
	conn    cli.Conn
	logs    *cli.LogFlags
	output  cli.ChoiceFlag
	journal string
	key     string
	guest   string
	do      cli.ChoiceFlag
	set     kvFlag
	del     cli.ListFlag
	digest  string
	timeout time.Duration
	settle  time.Duration
	demo    bool
	revert  string
	force   bool
	allow   bool
}

func run(ctx context.Context, args []string, env cli.LookupEnv, stdout, stderr io.Writer) int {
	s := &settings{
		logs:   cli.NewLogFlags("warn"),
		output: cli.ChoiceFlag{Value: output.Text, Choices: []string{output.Text, output.JSON}},
		do: cli.ChoiceFlag{Choices: []string{string(reconcile.ActionStart), string(reconcile.ActionStop),
			string(reconcile.ActionShutdown), string(reconcile.ActionReboot), string(reconcile.ActionSetConfig)}},
		set: kvFlag{},
	}
	fs := flag.NewFlagSet("oneshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "oneshot: run one operation on one guest at most once per idempotency key.\n\n"+
			"Usage:\n  oneshot -demo\n  oneshot -key KEY -guest NODE/TYPE/VMID -do ACTION [-set k=v]... [-delete k,...] -journal PATH [connection flags]\n  oneshot -revert OP-ID [-force] -journal PATH [connection flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	s.conn.Register(fs)
	fs.StringVar(&s.journal, "journal", "", "journal `path`; .db, .bolt or .bbolt picks the bbolt backend (env GUESTWARD_JOURNAL)")
	fs.StringVar(&s.key, "key", "", "idempotency `key`: names this one request; once Proxmox may have acted on it, the key never runs again")
	fs.StringVar(&s.guest, "guest", "", "the guest, as `node/type/vmid`: pve1/qemu/100, pve2/lxc/200")
	fs.Var(&s.do, "do", "the `action`: start, stop, shutdown, reboot or set_config")
	fs.Var(s.set, "set", "with -do set_config: an `option=value` to set; repeat for more")
	fs.Var(&s.del, "delete", "with -do set_config: `options` to delete, comma-separated")
	fs.StringVar(&s.digest, "digest", "", "with -do set_config: refuse the change if the config's `digest` is no longer this")
	fs.DurationVar(&s.timeout, "timeout", 0, "with -do shutdown: how long the guest gets; 0 means Proxmox's default")
	fs.DurationVar(&s.settle, "settle-delay", 10*time.Second,
		"how long after an interrupted write recovery waits before concluding it never reached Proxmox (env GUESTWARD_SETTLE_DELAY)")
	fs.Var(&s.output, "output", "text for a person, json for one JSON object per line (env GUESTWARD_OUTPUT)")
	s.logs.Register(fs)
	fs.BoolVar(&s.demo, "demo", false, "show it against the in-process demonstration fleet")
	fs.StringVar(&s.revert, "revert", "", "undo the succeeded operation with this `op-id` instead (at most once)")
	fs.BoolVar(&s.force, "force", false, "with -revert: revert against the guest as it is now, even if it changed since the operation")
	fs.BoolVar(&s.allow, "allow-irreversible", false, "approve an action that cannot be undone")
	version := cli.RegisterVersion(fs)
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cli.ExitOK
		}
		return fail(stderr, err)
	}
	if *version {
		fmt.Fprintln(stdout, cli.Version("oneshot"))
		return cli.ExitOK
	}
	binds := append(cli.ConnBindings(), cli.LogBindings()...)
	binds = append(binds, cli.Binding{Flag: "journal", Env: "GUESTWARD_JOURNAL"},
		cli.Binding{Flag: "settle-delay", Env: "GUESTWARD_SETTLE_DELAY"}, cli.Binding{Flag: "output", Env: "GUESTWARD_OUTPUT"})
	if s.demo {
		binds = cli.LogBindings()
	}
	if err := cli.ApplyEnv(fs, env, binds); err != nil {
		return fail(stderr, err)
	}
	if s.settle <= 0 {
		return fail(stderr, cli.Usagef("-settle-delay must be positive, not %v", s.settle))
	}
	logger := s.logs.Logger(stderr)
	out := output.New(stdout, s.output.Value)
	var code int
	if s.demo {
		for _, name := range []string{"url", "token-id", "token-secret-file", "ca-file", "fingerprint", "journal", "key", "guest", "do", "set", "delete", "digest", "timeout", "revert", "force", "allow-irreversible"} {
			if cli.Given(fs, name) {
				return fail(stderr, cli.Usagef("-demo brings its own cluster, journal and operation: drop -%s", name))
			}
		}
		code = runDemo(ctx, s, logger, out, stderr)
	} else {
		code = runOnce(ctx, s, fs, env, logger, out, stderr)
	}
	if err := out.Err(); err != nil && code == cli.ExitOK {
		fmt.Fprintf(stderr, "oneshot: writing the output: %v\n", err)
		return cli.ExitFailure
	}
	return code
}

// operation builds the one-shot operation from the flags.
func (s *settings) operation(fs *flag.FlagSet) (reconcile.OneShot, error) {
	if s.revert != "" {
		for _, name := range []string{"key", "guest", "do", "set", "delete", "digest", "timeout"} {
			if cli.Given(fs, name) {
				return reconcile.OneShot{}, cli.Usagef("-revert names the operation to undo, and takes no -%s", name)
			}
		}
		return reconcile.OneShot{}, nil
	}
	if s.force {
		return reconcile.OneShot{}, cli.Usagef("-force applies only to -revert")
	}
	if s.key == "" {
		return reconcile.OneShot{}, cli.Usagef("no -key: every one-shot operation needs an idempotency key")
	}
	if s.guest == "" {
		return reconcile.OneShot{}, cli.Usagef("no -guest: name it as node/type/vmid, e.g. pve1/qemu/100")
	}
	ref, err := proxmox.ParseRef(s.guest)
	if err != nil {
		return reconcile.OneShot{}, cli.Usagef("-guest %q: %v", s.guest, err)
	}
	if s.do.Value == "" {
		return reconcile.OneShot{}, cli.Usagef("no -do: say start, stop, shutdown, reboot or set_config")
	}
	op := reconcile.OneShot{Key: s.key, Ref: ref, Kind: reconcile.ActionKind(s.do.Value), Digest: s.digest, Timeout: s.timeout,
		AllowIrreversible: s.allow}
	if len(s.set) > 0 {
		op.Set = s.set
	}
	op.Delete = s.del
	if err := op.Validate(); err != nil {
		return reconcile.OneShot{}, cli.Usagef("%v", err)
	}
	return op, nil
}

func runOnce(ctx context.Context, s *settings, fs *flag.FlagSet, env cli.LookupEnv, logger *slog.Logger, out *output.Printer,
	stderr io.Writer) int {
	op, err := s.operation(fs)
	if err != nil {
		return fail(stderr, err)
	}
	if s.journal == "" {
		return fail(stderr, cli.Usagef("no journal: set -journal or GUESTWARD_JOURNAL; it is what remembers the key"))
	}
	client, err := s.conn.Client(env, logger)
	if err != nil {
		return fail(stderr, err)
	}
	defer client.CloseIdleConnections()
	v, err := cli.Probe(ctx, client, s.conn.URL)
	if err != nil {
		return fail(stderr, err)
	}
	jr, backend, err := cli.OpenJournal(s.journal, logger)
	if err != nil {
		return fail(stderr, err)
	}
	out.Start(output.Start{Program: "oneshot", URL: s.conn.URL, ProxmoxVersion: v.Version, Journal: s.journal, Backend: backend})
	code, reason := apply(ctx, s, client, jr, logger, out, op)
	if err := jr.Close(); err != nil {
		fmt.Fprintf(stderr, "oneshot: closing the journal: %v\n", err)
		if code == cli.ExitOK {
			code, reason = cli.ExitFailure, "closing the journal: "+err.Error()
		}
	}
	out.Exit(code, reason)
	return code
}

// apply recovers what an earlier run left in flight, then applies op. It
// returns the exit code and the reason for it.
func apply(ctx context.Context, s *settings, client *proxmox.Client, jr journal.Journal, logger *slog.Logger,
	out *output.Printer, op reconcile.OneShot) (int, string) {
	engine, err := reconcile.NewEngine(reconcile.Config{Proxmox: client, Journal: jr, Logger: logger,
		SettleDelay: s.settle, TaskUser: s.conn.TokenID, OnEvent: out.Event})
	if err != nil {
		return cli.ExitFailure, err.Error()
	}
	defer engine.Queue().Close(context.WithoutCancel(ctx))
	rrep, err := engine.Recover(ctx)
	if len(rrep.Ops) > 0 || err != nil {
		out.Recovery(rrep, err)
	}
	if err != nil {
		return cli.ExitFailure, "recovery did not finish: " + err.Error()
	}
	if s.revert != "" {
		return revert(ctx, s, engine, out)
	}
	res, err := engine.Apply(ctx, op)
	out.OneShot(op, res, err)
	switch {
	case errors.Is(err, reconcile.ErrKeyConflict):
		// The request is fine; the key given for it is not.
		return cli.ExitUsage, "-key names another request; a new request needs a new key: " + err.Error()
	case err != nil:
		return cli.ExitFailure, err.Error()
	case !res.Applied() && res.KeyUnused:
		return cli.ExitFailure, "the operation failed, and Proxmox did nothing: the key is unused, and the same request may be sent again with it: " + res.Error
	case !res.Applied() && res.Replayed:
		return cli.ExitFailure, "the operation failed in an earlier run with this key; use a new key to try again: " + res.Error
	case !res.Applied():
		return cli.ExitFailure, "the operation failed, and the key is used; use a new key to try again: " + res.Error
	case res.Replayed:
		return cli.ExitOK, "already applied"
	}
	return cli.ExitOK, "applied"
}

// revert undoes the operation s.revert names. It returns the exit code and
// the reason for it.
func revert(ctx context.Context, s *settings, engine *reconcile.Engine, out *output.Printer) (int, string) {
	res, err := engine.RevertWith(ctx, s.revert, reconcile.RevertOptions{Force: s.force, AllowIrreversible: s.allow})
	out.Revert(s.revert, res, err)
	switch {
	case errors.Is(err, reconcile.ErrOpUnknown):
		return cli.ExitUsage, "-revert names no operation the journal knows: " + err.Error()
	case errors.Is(err, reconcile.ErrRevertConflict):
		return cli.ExitFailure, "the guest changed since the operation; nothing was sent (-force reverts anyway): " + err.Error()
	case err != nil:
		return cli.ExitFailure, err.Error()
	case !res.Applied() && res.KeyUnused:
		return cli.ExitFailure, "the revert failed, and Proxmox did nothing: it may be tried again: " + res.Error
	case !res.Applied():
		return cli.ExitFailure, "the revert failed; an operation is reverted at most once: " + res.Error
	case res.Replayed:
		return cli.ExitOK, "already reverted"
	}
	return cli.ExitOK, "reverted"
}

// runDemo runs one operation twice with the same key, reopening the journal
// in between as a restarted program would, and shows that Proxmox acted once.
func runDemo(ctx context.Context, s *settings, logger *slog.Logger, out *output.Printer,
	stderr io.Writer) int {
	demoFail := func(err error) int {
		fmt.Fprintf(stderr, "oneshot: %v\n", err)
		out.Exit(cli.ExitFailure, err.Error())
		return cli.ExitFailure
	}
	fleet, err := demo.Start(demo.Options{})
	if err != nil {
		return demoFail(err)
	}
	defer fleet.Close()
	client, err := fleet.Client(proxmox.WithLogger(logger), proxmox.WithTaskPolling(50*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		return demoFail(err)
	}
	defer client.CloseIdleConnections()
	dir, err := os.MkdirTemp("", "guestward-oneshot-demo-")
	if err != nil {
		return demoFail(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "journal")

	op := reconcile.OneShot{Key: "demo/ticket-4711/start-web-2", Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 101}, Kind: reconcile.ActionStart}
	out.Start(output.Start{Program: "oneshot", URL: fleet.URL(), ProxmoxVersion: fleet.Version(), Journal: path, Backend: cli.BackendFile, Demo: true})
	out.Textf("guestward one-shot demo, against a fake Proxmox VE %s cluster in this process", fleet.Version())
	out.Textf("  journal %s (file backend; removed when the demo ends)", path)
	out.SetIndent("   ")

	for i, title := range []string{
		fmt.Sprintf("Run 1: %s %s with key %q", op.Kind, op.Ref, op.Key),
		"Run 2: the same request again, after the journal was closed and opened anew, as after a restart",
	} {
		out.Textf("")
		out.Textf("%d. %s", i+1, title)
		jr, err := journal.OpenFile(path, journal.WithLogger(logger))
		if err != nil {
			return demoFail(err)
		}
		code, reason := apply(ctx, s, client, jr, logger, out, op)
		if err := jr.Close(); err != nil {
			return demoFail(err)
		}
		if code != cli.ExitOK {
			return demoFail(fmt.Errorf("run %d: %s", i+1, reason))
		}
	}
	starts := fleet.Server.TaskCount(op.Ref, "qmstart")
	st, _ := fleet.Server.Guest(op.Ref)
	out.Textf("")
	out.Textf("Across both runs Proxmox ran %d start task for %s. A retried or duplicated request cannot", starts, op.Ref)
	out.Textf("act twice; to run an operation again on purpose, give it a new key.")
	if starts != 1 || !st.Running {
		return demoFail(fmt.Errorf("expected exactly one start task and a running guest, got %d and running=%v", starts, st.Running))
	}
	out.Exit(cli.ExitOK, "demo complete")
	return cli.ExitOK
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "oneshot: %v\n", err)
	if cli.IsUsage(err) {
		fmt.Fprintln(stderr, "oneshot: run 'oneshot -h' for the flags")
		return cli.ExitUsage
	}
	return cli.ExitFailure
}
