package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/demo"
	"github.com/guestward/guestward/examples/internal/output"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/normalize"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

// runDemo shows guestward at work for a person: a fake cluster with drifted
// guests, the plan, the actions as they run, the report, and a second pass
// that finds nothing left to do. It uses the agent's own building blocks:
// a client with a pinned fingerprint and a token, a FileProvider, a file
// journal, the engine. It returns 0 when everything went as it should.
func runDemo(ctx context.Context, s *settings, verifier *signedop.Verifier, logger *slog.Logger, out *output.Printer, stderr io.Writer) int {
	demoFail := func(code int, err error) int {
		fmt.Fprintf(stderr, "agent: %v\n", err)
		out.Exit(code, err.Error())
		return code
	}
	fleet, err := demo.Start(demo.Options{Version: s.demoPVE})
	if err != nil {
		return demoFail(cli.ExitUsage, err)
	}
	defer fleet.Close()

	dir, err := os.MkdirTemp("", "guestward-demo-")
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}
	defer os.RemoveAll(dir)
	desiredPath, err := demo.WriteDesired(dir)
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}
	journalPath := filepath.Join(dir, "journal")
	jr, err := journal.OpenFile(journalPath, journal.WithLogger(logger))
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}
	defer jr.Close()

	// The client reaches the fake cluster as it would a real one: over TLS,
	// with the server's self-signed certificate pinned by fingerprint and
	// an API token. Tasks are polled often, so progress shows promptly.
	client, err := fleet.Client(proxmox.WithLogger(logger), proxmox.WithTaskPolling(50*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}
	defer client.CloseIdleConnections()
	provider, err := reconcile.NewFileProvider(desiredPath)
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}
	declared, err := provider.Desired(ctx)
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}

	out.Start(output.Start{Program: "agent", URL: fleet.URL(), ProxmoxVersion: fleet.Version(), Journal: journalPath,
		Backend: cli.BackendFile, Desired: desiredPath, Demo: true})
	out.Textf("guestward demo: nothing to install, nothing leaves this machine")
	out.Textf("")
	out.Textf("A fake Proxmox VE %s cluster (nodes %s) runs in this process at %s, holding %d guests.",
		fleet.Version(), strings.Join(fleet.Nodes(), ", "), fleet.URL(), fleet.Guests())
	out.Textf("The agent reaches it as it would a real one: an API token, and the certificate pinned by its fingerprint.")
	out.Textf("  desired state  %s (%d guests; a copy of examples/internal/demo/desired.json)", desiredPath, len(declared))
	out.Textf("  journal        %s (file backend; removed when the demo ends)", journalPath)

	// A dry-run engine shows the plan first; it sends and journals nothing.
	// The demo fleet declares a disk larger than it is: growing it cannot be
	// undone (Proxmox cannot shrink a disk), which an engine does only when
	// allowed. The demo allows it, as -allow-irreversible does.
	planner, err := reconcile.NewEngine(reconcile.Config{Proxmox: client, Provider: provider, DryRun: true, Logger: logger,
		AllowIrreversible: true})
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}
	engine, err := reconcile.NewEngine(reconcile.Config{
		Proxmox: client, Journal: jr, Provider: provider, Logger: logger,
		OnEvent: out.Event, AllowIrreversible: true,
	})
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}
	defer engine.Queue().Close(context.WithoutCancel(ctx))

	out.SetIndent("   ")
	out.Textf("")
	out.Textf("1. Recover: resolve whatever a previous run left in flight")
	rrep, err := engine.Recover(ctx)
	out.Recovery(rrep, err)
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}

	out.Textf("")
	out.Textf("2. Plan, as a dry run: what differs after normalizing Proxmox's own rewriting")
	dry, err := planner.ReconcileOnce(ctx)
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}
	out.Plan(dry.Plan)
	if rw := rewrites(ctx, client, declared); len(rw) > 0 {
		out.Textf("")
		out.Textf("   Not drift: Proxmox rewrote these declared values, which still mean what was declared:")
		for _, line := range rw {
			out.Textf("     %s", line)
		}
		if memoryAsString(fleet.Version()) {
			out.Textf("     (and QEMU memory, which Proxmox VE %s sends as a JSON string, is compared as the number it is)", fleet.Version())
		}
	}

	total := len(dry.Plan.Actions())
	_, acting, _ := dry.Plan.Count()
	out.Textf("")
	out.Textf("3. Apply: %d actions on %d guests, one job per guest on the shared queue, each journaled before and after", total, acting)
	out.ExpectActions(total)
	out.ResetClock()
	first, err := engine.ReconcileOnce(ctx)
	out.ExpectActions(0)
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}

	out.Textf("")
	out.Textf("4. Report")
	out.Report(1, first, nil, true)

	out.Textf("")
	out.Textf("5. Second pass: nothing should be left to do")
	second, err := engine.ReconcileOnce(ctx)
	if err != nil {
		return demoFail(cli.ExitFailure, err)
	}
	out.Report(2, second, nil, true)

	if problem := judge(first, second); problem != "" {
		return demoFail(cli.ExitFailure, fmt.Errorf("the demo did not go as it should: %s", problem))
	}
	sent, _ := first.Actions()
	changed := first.Count()[reconcile.GuestChanged]
	out.Textf("")
	out.Textf("Done: %d actions changed %d guests, and the second pass sent nothing. The skipped guests wait", sent, changed)
	out.Textf("for a person: a backup holds a lock, a restart would apply pending changes, a guest does not exist.")
	if verifier == nil {
		out.Textf("Next: go run ./examples/plan -demo, go run ./examples/oneshot -demo, and the README.")
		return exit(out, cli.ExitOK, "demo complete")
	}
	return serveDemoOps(ctx, s, engine, verifier, logger, out, stderr)
}

// serveDemoOps takes signed operations for the demo fleet until the agent
// is stopped: the part of the demo examples/hub plays against.
func serveDemoOps(ctx context.Context, s *settings, engine *reconcile.Engine, verifier *signedop.Verifier,
	logger *slog.Logger, out *output.Printer, stderr io.Writer) int {
	ops, err := startOps(s.listen, s.opsTLS, engine, verifier, logger)
	if err != nil {
		fmt.Fprintf(stderr, "agent: %v\n", err)
		return exit(out, cli.ExitFailure, err.Error())
	}
	out.Textf("")
	out.Textf("6. Signed operations: a hub may now ask this agent for one-shot operations")
	ops.announce(out, s.agentID, s.keyIDs, "   ")
	out.Textf("   Try: go run ./examples/hub -demo -key HUB_KEY -agent %s://%s -agent-id %s", scheme(s.opsTLS), ops.addr, s.agentID)
	out.Textf("   Stop the agent with Ctrl-C.")
	<-ctx.Done()
	out.Shutdown("stopping: no new operation starts; waiting up to " + s.grace.String() + " for running ones")
	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.grace)
	defer cancel()
	_ = engine.Drain(grace) // new requests are answered 503 from here on
	ops.stop(s.grace)
	return exit(out, cli.ExitOK, "stopped")
}

// judge checks that the demo did what it promises; a failure here is a bug.
func judge(first, second reconcile.Report) string {
	for _, g := range first.Guests {
		switch g.Outcome {
		case reconcile.GuestInSync, reconcile.GuestChanged, reconcile.GuestSkipped:
		default:
			return fmt.Sprintf("%s ended %s: %s", g.Ref, g.Outcome, g.Detail)
		}
	}
	if sent, ok := first.Actions(); sent == 0 || sent != ok {
		return fmt.Sprintf("the first pass sent %d actions and %d succeeded", sent, ok)
	}
	if sent, _ := second.Actions(); sent != 0 {
		return fmt.Sprintf("the second pass sent %d actions", sent)
	}
	for _, g := range second.Guests {
		if g.Outcome != reconcile.GuestInSync && g.Outcome != reconcile.GuestSkipped {
			return fmt.Sprintf("in the second pass %s ended %s", g.Ref, g.Outcome)
		}
	}
	return ""
}

// rewrites lists the declared values that Proxmox holds in another spelling
// but the same meaning: what a naive string comparison would take for drift.
func rewrites(ctx context.Context, client *proxmox.Client, declared []reconcile.Desired) []string {
	ds := append([]reconcile.Desired(nil), declared...)
	sort.Slice(ds, func(i, j int) bool { return ds[i].Ref.VMID < ds[j].Ref.VMID })
	var lines []string
	for _, d := range ds {
		cfg, err := client.Config(ctx, d.Ref)
		if err != nil {
			continue // missing guests, for one
		}
		set := normalize.QEMU()
		if d.Ref.Type == proxmox.LXC {
			set = normalize.LXC()
		}
		fields := make([]string, 0, len(d.Config))
		for f := range d.Config {
			fields = append(fields, f)
		}
		sort.Strings(fields)
		for _, f := range fields {
			want, have := d.Config[f], cfg.Values[f]
			if want != have && set.Equal(f, want, have) {
				lines = append(lines, fmt.Sprintf("%-14s %-11s declared %-32q held as %q", d.Ref, f, want, have))
			}
		}
	}
	return lines
}

// memoryAsString reports whether a Proxmox VE version sends QEMU memory as a
// JSON string, as 8.1 and later do.
func memoryAsString(version string) bool {
	var major, minor int
	if _, err := fmt.Sscanf(version, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 8 || major == 8 && minor >= 1
}
