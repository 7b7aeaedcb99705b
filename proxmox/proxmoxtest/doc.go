// Package proxmoxtest is an in-process fake Proxmox VE cluster for tests:
// a TLS server on loopback that speaks Proxmox's JSON API for the guest
// operations guestward uses, holds guests the way Proxmox holds them, runs
// tasks asynchronously, and misbehaves on request.
//
// It follows net/http/httptest: the double runs the real client code path
// over real HTTP, and [Server.Client] trusts the server's certificate. The
// behaviour it emulates is taken from Proxmox's own Perl sources, and the
// code names the function that decides each behaviour; where this package
// knowingly deviates, the "Limits" section says so.
//
// # Model
//
// A [Server] is a cluster of one or more nodes ([WithNodes]); the first node
// serves the API, the others are reached through it, as with Proxmox's
// request proxy. Each guest lives on one node and is held as Proxmox holds
// it:
//
//   - a config file with a current section and a pending section
//     ("[PENDING]" for QEMU, "[pve:pending]" for LXC; pending deletions as
//     its "delete:" line), serialized as Proxmox writes it and re-read as
//     Proxmox parses it, so description trimming and value normalisation
//     come out as on a real node;
//   - the digest: SHA-1 of that file text, changing on every write;
//   - the lock ("lock:" in the file) and the template flag ("template: 1");
//   - the power state, kept outside the file.
//
// GET config merges the pending section unless current=1; GET pending
// returns Proxmox's key/value/pending/delete items. Power actions and QEMU
// config updates through POST return a UPID and do their work in a task;
// QEMU PUT and LXC PUT update synchronously. A disk resize (PUT resize)
// changes only the drive's size= in the config: in a "resize" task, except
// for QEMU before PVE 8, which resizes synchronously. Checks that Proxmox makes
// before forking a worker fail the request (500 with the message as the
// status line's reason phrase); the others fail the task, whose exit status
// then carries the error text.
//
// # Quick start
//
//	srv := proxmoxtest.Start(t, proxmoxtest.WithNodes("pve1", "pve2"))
//	srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100,
//		Config: map[string]string{"name": "web", "cores": "2", "memory": "2048"}})
//	id, secret := srv.APIToken()
//	// point the client at srv.URL with srv.Client() and the token ...
//	srv.WaitIdle(ctx)
//	st, _ := srv.Guest(proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100})
//
// [NewServer] does the same without a testing.TB (for demos); the caller
// closes it with [Server.Close].
//
// # Endpoints
//
// Below /api2/json: GET /version; GET /cluster/resources (type=vm, node,
// storage); GET /nodes; GET /nodes/{node}/qemu and /lxc; for each guest GET
// the index, GET config (current, snapshot), PUT config, POST config (QEMU,
// with background_delay), GET pending, GET status/current, POST
// status/start, stop, shutdown and reboot, PUT resize (disk, size as
// absolute or "+N", digest; skiplock for QEMU); GET /nodes/{node}/tasks (start,
// limit, vmid, typefilter, userfilter, since, until, errors, statusfilter,
// source=archive|active|all); GET /nodes/{node}/tasks/{upid}/status and
// /log (start, limit); DELETE /nodes/{node}/tasks/{upid}; GET and POST
// /access/ticket. Anything else answers 501 "Method 'GET /x' not
// implemented", as Proxmox does: there is no 404 and no 405.
//
// The HTTP layer behaves like pve-api-daemon: HTTP/1.1 only; HEAD and other
// methods get 501 "method 'HEAD' not available"; chunked request bodies and
// bodies on GET or DELETE get 501; bodies over 64 KiB (512 KiB from 8.4) get
// 501; form bodies are split on both '&' and ';', an unescaped '=' inside a
// value truncates it, repeated keys are joined with NUL (so two delete=
// pairs act as a list); JSON bodies are accepted; query parameters override body
// keys; a path parameter repeated with another value is a 400. Parameters
// are validated against the endpoint's schema (400 "Parameter verification
// failed." with an errors map): unknown parameters, booleans other than 1/0,
// malformed integers, formats, lengths, ranges and enumerations. Every
// answer with status 400 or more closes the connection.
//
// # Authentication
//
// API tokens ([WithAPIToken]; one "root@pam!guestward" token with a random
// secret by default) in "Authorization: PVEAPIToken=id=secret" (or with a
// space); tickets from POST /access/ticket for users added with [WithUser],
// in the PVEAuthCookie cookie or Authorization header, with the
// CSRFPreventionToken header required on writes. Tickets live
// [WithTicketLifetime] (2 h) on the server's [Clock] and are renewed by
// logging in with the ticket as password. Failures answer 401 with
// Proxmox's reasons ("No ticket", "invalid token value!", "no such token
// ...", "permission denied - invalid PVE ticket", "Permission denied -
// invalid csrf token"; "Authentication failed!" for every bad ticket or
// token from pve-manager 9.1.5 and 8.4.17) and an empty body, delayed only
// if [WithAuthFailureDelay] asks. A ticket is valid while its age in whole
// seconds is below the lifetime: one exactly that old is refused. skiplock and the other
// root-only parameters are refused for anything but a root@pam ticket.
// Tokens never appear in the request log, in errors or in log output. A
// [Fault] with Status 403 answers as Proxmox refuses a caller without the
// endpoint's privilege ("Permission check failed (/vms/100,
// VM.PowerMgmt)").
//
// # Write-side rewriting
//
// Values written through the API are rewritten as Proxmox rewrites them,
// by this package's own code (it shares nothing with package normalize,
// whose rules it is meant to check):
//
//   - QEMU netN: parsed and re-printed as "<model>=<MAC>,<sorted keys>",
//     generating a MAC ([WithMACPrefix], by version) when none is given;
//   - LXC netN, when applied: type=veth forced, hwaddr generated, "name"
//     first, other keys sorted;
//   - QEMU disks: "storage:size" allocates a volume named as the storage
//     kind names it ([WithStorage]), records size= (a fraction of a GiB
//     rounded up to a whole KiB) and drops format=;
//     "storage:cloudinit" allocates the cloud-init drive; every drive value
//     is re-printed in canonical order with sizes in the largest exact unit;
//     replaced or deleted disks become unusedN;
//   - LXC mpN, when applied: the same allocation ("subvol-" on ZFS), its
//     size truncated to a whole MiB;
//   - tags: split on ',', ';' and spaces, sorted case-insensitively,
//     lower-cased, de-duplicated, joined with ';' (or as [WithTagStyle]
//     says); "tags=" without a value sets the empty list;
//   - descriptions: QEMU trims trailing white space by Unicode's rules
//     (no-break and ideographic spaces too), LXC reads back one "\n" per
//     line; "" and "0" are not written and read back absent;
//   - LXC nameserver/searchdomain joined with spaces; cpuunits clamped to
//     10000; vmgenid=1 replaced by a UUID; a plain cipassword stored as a
//     "$5$..." hash (shaped like Proxmox's, not crypt(3)-exact) and shown
//     masked; boot order=... re-printed and
//     extended by new CD drives; booleans and integers normalised in the
//     file.
//
// Changes to a running guest go to the pending section first; the options
// Proxmox applies at once (name, description, onboot, tags, ... and, with the
// guest's hotplug setting, NICs, SCSI/VirtIO disks, CD media, memory,
// cpulimit, cpuunits) are applied, the rest stays pending until the guest
// is started or rebooted. Deleting an unset option only logs a warning.
//
// # Versions
//
// [WithVersion] selects the emulated release:
//
//	difference                          before        from
//	QEMU memory in GET config           number        string (8.1)
//	default MAC prefix                  random        BC:24:11 (8.1)
//	LXC list vmid                       string        number (8.2)
//	stop parameter overrule-shutdown    400           accepted (8.2)
//	error body "message"                absent        present (8.3)
//	QEMU digest mismatch text           "missmatch"   "mismatch" (8.3)
//	POST body limit                     64 KiB        512 KiB (8.4)
//	401 reasons for bad tickets/tokens  specific      "Authentication failed!" (9.1.5, 8.4.17)
//	QEMU resize                         synchronous   "resize" task (8.0)
//	LXC resize checks                   under lock    again in the task (8.0)
//	LXC start/stop/shutdown lock        in handler    in the task (8.2)
//	QEMU POST config lock               in handler    in the task (9.2.5)
//	HA status "group"                   present       absent (9.1)
//
// "Lock" means where the guest's config lock is taken, which decides
// whether [Fault].LockTimeout fails the request or its task. The QEMU
// rows follow qemu-server, whose releases do not line up with
// pve-manager's: [WithQemuServerVersion] pins it (memory as a string from
// 8.0.8, the resize task from 8.0.2, "mismatch" from 8.2.5, the config
// lock in the task from 9.1.19, which came out between pve-manager 9.2.4
// and 9.2.5).
//
// Before qemu-server 9.1.19 an asynchronous QEMU config update (POST
// config) takes the config lock in its handler and keeps it until its
// task ends: other writers through the API, [Server.UpdateConfig] and
// [Server.SetLock] wait for the task (at most 10 s of real time, then
// "can't lock file ... - got timeout"), and the change they make lands
// after the task's. From 9.1.19 the handler checks the digest and the lock
// without taking the config lock and the task checks both again once it
// holds it: a change or a lock that came in between fails the task
// ("checksum mismatch (file change by other user?)", "VM is locked
// (backup)") and nothing is applied.
//
// # Tasks
//
// Tasks have realistic UPIDs ("UPID:pve1:00002A33:00C5C0DF:6B0725F0:qmstart:100:root@pam!guestward:"),
// stay "running" for [WithTaskDuration] of real time (2 ms by default),
// then do their work and stop with exit status "OK", "WARNINGS: n" or the
// error text, which also ends their log ("TASK OK", "TASK ERROR: ...").
// Deterministic tests use [WithManualTasks] and finish tasks explicitly with
// [Server.FinishTask] or [Server.FinishTasks]; [Server.WaitIdle] waits for
// all tasks, [Server.AwaitTask] for a particular one. [WithTaskVisibilityDelay]
// emulates the short window after a fork in which the task's status
// answers 400 "no such task". A task's user is the request's auth id; a
// token's task reports it split into user and tokenid in its status and,
// once finished, in the task list (a running one is listed under the full
// token id), and the list's userfilter matches what is reported.
//
// # Faults
//
// [Server.Inject] installs a [Fault], matched per method, path pattern and
// guest, one-shot or repeated ([Fault].Times, [Fault].Skip): forced status
// codes including the proxy's 595 to 599, latency under the test's control
// ([Fault].Wait) or in real time ([Fault].Delay), connections dropped before
// or after the request took effect ([DropMode]), failing or warning tasks,
// a config lock held by someone else past Proxmox's 10 s wait
// ([Fault].LockTimeout: "can't lock file ... - got timeout", from the
// handler or the task, wherever Proxmox takes the lock), and hooks
// ([Fault].Before, [Fault].After) that make locks appear
// ([Server.SetLock]) or another writer change the config
// ([Server.UpdateConfig]) between a client's read and its write.
// [Server.SetNodeOnline] takes a node off the network, and
// [Server.SetResourcesStale] freezes /cluster/resources as its RRD source
// lags on a real cluster.
//
// # Load
//
// A Proxmox node runs a few API workers (three by default), each handling
// one request at a time. [WithNodeWorkers] gives every node of the fake
// that many, [WithLatency] and [WithNodeLatency] add the time a real node
// spends on each request while it holds a worker, and [Server.NodeLoad]
// counts each node's requests and the most it held in flight, so tests and
// benchmarks see the cost of their requests where a cluster would feel it.
//
// # HA-managed guests
//
// A guest added with [GuestSpec].HA (or [Server.SetHA]) is an HA resource.
// Its start, stop and shutdown requests return a "hastart" or "hastop" task
// of the caller that only hands the request over (its log says "Requesting
// HA start for VM 100"); a reboot is not routed through HA. When that task
// finishes, the HA manager acts: the service state changes ("started", or
// "request_stop" then "stopped"; "error" if its action fails) and, unless
// the guest already is in the state asked for, a task of root@pam starts
// or stops it: qmstart or vzstart; qmstop or vzstop for a stop; qmshutdown
// (forced after the timeout) or vzshutdown for a shutdown. That task runs
// like any other ([WithManualTasks] applies). [Server.HoldHA] holds the
// HA manager so a test can observe the moment between hand-over and
// action. The manager runs a round when a request is handed over, when
// its own task ends and when a hold is released; a round acts on
// everything handed over since the last one as Proxmox's CRM does (a stop
// handed over for a stopped service is ignored) and puts a guest that
// changed behind its back back into the service's state. A service in
// state "error" refuses new requests: their task fails with ha-manager's
// exit ("command 'ha-manager set vm:100 --state started' failed: exit code
// 255"). [Server.SetHAState] is "ha-manager set --state" run by an
// operator: "disabled" takes a service out of "error" to "stopped";
// "stopped" or "disabled" makes the manager shut a started guest down
// (forced after 60 seconds for a VM). Status answers carry "ha" ({"managed":1,"state":...}, with
// "group" before 9.1) and /cluster/resources "hastate".
//
// # Inspection
//
// [Server.Guest] returns a guest's raw state (both sections, digest, file
// text, lock, power), [Server.Requests] the request log, [Server.Tasks] and
// [Server.TaskCount] what ran, per guest and task type.
//
// # Limits
//
// The fake emulates the API surface guestward uses, not Proxmox. It does
// not emulate: other API formats (/api2/extjs etc. answer 501); guest
// creation, deletion, migration, snapshots, backups; ACLs and privilege
// separation (every token may do everything a token may do; use a 403
// fault to test permission errors); paused or suspended
// guests and the reset/suspend/resume actions (so neither "VM is paused"
// nor the resume a start does on a running VM locked for backup); the
// balloon_min and shares fields of lists; tag permissions and the
// datacenter tag-style settings (the default style is emulated); raw lxc.*
// config keys; ISO sizes on CD drives; task log download; node-level
// endpoints other than the tasks. Resource figures (memory use, network
// counters, CPU load) are plausible constants, not measurements. Disk
// hotplug is simplified (SCSI and VirtIO disks hotplug, IDE and SATA disks
// do not, CD media always do). Volumes have no size of their own: a resize
// reads and writes the drive's size=, so a drive without one cannot be
// resized ("Could not determine current size of volume"), and the
// rounding storages apply to a volume's real size is not emulated; the
// check that an LXC mount point's volume belongs to the container is
// left out. The HA manager runs rounds only when the fake has a reason
// to (see above), so a guest stopped behind its back
// ([Server.SetRunning]) stays stopped until the next round; it does not
// fence, migrate, or retry and relocate a failed start or stop (the
// service goes to "error" at once), and it shows no "request_start"
// state; the "ignored" state, in which requests go straight to the guest,
// is not emulated ([Server.SetHAState] refuses it). The option schema covers the common QEMU and LXC options; an
// option it does not know is refused as unknown.
//
// Nor are these emulated, although Proxmox has them: a task worker that
// needs a config lock held by an older config task does not wait for it
// (only API writers, [Server.UpdateConfig] and [Server.SetLock] do; with
// [WithManualTasks], finishing tasks out of order applies them in that
// order); a parameter sent without a value ("cores=") or as JSON null is
// treated as absent, except "tags=" (Proxmox keeps it, undefined, and
// each handler does its own thing with it); the cluster's other
// datacenter.cfg settings (only mac_prefix and the tag style are
// modelled); key rotation of the ticket signing key (tickets of any age
// below the lifetime verify); two-factor authentication, disabled or
// expiring users, and per-user token privilege separation; the
// specific text for a malformed token id, which Proxmox echoes with the
// token and the fake replaces with "invalid token value!" so that no
// secret leaks into logs; the per-option privilege checks inside config
// updates (a 403 fault names the endpoint's privileges).
//
// # Concurrency
//
// A Server is safe for concurrent use. All state sits behind one mutex; a
// request holds it only while it reads or changes state, never while it
// waits on a fault. Close stops everything the server started and waits
// for it, so tests can check for goroutine leaks.
package proxmoxtest
