// Command agent is a node agent built on guestward: it keeps the Proxmox VE
// guests that a desired-state file declares in their declared state, pass
// after pass, journaling every operation so that a crash is resolved on the
// next start. It uses nothing but guestward's public API, and is meant to be
// read as much as run.
//
// # Try it
//
//	go run ./examples/agent -demo
//
// starts a fake Proxmox VE cluster in this process (package proxmoxtest) with
// a dozen drifted guests, and shows the plan, the actions as they run, the
// report, and a second pass that finds nothing to do. It needs no Proxmox,
// no network beyond loopback and no setup, and exits 0. -demo-pve 7.4 (or
// any release from 7.0 to 9.x) picks the emulated version; -output json
// prints the same story as JSON lines.
//
// # Run it
//
//	export GUESTWARD_TOKEN_SECRET=...   # or -token-secret-file /etc/guestward/token
//	agent -url https://pve1:8006 -token-id 'guestward@pve!agent' \
//	      -fingerprint AA:BB:...:FF \
//	      -desired /etc/guestward/desired.json \
//	      -journal /var/lib/guestward/journal.db
//
// At start the agent checks every setting, reads the desired state once (a
// broken file stops it at once rather than at the first pass), asks Proxmox
// for its version (proving the URL, the certificate settings and the token),
// opens the journal, and runs Engine.Recover, printing every operation a
// previous run left in flight and how it was resolved. Then Engine.Run runs
// a pass every -interval until the agent is stopped. The desired-state file
// is read again whenever it changes; while it is broken, the last good state
// is used and each report says so.
//
// # Settings
//
// Every flag has an environment variable, named in "agent -h"; a flag on the
// command line wins over the environment.
//
//	-url                GUESTWARD_URL                 https://host:8006; https only
//	-token-id           GUESTWARD_TOKEN_ID            user@realm!tokenname
//	                    GUESTWARD_TOKEN_SECRET        the token secret itself, or:
//	-token-secret-file  GUESTWARD_TOKEN_SECRET_FILE   a file holding it (warned about if others can read it)
//	-fingerprint        GUESTWARD_FINGERPRINT         SHA-256 of the server certificate; several allowed
//	-ca-file            GUESTWARD_CA_FILE             PEM CA bundle, e.g. a copy of /etc/pve/pve-root-ca.pem
//	-http-timeout       GUESTWARD_HTTP_TIMEOUT        bound on each HTTP request (2m)
//	-desired            GUESTWARD_DESIRED             desired-state JSON file (format: reconcile.FileProvider)
//	-journal            GUESTWARD_JOURNAL             .db, .bolt, .bbolt: bbolt backend; anything else: file backend
//	-interval           GUESTWARD_INTERVAL            between pass starts (30s)
//	-jitter             GUESTWARD_JITTER              random variation either way (a tenth of -interval)
//	-concurrency        GUESTWARD_CONCURRENCY         guests observed and changed at once (8)
//	-settle-delay       GUESTWARD_SETTLE_DELAY        see reconcile.Config.SettleDelay (10s)
//	-shutdown-grace     GUESTWARD_SHUTDOWN_GRACE      how long a stop waits for running operations (30s)
//	-dry-run            GUESTWARD_DRY_RUN             plan and report only; the journal is not even opened
//	-output             GUESTWARD_OUTPUT              stdout: text, or json (one object per line)
//	-full-reports       GUESTWARD_FULL_REPORTS        with -output json: whole reports, not only each pass's summary
//	-allow-irreversible GUESTWARD_ALLOW_IRREVERSIBLE  perform actions that cannot be undone (growing a disk); -demo allows them
//	-version                                          print the agent's version and exit
//	-log-level          GUESTWARD_LOG_LEVEL           debug, info, warn (default), error; logs go to stderr
//	-log-format         GUESTWARD_LOG_FORMAT          text or json, as log/slog writes them
//	-once                                             recover, one pass, exit (see below)
//	-listen             GUESTWARD_LISTEN              take signed operations on this host:port (see below)
//	-hub-keys           GUESTWARD_HUB_KEYS            with -listen: PEM file of the hub public keys to trust
//	-agent-id           GUESTWARD_AGENT_ID            with -listen: this agent's id, the audience tokens must name
//	-health-listen      GUESTWARD_HEALTH_LISTEN       serve the engine's health on this host:port (see below)
//	-tls-cert           GUESTWARD_TLS_CERT            PEM certificate (chain) to serve -listen and -health-listen over TLS
//	-tls-key            GUESTWARD_TLS_KEY             PEM private key of -tls-cert; the two go together
//	-tls-client-ca      GUESTWARD_TLS_CLIENT_CA       PEM CA certificates; -listen then requires a client certificate they sign
//
// The token secret has no flag: a flag's value is visible to every user of
// the host in the process list. Without -fingerprint or -ca-file the server
// certificate must chain to the system roots; verification cannot be turned
// off.
//
// # Signed operations
//
// With -listen, the agent also takes one-shot operations that a hub signed
// (package reconcile/signedop; examples/hub is such a hub): each is a
// compact JWS, POSTed as the body to /v1/op, and runs through the same
// engine, queue and journal as the passes, at most once per JWT ID. The agent
// runs only tokens signed by a key in -hub-keys (PEM PUBLIC KEY blocks; list
// two to roll a hub's key over; a key's id is its JWK thumbprint), addressed
// to its -agent-id, and within their validity; an action that cannot be
// undone runs only when the signed request approves it. The answer is the
// operation's result as JSON, or an error code; a replayed token gets the
// recorded result. -listen works with -demo too, which then goes on taking
// operations for its fleet after the story, until it is stopped:
//
//	go run ./examples/hub -keygen -key /tmp/hub.key
//	go run ./examples/agent -demo -listen 127.0.0.1:8780 -hub-keys /tmp/hub.key.pub -agent-id demo-agent
//	go run ./examples/hub -demo -key /tmp/hub.key -agent http://127.0.0.1:8780 -agent-id demo-agent
//
// When stopped, the agent answers new requests 503 while it drains, and
// gives those in progress the -shutdown-grace to finish.
//
// # TLS
//
// Without TLS flags both listeners speak plain HTTP. The signature makes a
// request authentic and the JWT ID makes it run once, but nothing hides it
// from the network: anyone on the path reads the operation, a secret it
// sets (cipassword) included, and a captured token can be replayed, though
// only for what it signs and until it expires. When -listen binds an
// address other than loopback without TLS, the agent logs a warning at
// start saying so.
//
// -tls-cert and -tls-key (PEM, both or neither) serve -listen and
// -health-listen over TLS: 1.3 with any client that offers it, 1.2 at
// least. -tls-client-ca adds mutual TLS on -listen only: a client must
// present a certificate that one of the file's CA certificates signs, or
// the handshake fails before any request is read; the health asks for
// none, so a probe needs no certificate. A plain-HTTP request to a TLS
// listener is answered 400 and runs nothing. The files are read once, at
// start: to change them, restart the agent. A missing or unreadable file,
// a key that is not the certificate's, a client CA file without a
// certificate, -tls-client-ca without -tls-cert or without -listen, or TLS
// flags with neither listener stop the agent at start with exit code 2:
//
//	agent ... -listen :8780 -hub-keys hub.pub -agent-id agent-7 \
//	      -tls-cert /etc/guestward/agent.crt -tls-key /etc/guestward/agent.key \
//	      -tls-client-ca /etc/guestward/hub-ca.pem
//
// examples/hub reaches such an agent with -ca (the CA that issued the
// agent's certificate) and -client-cert and -client-key (a certificate
// the agent's -tls-client-ca signed).
//
// # Health
//
// With -health-listen 127.0.0.1:8781 (any host:port; port 0 picks one, and
// the agent says which), the agent serves GET /healthz (over TLS with
// -tls-cert, else plain HTTP), from before its first recovery until it
// exits: reconcile's
// Engine.HealthHandler, which answers 503 until recovery has completed
// and while the agent stops, and 200 otherwise, with the engine's status
// as JSON (the last pass, the pass in progress and its phase, operations
// in flight and unresolved, the last error). A pass that failed leaves it
// at 200: the body says so. Use it as a readiness probe, not as a
// liveness probe: restarting the agent does not bring Proxmox back. The
// body names guests and carries Proxmox's error messages (never a secret):
// keep it on loopback, or on a network whose readers may see them. It
// applies to the daemon, not to -once or -demo.
//
// # Output
//
// Stdout carries what the agent does; stderr carries the log and errors,
// and, with -output text, a few progress lines per pass (the end of each
// phase, and each tenth of a phase of a hundred guests or more).
// With -output text it is written for a person. With -output json every line
// is one JSON object whose "type" says what it is, and whose "schema" is 1
// (members are only ever added under one schema number):
//
//	start     what the agent runs against (url, proxmox_version, journal, journal_backend, desired, ...)
//	recovery  the operations Recover resolved ("ops", each with its guest), "unresolved", "error"
//	event     one step of one action: guest, kind, phase (start, task, done, failed), op_id, upid, detail,
//	          and recovered: true when Recover resolved an operation an earlier run left in flight
//	progress  where a pass stands: pass number, targeted, phase (recover, list, observe, plan, act,
//	          done), done and total guests, elapsed_seconds, and in the done line the pass's
//	          error if it could not act; at most about a hundred lines per phase however
//	          large the fleet
//	report    one pass's summary: pass number, converged, counts by outcome, actions_sent,
//	          actions_succeeded, duration_seconds; with -full-reports, also the
//	          reconcile.Report itself under "report"
//	health    with -health-listen: the url the health is served at
//	shutdown  a stop was requested, and what the agent does about it
//	exit      the last line: the exit code and why
//
// # Stopping
//
// On SIGINT or SIGTERM the agent drains the engine (reconcile.Engine.Drain):
// no new action starts, and the pass in progress reports the rest as not
// started. It waits up to -shutdown-grace for the operations already sent
// to finish and be journaled, then cancels the engine: Run waits for the
// pass and drains the queue, and the journal is closed. An operation still running
// when the grace period ends stays in flight in the journal, and the next
// start's Recover resolves it; nothing is lost either way. A signal while
// the agent is still connecting or recovering ends it at once with exit 0
// (with -once, 1: the pass did not happen); what recovery left undone stays
// in the journal for the next start. A second signal ends the process at once.
//
// # Exit codes
//
//	0  stopped on request; with -once, every declared guest is in sync or was changed
//	1  could not do its work: Proxmox unreachable or refusing the token, the journal
//	   locked by another process or damaged; with -once also recovery unfinished, or a
//	   pass that could not act at all (the guest list unreadable, say)
//	2  a setting is wrong: a flag, an environment variable, or a file they name
//	   (the desired-state file included)
//	3  with -once: the pass ran, but some declared guest is not in its declared state
//	   (skipped, failed, in conflict, or, with -dry-run, with changes planned)
//
// # Crash tests
//
// The agent never kills itself on purpose: no flag or environment variable
// arms a failpoint in it. guestward's crash tests run the agent's test
// binary instead, which, started with a test-only environment variable,
// runs the agent with failpoints armed at chosen steps of an operation
// (after its intent is journaled, after the call to Proxmox returns, after
// its task is journaled, ...). At an armed step it writes "failpoint
// <point> reached" to stderr and kills itself with SIGKILL: no deferred
// function runs and nothing is flushed, as in a real crash. The test then
// runs the real agent again, with -once and -output json, against the same
// fake server and journal, and checks from the JSON lines and the fake
// server's task counts that every operation ran at most once and was
// resolved.
package main
