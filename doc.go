// Package guestward keeps Proxmox VE guests (QEMU virtual machines and LXC
// containers) in the state their owners declare. It is a library: the control
// core of a node agent, a control plane or a hosting hub, not a program of its
// own (examples/agent is one, built on the public API).
//
// This package holds documentation only. The code lives in the packages listed
// below.
//
// # The model
//
// Every mutation of a guest, whatever asks for it (the reconcile loop, a
// one-shot operation from a hub, an operator's command), goes through one
// per-guest serializer: work on the same guest runs one job at a time, in the
// order it was submitted; work on different guests runs in parallel, taking
// turns so that a busy guest cannot starve the others.
//
// A pure planner compares the declared desired state with the observed actual
// state, after normalizing the ways Proxmox rewrites values on a round trip
// (sorted tags, generated MAC addresses, re-printed property strings, trimmed
// descriptions, allocated disks, numbers sent as strings), and emits the
// minimal set of benign actions (Start, Stop, SetConfig) for guests present
// in both. Only what is declared is managed: an option the desired state does
// not name is never compared or changed. Guests that are locked, have changes
// pending a restart, or do not exist are reported, not acted on.
//
// The engine runs those actions on the shared serializer, waits for the
// Proxmox tasks they start, and records each operation in a durable journal
// before and after every side effect: its intent before Proxmox is called, its
// task as soon as Proxmox answers, its outcome when the task ends. After a
// crash every operation that was in flight is found and resolved before
// anything else changes a guest, and a one-shot operation that carries an
// idempotency key runs at most once, across restarts. With no desired state
// the engine performs no mutation at all.
//
// # Who calls what, in order
//
//  1. Build a client with proxmox.New: an API token, and the server
//     certificate pinned by fingerprint (proxmox.WithFingerprint) or trusted
//     through a CA pool. TLS verification cannot be turned off.
//  2. Open the journal: journal.OpenFile, or boltjournal.Open. One process
//     owns a journal at a time; close it last.
//  3. Choose a desired-state provider: reconcile.NewFileProvider for a JSON
//     file that is read again when it changes, reconcile.NewStaticProvider
//     for a state held in memory, or your own reconcile.DesiredProvider.
//  4. reconcile.NewEngine with those three; share Engine.Queue with any other
//     code that changes guests.
//  5. Engine.Recover, before anything else: it resolves what a crash left in
//     flight. (Passes and Apply run it themselves whenever an operation may
//     be in flight, and leave alone a guest whose operation it cannot
//     resolve yet.)
//  6. Engine.Run until the context ends, or Engine.ReconcileOnce for one
//     pass; Engine.Apply for one-shot operations, at any time, concurrently.
//  7. To stop gracefully, Engine.Shutdown (nothing new is sent; operations
//     already sent finish; Run returns), then close the journal.
//
// What guestward will not do: create, destroy, migrate or restart guests;
// stack changes on a guest whose changes wait for a restart; act on a locked
// guest; send again a write whose outcome is unknown.
//
// # Packages
//
// Dependencies point downwards only:
//
//	reconcile/signedop one-shot operations a hub signs (EdDSA JWS), verified and run through the engine
//	reconcile          desired state, planner, engine, crash recovery, run loop, one-shot operations
//	├── queue          per-key serializer (generic; knows nothing of Proxmox)
//	├── journal        durable operation journal: the contract, file and in-memory backends
//	│   ├── boltjournal   bbolt backend (the only importer of bbolt)
//	│   └── journaltest   conformance suite every backend passes
//	├── normalize      when a declared and a reported configuration value mean the same
//	└── proxmox        thin, safe Proxmox VE API client and vocabulary types (Ref, UPID, ...)
//	    └── proxmoxtest   in-process fake Proxmox VE cluster for tests, with fault injection
//
//	examples/agent     a node-agent daemon on the public API; -demo runs against the fake cluster
//	examples/plan      a dry run: the plan for a desired-state file, as text or JSON
//	examples/oneshot   one operation, at most once per idempotency key
//	examples/gwjournal inspect, verify, repair and compact a journal of either backend
//	examples/hub       signs operations and sends them to an agent that takes them (agent -listen)
//
// queue, journal, normalize and proxmox do not import each other; reconcile
// composes them, and declares the small interface it needs from Proxmox
// (reconcile.Proxmox), which *proxmox.Client implements.
//
// # Guarantees
//
// Ordering: one guest's changes, from any source, run one at a time in
// submit order. Durability: a journal record is on disk before Append
// returns; a torn final record is dropped on open, damage elsewhere is
// reported (journal.ErrCorrupt), never skipped. At most once: nothing is sent
// twice unless Proxmox proved it did nothing; an idempotency key is never run
// again, whatever its outcome. The limits of these guarantees (a task whose
// log Proxmox rotated away, tasks started by others in the same window,
// disks that do not honour fsync) are spelled out in the README.
//
// # A complete example
//
// A node agent: it resolves what a crash left in flight, then keeps the
// guests declared in a file in their declared state until it is stopped.
//
//	package main
//
//	import (
//		"context"
//		"errors"
//		"log/slog"
//		"os"
//		"os/signal"
//		"syscall"
//
//		"github.com/guestward/guestward/journal"
//		"github.com/guestward/guestward/proxmox"
//		"github.com/guestward/guestward/reconcile"
//	)
//
//	func main() {
//		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//		defer stop()
//		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
//		if err := run(ctx, log); err != nil {
//			log.Error("agent stopped", "err", err)
//			os.Exit(1)
//		}
//	}
//
//	func run(ctx context.Context, log *slog.Logger) error {
//		client, err := proxmox.New("https://pve1.example.com:8006",
//			proxmox.WithAPIToken("guestward@pve!agent", os.Getenv("GUESTWARD_TOKEN_SECRET")),
//			proxmox.WithFingerprint(os.Getenv("GUESTWARD_FINGERPRINT")))
//		if err != nil {
//			return err
//		}
//		jnl, err := journal.OpenFile("/var/lib/guestward/journal")
//		if err != nil {
//			return err
//		}
//		defer jnl.Close()
//		desired, err := reconcile.NewFileProvider("/etc/guestward/desired.json")
//		if err != nil {
//			return err
//		}
//		engine, err := reconcile.NewEngine(reconcile.Config{
//			Proxmox:  client,
//			Journal:  jnl,
//			Provider: desired,
//			Logger:   log,
//			OnReport: func(r reconcile.Report) {
//				sent, ok := r.Actions()
//				log.Info("pass", "converged", r.Converged(), "actions", sent, "succeeded", ok)
//			},
//		})
//		if err != nil {
//			return err
//		}
//		if _, err := engine.Recover(ctx); err != nil && !errors.Is(err, reconcile.ErrUnresolved) {
//			return err // the journal could not be read
//		}
//		if err := engine.Run(ctx); err != nil && ctx.Err() == nil {
//			return err
//		}
//		return nil // stopped on request
//	}
//
// The package examples run the same pieces against the fake cluster of
// package proxmoxtest, and their output is checked by go test.
//
// # Where to start
//
// Run go run ./examples/agent -demo, read the reconcile package
// documentation, then examples/agent. Tests of your own code can run the real
// client against proxmoxtest.NewServer, as every test in this module does.
package guestward
