// Command plan prints what guestward would change to bring a cluster's
// guests into the state a desired-state file declares, and changes nothing:
// a dry run of one reconcile pass.
//
//	go run ./examples/plan -demo
//	go run ./examples/plan -demo -desired mine.json
//	go run ./examples/plan -url https://pve1:8006 -token-id 'guestward@pve!plan' -desired desired.json -output json
//
// With -demo it plans against the demonstration fleet that "agent -demo"
// uses (a fake Proxmox VE cluster in this process), with that fleet's
// desired state unless -desired names another file: a safe place to try a
// desired-state file of one's own. Otherwise it reads the cluster named by
// the connection flags, which are the agent's (see examples/agent); the API
// token needs only VM.Audit.
//
// Text output is reconcile.PlanResult.WriteText: per guest that needs
// attention, each differing option and why it differs, the power change,
// and the actions in order; then the guests in sync and a summary. JSON
// output is the plan as reconcile.PlanResult marshals it:
// {"summary": {...}, "guests": [...]}.
//
// Exit codes: 0 the plan was printed (whatever it says), 1 the cluster
// could not be read, 2 a setting is wrong. With -detailed-exitcode, as
// terraform plan has it, a script can tell from the code alone whether
// anything differs: 0 every declared guest is in sync, 2 some guest is not
// (actions are planned, or it is skipped for a reason the plan gives), 1
// anything went wrong, a wrong setting included.
//
// -version prints the program's version and exits.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/demo"
	"github.com/guestward/guestward/examples/internal/output"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// exitDiffers is the exit code of -detailed-exitcode when some guest is not
// in sync.
const exitDiffers = 2

func run(ctx context.Context, args []string, env cli.LookupEnv, stdout, stderr io.Writer) int {
	var details bool
	code, differs := runPlan(ctx, args, env, stdout, stderr, &details)
	switch {
	case !details:
		return code
	case code != cli.ExitOK:
		return cli.ExitFailure
	case differs:
		return exitDiffers
	}
	return cli.ExitOK
}

// runPlan does run's work. It sets *details from -detailed-exitcode, and
// reports whether the plan found a guest out of sync.
func runPlan(ctx context.Context, args []string, env cli.LookupEnv, stdout, stderr io.Writer, details *bool) (int, bool) {
	var (
		conn    cli.Conn
		desired string
		demoOn  bool
		demoPVE string
		allow   bool
		format  = cli.ChoiceFlag{Value: output.Text, Choices: []string{output.Text, output.JSON}}
		logs    = cli.NewLogFlags("warn")
	)
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "plan: print what guestward would change, and change nothing.\n\n"+
			"Usage:\n  plan -demo [-desired FILE]\n  plan -url URL -token-id ID -desired FILE [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	conn.Register(fs)
	fs.StringVar(&desired, "desired", "", "desired-state JSON `file` (env GUESTWARD_DESIRED); with -demo, the demo's own by default")
	fs.Var(&format, "output", "text for a person, json for the plan as JSON (env GUESTWARD_OUTPUT)")
	logs.Register(fs)
	fs.BoolVar(&demoOn, "demo", false, "plan against the in-process demonstration fleet")
	fs.BoolVar(&allow, "allow-irreversible", false, "plan actions that cannot be undone (disk resizes, ...) as an agent allowed to perform them would; without it such guests are skipped")
	fs.StringVar(&demoPVE, "demo-pve", "", "with -demo: the Proxmox VE `version` the fake cluster emulates (default 8.4.1)")
	fs.BoolVar(details, "detailed-exitcode", false, "exit 0 when every guest is in sync, 2 when some guest is not, 1 on any error")
	version := cli.RegisterVersion(fs)
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cli.ExitOK, false
		}
		return failPlan(stderr, err)
	}
	if *version {
		fmt.Fprintln(stdout, cli.Version("plan"))
		return cli.ExitOK, false
	}
	binds := append(cli.ConnBindings(), cli.LogBindings()...)
	binds = append(binds, cli.Binding{Flag: "desired", Env: "GUESTWARD_DESIRED"}, cli.Binding{Flag: "output", Env: "GUESTWARD_OUTPUT"})
	if demoOn {
		// The demo brings its own cluster; only an explicit -desired counts.
		binds = cli.LogBindings()
	}
	if err := cli.ApplyEnv(fs, env, binds); err != nil {
		return failPlan(stderr, err)
	}
	logger := logs.Logger(stderr)

	var (
		client *proxmox.Client
		where  string
		data   []byte
		err    error
	)
	if demoOn {
		for _, name := range []string{"url", "token-id", "token-secret-file", "ca-file", "fingerprint"} {
			if cli.Given(fs, name) {
				return failPlan(stderr, cli.Usagef("-demo brings its own cluster: drop -%s", name))
			}
		}
		fleet, err := demo.Start(demo.Options{Version: demoPVE})
		if err != nil {
			return failPlan(stderr, cli.Usagef("%v", err))
		}
		defer fleet.Close()
		if client, err = fleet.Client(proxmox.WithLogger(logger)); err != nil {
			return failPlan(stderr, err)
		}
		where = fmt.Sprintf("the demo fleet (a fake Proxmox VE %s cluster in this process)", fleet.Version())
		data = demo.DesiredJSON()
	} else {
		if cli.Given(fs, "demo-pve") {
			return failPlan(stderr, cli.Usagef("-demo-pve only applies with -demo"))
		}
		if desired == "" {
			return failPlan(stderr, cli.Usagef("no desired state: set -desired or GUESTWARD_DESIRED"))
		}
		if client, err = conn.Client(env, logger); err != nil {
			return failPlan(stderr, err)
		}
		v, err := cli.Probe(ctx, client, conn.URL)
		if err != nil {
			return failPlan(stderr, err)
		}
		where = fmt.Sprintf("Proxmox VE %s at %s", v.Version, conn.URL)
	}
	defer client.CloseIdleConnections()
	source := "the demo's desired state"
	if desired != "" {
		if data, err = os.ReadFile(desired); err != nil {
			return failPlan(stderr, cli.Usagef("desired state: %v", err))
		}
		source = desired
	}
	declared, err := reconcile.ParseDesiredJSON(data)
	if err != nil {
		return failPlan(stderr, cli.Usagef("desired state %s: %v", source, err))
	}
	provider, err := reconcile.NewStaticProvider(declared)
	if err != nil {
		return failPlan(stderr, cli.Usagef("desired state %s: %v", source, err))
	}

	// A dry-run engine observes the declared guests exactly as a real pass
	// does (list, then status, config and pending changes of each) and
	// plans, but journals and sends nothing: the memory journal it must be
	// given stays empty.
	engine, err := reconcile.NewEngine(reconcile.Config{Proxmox: client, Provider: provider, DryRun: true, Logger: logger, AllowIrreversible: allow})
	if err != nil {
		return failPlan(stderr, err)
	}
	rep, err := engine.ReconcileOnce(ctx)
	if err != nil {
		return failPlan(stderr, fmt.Errorf("reading the cluster: %w", err))
	}
	if format.Value == output.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep.Plan); err != nil {
			return failPlan(stderr, err)
		}
		return cli.ExitOK, !rep.Converged()
	}
	if _, err := fmt.Fprintf(stdout, "Plan for the %s declared in %s, against %s.\nNothing has been changed.\n\n",
		output.Count(len(declared), "guest"), source, where); err != nil {
		return failPlan(stderr, err)
	}
	if err := rep.Plan.WriteText(stdout); err != nil {
		return failPlan(stderr, err)
	}
	return cli.ExitOK, !rep.Converged()
}

func failPlan(stderr io.Writer, err error) (int, bool) { return fail(stderr, err), false }

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "plan: %v\n", err)
	if cli.IsUsage(err) {
		fmt.Fprintln(stderr, "plan: run 'plan -h' for the flags")
		return cli.ExitUsage
	}
	return cli.ExitFailure
}
