// Package proxmox is a thin, safe client for the Proxmox VE HTTP API, limited
// to what guestward needs to observe and change guests, and the vocabulary
// types ([Ref], [GuestType], [UPID]) the rest of guestward speaks.
//
// It does not cache, plan, or decide: each method is one API call (or one
// polling loop, for [Client.WaitTask]) with Proxmox's semantics made
// explicit. It is tested against recorded Proxmox responses and against
// the fake server in package proxmoxtest.
//
// # The model
//
// A guest is named by a [Ref]: node, type ([QEMU] or [LXC]) and vmid. Any
// node of a cluster answers for all of them, proxying to the guest's node.
// Reads return what Proxmox holds now:
//
//   - [Client.Guests]: every guest of the cluster, from a list that lags
//     power changes by about ten seconds;
//   - [Client.Status]: one guest's exact power state and lock;
//   - [Client.Config]: one guest's configuration, with pending changes
//     applied, and the digest of its config file; [Client.CurrentConfig]
//     without them; [Client.Pending]: which options have a change that
//     waits for a restart; [Client.PendingConfig]: all of these, with the
//     lock, in one request.
//
// Writes either start a task or complete at once. Power actions
// ([Client.Start], [Client.Stop], [Client.Shutdown], [Client.Reboot])
// always start a task and return its [UPID]. [Client.SetConfig] is
// dual-mode: for QEMU it starts a task and returns its UPID; for LXC the
// change is made before it returns and the UPID is "". [Client.Resize]
// grows a disk to an absolute size: in a task, except for QEMU on PVE 7,
// where it completes at once. A write with a task is finished only when
// [Client.WaitTask] says so, and many failures (a locked VM, a VM that does
// not exist, a hot-plug problem, a disk that would shrink) appear only
// there, as a [*TaskError]. [Client.Tasks] lists a node's tasks by guest,
// type and start time: after a crash it finds the task a write may have
// started, and [Client.TaskUser] tells this client's tasks from others'
// (compare it with the user of the task's [UPID]).
//
// A guest managed by Proxmox's HA stack ([GuestStatus.HAManaged]) is
// started and stopped by the HA manager: the task [Client.Start],
// [Client.Stop] and [Client.Shutdown] return only hands the request over,
// and the guest changes state later, in a task the HA manager runs as
// root@pam (see [Client.Start]).
//
// Optimistic concurrency: [Config.Digest] sent back in
// [ConfigChange.Digest] makes Proxmox refuse the write with
// [ErrDigestMismatch] if the config changed since it was read.
//
// # Authentication and TLS
//
// [WithAPIToken] (recommended) sends a token on each request.
// [WithPassword] logs in on first use, sends the ticket as a cookie and the
// CSRF token on every write, and logs in again when the ticket is an hour
// old, well before Proxmox's two-hour expiry; concurrent callers share one
// login. The token secret, the password and the tickets never appear in
// errors, in log lines, or in the printed form of a [Client] or an
// [Option], even when a server or a proxy echoes them back in an answer or
// a task's exit status: every text that came from the server is redacted
// before the client puts it into an error, a log line or a [TaskStatus].
//
// The server certificate is verified by default, against the system roots
// or [WithCAPool], and must be issued for the base URL's host: its name,
// or for an IP address one of the certificate's IP addresses. Proxmox
// installs self-signed certificates; the usual answer is
// [WithFingerprint], which accepts exactly the pinned certificate
// (SHA-256, as the Proxmox GUI shows it) whatever it names; given with
// [WithCAPool], chain, host and pin must all hold. There is no option to
// turn verification off, and [WithHTTPClient] cannot bring it in through
// the back door: [New] refuses a transport that skips verification, allows
// TLS before 1.2 or insecure cipher suites, or logs its session keys, and
// a transport it cannot inspect unless [WithOpaqueTransport] says the
// caller vouches for it. Only https base URLs are accepted; redirects are
// never followed, with any client (a 3xx answer is an [*APIError]); and
// each HTTP attempt is bounded by [WithTimeout] (2 minutes by default)
// besides the caller's context.
//
// # Retries
//
// The transport retries only what cannot repeat an action:
//
//   - reads (GET), after network errors and after HTTP 429, 502, 503, 504
//     and 595 to 599 (the statuses a node returns when it cannot reach the
//     node it proxies to);
//   - any request whose attempt never obtained a connection (dial, DNS and
//     TLS handshake failures, though not a refused certificate): it cannot
//     have reached Proxmox (this proof needs net/http's own Transport; see
//     [WithHTTPClient]);
//   - any request Proxmox provably did not execute: HTTP 429, 595 and 596
//     (the proxying node could not connect to the target node), and 500
//     "can't lock file ... - got timeout" for the guest's config lock,
//     which Proxmox takes before anything else.
//
// A write (POST, PUT, DELETE) that may have reached Proxmox is never sent
// again: a task may have started. Such a failure matches
// [ErrOutcomeUnknown]; resolve it by reading state or with [Client.Tasks]
// before deciding to try again. The one write the client repeats freely is
// the login, which changes nothing. With ticket authentication, a request
// answered 401 is sent once more after a new login: Proxmox authenticates
// before it executes anything. Retries wait with capped, jittered
// exponential backoff ([WithRetry]) and stop when the context ends.
//
// # Errors
//
// Bad input is refused before any request, with an error wrapping
// [ErrInvalidRef] (node name, type, vmid outside 100..999999999),
// [ErrInvalidConfig] (option names, line breaks, descriptions over 8192
// characters, see [ConfigChange.Validate]), [ErrInvalidUPID] or
// [ErrInvalidArgument] (for example a disk name the guest type cannot
// have, see [DiskResize.Validate]).
//
// A non-2xx answer is an [*APIError] with the status, the message (from the
// reason phrase, or the body's "message" on PVE 8.3 and later) and the
// per-parameter errors. Proxmox has no 404 and reports most failures as
// 500 with a message, so errors are classified from status and text into
// classes usable with [errors.Is]: [ErrNotFound], [ErrLocked],
// [ErrDigestMismatch] (in all its spellings), [ErrUnauthorized],
// [ErrForbidden], [ErrNotImplemented], [ErrInvalidParameter],
// [ErrAlreadyRunning], [ErrNotRunning], [ErrShrink], [ErrAlreadySized],
// and [ErrTransient] for failures that may clear by themselves (network,
// 429, 502 to 504, 595 to 599, a config lock timeout). A config lock
// timeout ("can't lock file ... - got timeout": someone held the guest's
// lock longer than Proxmox waits) matches both [ErrLocked] and
// [ErrTransient]; it proves nothing was done. Task failures are classified
// the same way from their exit status, so errors.Is(err, ErrLocked) holds
// whether Proxmox refused synchronously or in the task. A server whose certificate matches
// none of the pinned fingerprints fails with [ErrFingerprintMismatch]
// before any request is sent. Callers never need to match text.
//
// # Decoding
//
// Proxmox is written in Perl and its JSON typing drifts: numbers arrive as
// strings, booleans as 0/1, and PVE 7 and 8 differ (QEMU memory is a number
// before 8.1 and a string after; LXC list vmids are strings before 8.2).
// Every field is decoded leniently, and configuration values are handed
// over as strings in the exact text Proxmox sent ([Config]).
//
// # Requests
//
// Writes are sent as application/x-www-form-urlencoded with an exact
// Content-Length (Proxmox refuses chunked bodies), ';' escaped as %3B
// (Proxmox also splits form fields on ';'), the client's own booleans as
// 1/0, deletions as one comma-separated "delete" parameter, and "digest"
// only when given. Configuration values are sent as given.
//
// # Metrics
//
// [WithRequestObserver] is told of every attempt at every request (its
// method, its path with identifiers replaced by their names, the node it
// addresses, its status and duration) without a metrics library in this
// package; [PathTemplate] is the replacement it applies. What it is told
// never holds a credential, a query, a body or a vmid.
package proxmox
