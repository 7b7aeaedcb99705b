// Package reconcile keeps Proxmox VE guests in their declared state: it
// reads the desired state, observes the guests, plans the smallest set of
// benign actions that closes the difference, and carries the plan out
// through a per-guest queue, journaling every step so that a crash is
// detected and resolved on restart.
//
// # The pieces, in the order a pass uses them
//
//  1. A [DesiredProvider] supplies the declared state: a [Desired] per guest,
//     naming only what is managed (some config options, the power state,
//     options that must be absent). [EmptyProvider] declares nothing, and an
//     engine using it never mutates anything; [StaticProvider] holds a state
//     in memory; [FileProvider] reads a JSON file and follows its changes.
//  2. The engine lists the cluster's guests once (node, type and power
//     state), then reads each declared guest with one request (its
//     configuration, digest, lock and pending changes, from Proxmox's
//     pending endpoint), a bounded number at a time overall
//     ([Config].Concurrency) and per node ([Config].NodeConcurrency,
//     [Config].NodeRate), through the small [Proxmox] interface that
//     *proxmox.Client implements. The list's power state can lag by
//     seconds, so before acting on a guest the engine reads its exact state
//     and plans it again: a stale list never causes a wrong action.
//  3. [Plan], a pure function, compares the two under the normalize rules
//     (so Proxmox's own rewriting of values is never mistaken for drift) and
//     decides, per guest: in sync; act (a SetConfig carrying only the
//     differing options and the observed digest, a Resize for each disk
//     declared larger than it is, and a Start or Stop placed around them);
//     or skip, with a reason, for guests that are missing, locked, of
//     another type or node, templates asked to run, of unknown power state,
//     with changes pending a restart, with a disk declared smaller than it
//     is ([SkipShrink]), or whose declaration would replace or remove a
//     disk ([SkipVolumeChange]).
//
// # Disks
//
// Proxmox reads a disk or mount point value in allocation syntax
// ("local-lvm:64") as a request for a new volume: sent for a slot that
// already holds one, it would give the guest an empty disk and detach the
// old one. The planner never sends that. A declared size is the size the
// existing disk must have: larger, it becomes an [ActionResize] (Proxmox's
// resize call, which only grows, to an absolute size); smaller, the guest
// is skipped, since Proxmox cannot shrink a disk; the declaration's other
// options (cache, discard, ...) are set on the volume the slot holds. A
// declaration naming another volume or storage, a cdrom or "none" in a slot
// holding a disk, or a disk listed in Delete would detach a volume, and
// skips the guest: creating, moving and removing disks is left to a person.
//  4. The engine submits each acting guest's actions as one job to the
//     shared queue (package queue), so that a guest is changed by one job at
//     a time, whatever asked for the change, and guests are changed in
//     parallel. Each action is journaled before Proxmox is called (intent),
//     when Proxmox answers with a task (its UPID), and when the outcome is
//     known; a QEMU configuration change is awaited as a task, an LXC one
//     completes synchronously.
//  5. A [Report] tells, per guest, what happened: in sync, changed, skipped
//     (with the reason), failed, vetoed by the [Policy], or in conflict (the
//     configuration changed under us, or a lock appeared: the next pass plans
//     the guest again).
//
// [Engine.Run] repeats passes at an interval, with jitter, and at once on
// [Engine.Trigger]; passes never overlap. [Engine.ReconcileGuests] runs a
// targeted pass over a few named guests, reading only them, and a Trigger
// naming guests asks Run for one. [Engine.Drain] stops it
// gracefully: nothing new is sent, and the operations already sent finish
// before Run's context is ended.
//
// # Progress and health
//
// [Config].OnProgress follows a pass through its phases ([Phase]: recover,
// list, observe, plan, act, done) with how many guests each has done out
// of how many, coalesced so that a pass over thousands of guests makes a
// few hundred calls, not thousands; [Config].OnEvent follows each action.
// [Engine.Status] is a snapshot any goroutine may take at any time without
// waiting for a pass: the last pass's summary, the pass in progress, the
// operations in flight and those left unresolved, whether recovery has
// completed, and the last error. [Engine.HealthHandler] serves it as JSON
// for a readiness probe: 503 until recovery has completed and once the
// engine drains, 200 otherwise, whatever the last pass found.
//
// # Crashes and at-most-once
//
// After a crash the journal holds, for every operation that was running, its
// intent and perhaps its task. [Engine.Recover] resolves each one before
// anything else mutates a guest: a recorded task is awaited and its outcome
// recorded; an intent without a task is matched against the node's task list
// (and, for an LXC configuration change, against the configuration), and is
// either adopted or recorded as never started. Nothing is sent twice: an
// operation is only ever re-sent when Proxmox has proved it did nothing.
// Passes and one-shot operations run Recover themselves first whenever an
// operation may be in flight. An operation it cannot resolve yet (its node
// does not answer) blocks its own guest, which passes skip with
// [SkipUnresolved] and Apply refuses with [ErrUnresolved]; the other guests
// are acted on. A task that does not end within [Config.TaskTimeout] is left
// in flight the same way, so one stuck node cannot hold up a pass.
//
// [Engine.Apply] runs a [OneShot] operation carrying an idempotency key at
// most once, ever: the key names one request, a later call with the same
// key returns the recorded outcome, and a call with the same key for
// another request is refused ([ErrKeyConflict]). A key is consumed once
// Proxmox may have acted; a failure that proves it did nothing (a locked
// guest, a stale digest, a refused request) leaves the key usable for the
// same request. The journal makes this hold across restarts and across
// engines sharing it. A one-shot operation is guarded as a pass's action
// is: the guest is observed first, and the [Policy] decides on what was
// observed.
//
// # Reversibility, the gate and revert
//
// Every action has a class ([Reversibility]): reversible when
// [Engine.Revert] can bring the guest back exactly where the action found
// it, irreversible otherwise. A pass performs an irreversible action only
// when [Config].AllowIrreversible is set (the guest is otherwise skipped
// with [SkipIrreversible], and the plan says which action and why); a
// one-shot only with [OneShot].AllowIrreversible (otherwise Apply refuses
// with [ErrIrreversible], and nothing is journaled or sent); a revert only
// with [RevertOptions].AllowIrreversible. Plans show each action's class,
// in JSON and in text. The classes, with the reason for each:
//
//   - start, stop, shutdown, reboot: reversible. Power leaves no lasting
//     change a later power action cannot undo.
//   - resize: irreversible. Proxmox refuses to shrink a disk.
//   - set_config, option by option (one irreversible option makes the
//     change irreversible):
//   - cipassword (QEMU), set or deleted: irreversible. Proxmox stores it
//     hashed and reads it back as "**********", so what was there can
//     never be written back.
//   - ostype (QEMU) without machine in the same change, on a guest with
//     no machine set: irreversible. Proxmox may pin the machine version
//     when the OS type changes, adding an option the change does not name.
//   - a QEMU device deleted while it is in an order= boot list, unless boot
//     is part of the change: irreversible. Proxmox takes it out of the boot
//     order as well.
//   - disks and mount points (QEMU ideN, sataN, scsiN, virtioN, efidisk0,
//     tpmstate0; LXC rootfs, mpN): setting new options on the volume the
//     slot already holds, at the same size, is reversible. Anything else
//     is irreversible: a value in an empty slot attaches or allocates a
//     volume, another volume id or allocation syntax detaches the old one,
//     a size change is a resize, and a QEMU cdrom drive may be appended to
//     the boot order unless boot is part of the change. Deleting an option
//     that holds a volume, or an unusedN option (Proxmox destroys the
//     volume), is never done, approved or not.
//   - unusedN, set: irreversible; unused volumes are Proxmox's to manage.
//   - every other option: reversible when its prior value is known and
//     bounded. Proxmox canonicalizes some values on write (tags are sorted
//     and lower-cased, a NIC gets a generated MAC, a large cpuunits is
//     clamped, a QEMU description loses its trailing blanks), but the
//     value it reads back is already canonical, so writing it back
//     restores the same configuration. A prior value longer than
//     [MaxPriorValue], or prior values that together would not fit in one
//     request to Proxmox, make the change irreversible.
//
// The intent record of a reversible configuration change journals the
// prior value of exactly the options it sets and deletes (or that they
// were absent), read from the configuration it was planned against; after
// it succeeds, the engine reads and journals the digest of the
// configuration it produced. Prior values are read as GET config returns
// them, with pending changes applied: for a change that went pending (a
// running VM, an option that cannot be hot-plugged), the prior values are
// those the configuration held with its pending changes, and a revert
// writes them back the same way. Proxmox drops a pending value equal to
// the current one, so a revert of a change still pending cancels it.
//
// [Engine.Revert] undoes a succeeded reversible operation: a configuration
// change by writing back the journaled prior values and deleting the
// options that were absent, guarded by the digest the change produced (a
// guest changed since is refused with [ErrRevertConflict]); a start by a
// clean shutdown, a stop or shutdown by a start, guarded by the guest
// still being in the state the operation left it in. A reboot leaves
// nothing to undo ([ErrNothingToRevert]). A revert is an operation like
// any other: journaled, through the guest's queue lane, the [Policy] and
// the engine's validation, at most once per operation, across restarts.
//
// # What the engine will not do
//
// It does not create, destroy, migrate or restart guests (a restart to apply
// pending changes is left to a person), never allocates, detaches, moves or
// shrinks a disk, never sends a change to a guest with changes already
// pending, never acts on a locked guest, and never changes an option the
// desired state does not name.
//
// # Several clusters in one process
//
// An engine drives one Proxmox VE cluster. A process that drives several
// makes one engine per cluster, each with its own client, journal (or its
// own journal file), provider and queue, sharing nothing: a vmid names a
// guest only within its cluster, so a shared queue or journal would make
// guest 100 of one cluster wait for, or be confused with, guest 100 of
// another. The engines run side by side, each with its own Run or passes.
//
// # HA-managed guests
//
// For a guest managed by Proxmox's HA stack, a start, stop or shutdown
// starts a task (hastart, hastop) that only hands the request to the HA
// manager, which changes the guest's state a moment later in a task of its
// own. The engine waits for the guest to reach the state asked for, for at
// most [Config].TaskTimeout after the request; and after a lost answer or a
// crash it looks for both kinds of task. Errors that leave it unknown
// whether Proxmox acted are resolved, not retried.
//
// # Metrics
//
// The engine reports through plain functions, with no metrics library:
// every pass's Report (Config.OnReport, or the return of ReconcileOnce) says
// how long each phase took (Report.Phases) and what became of each guest;
// Config.OnEvent is told of each operation's start, tasks and end, the last
// event carrying its outcome, duration and time spent waiting for Proxmox
// tasks, and of each operation Recover resolves (Event.Recovered). With
// queue.WithObserver, proxmox.WithRequestObserver and
// journal.Observe, these cover a pass from the desired state to the journal.
// The module github.com/guestward/guestward/otel turns them into
// OpenTelemetry metrics and spans.
package reconcile
