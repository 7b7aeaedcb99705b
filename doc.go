// Package guestward keeps Proxmox VE guests (QEMU virtual machines and LXC
// containers) in the state their owners declare. It is a library: the control
// core of a node agent or a control plane, not a program of its own.
//
// This package holds documentation only. The code lives in the packages listed
// below.
//
// # The model
//
// Every mutation of a guest, whatever asks for it (the reconcile loop, a
// one-shot operation from a hub, an operator's command), goes through one
// per-guest serializer: work on the same guest runs one job at a time, in the
// order it was submitted; work on different guests runs in parallel.
//
// A pure planner compares the declared desired state with the observed actual
// state, after normalizing the ways Proxmox rewrites values on a round trip
// (sorted tags, generated MAC addresses, re-printed property strings, trimmed
// descriptions, sizes in other units), and emits the minimal set of benign
// actions (Start, Stop, SetConfig) for guests present in both.
//
// The engine runs those actions on the shared serializer, waits for the
// Proxmox tasks they start, and records each operation in a durable journal
// before and after every side effect. After a crash every operation that was
// in flight is found and resolved, and a one-shot operation that carries an
// idempotency key runs at most once, across restarts. With no desired state the
// engine performs no mutation at all.
//
// # Packages
//
// Dependencies point downwards only:
//
//	reconcile          desired state, planner, engine, crash recovery, run loop
//	├── queue          per-key serializer (generic; knows nothing of Proxmox)
//	├── journal        durable operation journal, file and in-memory backends
//	│   ├── boltjournal   bbolt backend
//	│   └── journaltest   conformance suite every backend passes
//	├── normalize      canonical forms of Proxmox configuration values
//	└── proxmox        thin, safe Proxmox VE API client and vocabulary types
//	    └── proxmoxtest   in-process fake Proxmox VE server for tests
//
// queue, journal, normalize and proxmox do not import each other; reconcile
// composes them.
package guestward
