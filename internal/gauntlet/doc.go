// Package gauntlet is guestward's reliability gauntlet: tests that abuse the
// whole stack (the agent, the reconcile engine, the journal, the Proxmox
// client) the way etcd and bbolt abuse theirs, and check the promises that
// matter to someone who trusts it with a cluster:
//
//   - no acknowledged operation is lost: what the journal records as done was
//     done, and what it records as failed did not succeed;
//   - no one-shot operation runs twice: every task Proxmox ran belongs to
//     exactly one journaled operation, and an idempotency key is spent once:
//     its request runs again only after attempts that proved Proxmox did
//     nothing, and the key refuses any other request;
//   - the fleet converges once the faults stop, within a bounded number of
//     passes, with nothing left in flight.
//
// The package holds no library code: everything is in its tests, and this
// file only documents them.
//
// # The four trials
//
// The crash loop (crash_test.go) builds the agent (examples/agent) and the
// one-shot program (examples/oneshot), runs them as child processes against
// a fake Proxmox VE cluster held by the test (package proxmoxtest), and
// kills them with SIGKILL, at random moments and at the engine's named
// checkpoints between journal steps (through the programs' test binaries,
// which arm failpoints there; the programs themselves cannot), over many
// iterations, while the desired state keeps changing; now and then the agent
// runs as a daemon and is stopped gracefully, or Proxmox drops one of its
// writes as well. After every restart
// it checks that the agent's recovery left nothing unresolved, and that the
// fake's tasks and the journals agree: no task without an operation, no
// operation with two tasks, no outcome recorded that did not happen. At the
// end the fleet must converge, and every one-shot key must have run at most
// once: a later attempt at a key only after attempts that did nothing.
//
// The fault storm (storm_test.go) runs the engine in the test process while
// the fake injects 5xx bursts, latency, connections dropped before and after
// handling, failing tasks, nodes dropping off the network, locks that appear
// between a read and a write, and a second writer that edits guests on its
// own goroutine all along, with one-shot operations arriving in the middle of
// passes. Besides the promises above it checks that every configuration
// write carried a digest the engine had read (so that Proxmox refuses it if
// the configuration changed), that the other writer's changes to options
// the desired state does not manage survive (no lost update), that retries
// stay within their bounds, and that no goroutine outlives the test.
//
// The bad-input battery (badinput_test.go, hostile_test.go) feeds malformed
// and hostile desired-state files, guest references and option values to
// the engine, and malformed or lying answers from a Proxmox impostor (a TLS
// server in front of the fake that rewrites chosen answers). Each must get
// a clear error, nothing malformed may reach Proxmox (the fake's request
// log is the witness), and nothing may crash. Its attacks on the
// connection (hostile_client_tls_test.go) redirect the client to plain
// http, present at an IP address a certificate the trusted CA issued for
// another host, hand the client HTTP clients that would turn verification
// off, ask for a shutdown timeout Proxmox cannot take, and print the
// client every way Go can: each is refused, and no credential leaves in
// clear text or is printed. Its lying answers that echo the request
// (hostile_client_answers_test.go) put the Authorization header or the
// secret into a UPID, a status field and a task's exit status, declare a
// 100 MB task list, send a gzip bomb, and answer a lost request's task
// search with a list that never ends: no piece of the secret may reach an
// error, the journal or a log line, and each answer costs no more memory
// and no more pages than the client's bounds. Its attacks from the file
// system (hostile_journal_file_test.go, hostile_journal_bolt_test.go) open
// each journal a second time by every other name (a symbolic link, a hard
// link, a linked directory, a path with ".."), plant links at the names the
// journals create, put a FIFO, a directory or a world-writable file at the
// path, and hand the bbolt journal damaged, truncated, foreign and randomly
// scribbled files: the second opener gets ErrLocked, nothing is written
// through a link, an unsafe path gets ErrUnsafePath, and a damaged file
// gets ErrCorrupt and is left as it was, without crashing the process.
//
// The load test (load_test.go) reconciles thousands of guests across
// several nodes with a known task latency and a concurrency limit, and
// reports the pass time and the achieved action rate against the
// theoretical one (tasks × task latency ÷ concurrency), with memory and
// goroutines bounded.
//
// # Running it
//
// By default each trial runs a bounded version, sized for CI on a 2-core
// machine under the race detector (.ci/run also runs the load test at full
// size without it). Flags, passed after the package:
//
//	go test ./internal/gauntlet -gauntlet.long            # the long version of every trial
//	go test ./internal/gauntlet -gauntlet.seed=N          # replay the random choices of a run
//	go test ./internal/gauntlet -gauntlet.figures=f.jsonl # append each trial's figures to f.jsonl
//	go test ./internal/gauntlet -v -run TestLoad          # the figures are also logged with -v
//
// A seed replays the choices (which guest, which fault, when to kill), not
// the interleavings of goroutines and processes, which the trials do not
// depend on: they wait for conditions, never for time.
package gauntlet
