// Command hub signs one-shot operations and sends them to an agent that
// takes signed operations (examples/agent with -listen): the hub side of
// package reconcile/signedop. The hub holds an Ed25519 private key; the
// agent trusts its public key, and runs what the key signed, for it and
// only it, at most once per JWT ID.
//
// # Try it
//
//	go run ./examples/hub -keygen -key /tmp/hub.key        # writes /tmp/hub.key and /tmp/hub.key.pub
//	go run ./examples/agent -demo -listen 127.0.0.1:8780 -hub-keys /tmp/hub.key.pub -agent-id demo-agent
//	go run ./examples/hub -demo -key /tmp/hub.key -agent http://127.0.0.1:8780 -agent-id demo-agent
//
// The agent runs its demonstration, then takes signed operations until it
// is stopped. The hub's demo sends, to the fleet's undeclared VM
// pve1/qemu/150:
//
//  1. a configuration change (its description), which runs;
//  2. the same token again, which is answered from the agent's journal
//     ("replayed") and runs nothing;
//  3. cipassword set without approval, refused (403): Proxmox never gives a
//     password back, so the change could not be undone;
//  4. the same request with the signed approval (allow_irreversible), which
//     runs;
//  5. a token for another agent (403), one signed by a key the agent does
//     not trust (401), and one reusing the JWT ID of step 1 for another
//     request (409), none of which runs.
//
// # Send one operation
//
//	hub -key /etc/guestward/hub.key -agent http://agent-7:8780 -agent-id agent-7 \
//	    -op-key deploy-4711/start-web -guest pve1/qemu/100 -do start
//
// prints the agent's answer (JSON: the operation's result, or an error with
// a code) on stdout. The JWT ID is -op-key: sending the same command again
// signs a new token for the same request, which the agent answers from its
// journal without acting again. -set, -delete, -digest and -timeout give the
// operation's parameters as examples/oneshot takes them; -allow-irreversible
// approves an action that cannot be undone. A token is valid for -ttl
// (5 minutes; agents accept at most 15 by default).
//
// # Settings
//
//	-key       GUESTWARD_HUB_KEY     the hub's private key: PEM, PKCS #8 (as -keygen or openssl genpkey writes it)
//	-agent     GUESTWARD_AGENT_URL   the agent's base URL; operations go to URL/v1/op
//	-agent-id  GUESTWARD_AGENT_ID    the agent's id, the token's audience
//	-issuer    GUESTWARD_HUB_ISSUER  the hub's name in the token (default "hub")
//
// Towards an https agent (its -tls-cert), the hub trusts the system's
// roots, or with -ca (GUESTWARD_HUB_CA) only the CA certificates of that
// PEM file: the way to an agent whose certificate a private CA issued. For
// an agent started with -tls-client-ca, -client-cert and -client-key
// (GUESTWARD_HUB_CLIENT_CERT, GUESTWARD_HUB_CLIENT_KEY) name the PEM
// client certificate and key the hub presents. These flags need an https
// agent URL, and are checked before anything is sent.
//
// The key id is the key's JWK thumbprint, which the agent computes from the
// public keys it trusts: nothing to keep in step.
//
// # Exit codes
//
//	0  the operation succeeded, now or earlier (a replay); with -demo, every step went as described
//	1  the agent refused it, it failed, or the agent could not be reached; with -demo, a step did not go as described
//	2  a setting is wrong
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/hubkey"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// opsPath is where an agent takes signed operations.
const opsPath = "/v1/op"

// maxAnswer bounds the agent's answer the hub reads.
const maxAnswer = 1 << 20

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
	keygen  bool
	demo    bool
	key     string
	agent   string
	agentID string
	issuer  string
	ttl     time.Duration
	opKey   string
	guest   string
	do      cli.ChoiceFlag
	set     kvFlag
	del     cli.ListFlag
	digest  string
	timeout time.Duration
	allow   bool

	// TLS towards the agent: the CAs to trust instead of the system's,
	// and a client certificate for an agent that asks for one.
	ca, clientCert, clientKey string
}

const usageHead = `hub: sign one-shot operations and send them to an agent that takes them (agent -listen).

Usage:
  hub -keygen -key FILE                  make a key pair: FILE (private) and FILE.pub (for the agent's -hub-keys)
  hub -demo -key FILE -agent URL -agent-id ID
  hub -key FILE -agent URL -agent-id ID -op-key KEY -guest NODE/TYPE/VMID -do ACTION [-set k=v]... [-delete k,...]

Flags:
`

func run(ctx context.Context, args []string, env cli.LookupEnv, stdout, stderr io.Writer) int {
	s := &settings{
		do: cli.ChoiceFlag{Choices: []string{string(reconcile.ActionStart), string(reconcile.ActionStop),
			string(reconcile.ActionShutdown), string(reconcile.ActionReboot), string(reconcile.ActionSetConfig)}},
		set: kvFlag{},
	}
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
	fs.BoolVar(&s.keygen, "keygen", false, "make a new key pair at -key and -key.pub, and exit")
	fs.BoolVar(&s.demo, "demo", false, "send the demonstration's operations to an agent running -demo -listen")
	fs.StringVar(&s.key, "key", "", "the hub's private key `file` (env GUESTWARD_HUB_KEY)")
	fs.StringVar(&s.agent, "agent", "", "the agent's base `URL`, http or https; operations are posted to URL"+opsPath+" (env GUESTWARD_AGENT_URL)")
	fs.StringVar(&s.agentID, "agent-id", "", "the agent's `id`, the audience of the token (env GUESTWARD_AGENT_ID)")
	fs.StringVar(&s.issuer, "issuer", "hub", "the hub's `name` in the token (env GUESTWARD_HUB_ISSUER)")
	fs.DurationVar(&s.ttl, "ttl", 5*time.Minute, "how long the token is valid")
	fs.StringVar(&s.opKey, "op-key", "", "the operation's idempotency `key`, the token's JWT ID: names this one request")
	fs.StringVar(&s.guest, "guest", "", "the guest, as `node/type/vmid`: pve1/qemu/100, pve2/lxc/200")
	fs.Var(&s.do, "do", "the `action`: start, stop, shutdown, reboot or set_config")
	fs.Var(s.set, "set", "with -do set_config: an `option=value` to set; repeat for more")
	fs.Var(&s.del, "delete", "with -do set_config: `options` to delete, comma-separated")
	fs.StringVar(&s.digest, "digest", "", "with -do set_config: refuse the change if the config's `digest` is no longer this")
	fs.DurationVar(&s.timeout, "timeout", 0, "with -do shutdown: how long the guest gets; 0 means Proxmox's default")
	fs.BoolVar(&s.allow, "allow-irreversible", false, "approve an action that cannot be undone (cipassword, say); signed with the rest")
	fs.StringVar(&s.ca, "ca", "", "with an https agent: trust only the CA certificates in this PEM `file`, instead of the system's (env GUESTWARD_HUB_CA)")
	fs.StringVar(&s.clientCert, "client-cert", "", "with an https agent: present this PEM client certificate `file`, for an agent started with -tls-client-ca; needs -client-key (env GUESTWARD_HUB_CLIENT_CERT)")
	fs.StringVar(&s.clientKey, "client-key", "", "PEM private key `file` of -client-cert (env GUESTWARD_HUB_CLIENT_KEY)")
	version := cli.RegisterVersion(fs)
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cli.ExitOK
		}
		return fail(stderr, err)
	}
	if *version {
		fmt.Fprintln(stdout, cli.Version("hub"))
		return cli.ExitOK
	}
	if err := cli.ApplyEnv(fs, env, []cli.Binding{
		{Flag: "key", Env: "GUESTWARD_HUB_KEY"},
		{Flag: "agent", Env: "GUESTWARD_AGENT_URL"},
		{Flag: "agent-id", Env: "GUESTWARD_AGENT_ID"},
		{Flag: "issuer", Env: "GUESTWARD_HUB_ISSUER"},
		{Flag: "ca", Env: "GUESTWARD_HUB_CA"},
		{Flag: "client-cert", Env: "GUESTWARD_HUB_CLIENT_CERT"},
		{Flag: "client-key", Env: "GUESTWARD_HUB_CLIENT_KEY"},
	}); err != nil {
		return fail(stderr, err)
	}
	if s.key == "" {
		return fail(stderr, cli.Usagef("no key: set -key or GUESTWARD_HUB_KEY"))
	}
	if s.keygen {
		for _, name := range []string{"demo", "agent", "agent-id", "op-key", "guest", "do", "ca", "client-cert", "client-key"} {
			if cli.Given(fs, name) {
				return fail(stderr, cli.Usagef("-keygen only makes a key: drop -%s", name))
			}
		}
		pub, err := hubkey.Generate(s.key)
		if err != nil {
			return fail(stderr, err)
		}
		fmt.Fprintf(stdout, "private key %s\npublic key  %s.pub (give it to the agent: -hub-keys)\nkey id      %s\n", s.key, s.key, hubkey.KeyID(pub))
		return cli.ExitOK
	}
	priv, err := hubkey.ReadPrivate(s.key)
	if err != nil {
		return fail(stderr, cli.Usagef("-key: %v", err))
	}
	endpoint, err := s.endpoint()
	if err != nil {
		return fail(stderr, err)
	}
	if s.ttl <= 0 {
		return fail(stderr, cli.Usagef("-ttl must be positive, not %v", s.ttl))
	}
	client, err := s.httpClient(endpoint)
	if err != nil {
		return fail(stderr, err)
	}
	h := &hub{priv: priv, kid: hubkey.KeyID(priv.Public().(ed25519.PublicKey)), issuer: s.issuer, agentID: s.agentID,
		ttl: s.ttl, endpoint: endpoint, client: client}
	if s.demo {
		for _, name := range []string{"op-key", "guest", "do", "set", "delete", "digest", "timeout", "allow-irreversible"} {
			if cli.Given(fs, name) {
				return fail(stderr, cli.Usagef("-demo brings its own operations: drop -%s", name))
			}
		}
		return runDemo(ctx, h, stdout, stderr)
	}
	op, err := s.oneShot()
	if err != nil {
		return fail(stderr, err)
	}
	token, err := h.sign(op, h.agentID, time.Now())
	if err != nil {
		return fail(stderr, cli.Usagef("%v", err))
	}
	ans, err := h.post(ctx, token)
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintln(stdout, strings.TrimSpace(string(ans.body)))
	if !ans.succeeded() {
		fmt.Fprintf(stderr, "hub: the agent answered %d %s\n", ans.status, ans.summary())
		return cli.ExitFailure
	}
	return cli.ExitOK
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "hub: %v\n", err)
	if cli.IsUsage(err) {
		fmt.Fprintln(stderr, "hub: run 'hub -h' for the flags")
		return cli.ExitUsage
	}
	return cli.ExitFailure
}

// endpoint checks -agent and -agent-id and returns where to post.
func (s *settings) endpoint() (string, error) {
	if s.agent == "" {
		return "", cli.Usagef("no agent: set -agent or GUESTWARD_AGENT_URL (http://host:port)")
	}
	if s.agentID == "" {
		return "", cli.Usagef("no agent id: set -agent-id or GUESTWARD_AGENT_ID (the agent's own -agent-id)")
	}
	u, err := url.Parse(s.agent)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", cli.Usagef("-agent %q: want http://host:port or https://host:port", s.agent)
	}
	return strings.TrimSuffix(u.String(), "/") + opsPath, nil
}

// httpClient is the client that posts to endpoint, with the TLS the flags
// ask for. Every error is a *cli.UsageError naming the flag.
func (s *settings) httpClient(endpoint string) (*http.Client, error) {
	client := &http.Client{Timeout: 2 * time.Minute}
	if s.ca == "" && s.clientCert == "" && s.clientKey == "" {
		return client, nil
	}
	if !strings.HasPrefix(endpoint, "https://") {
		return nil, cli.Usagef("-ca, -client-cert and -client-key need an https -agent, not %q", s.agent)
	}
	if (s.clientCert == "") != (s.clientKey == "") {
		return nil, cli.Usagef("-client-cert and -client-key go together: give both or neither")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.ca != "" {
		pool, err := cli.CertPool("ca", s.ca)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if s.clientCert != "" {
		cert, err := tls.LoadX509KeyPair(s.clientCert, s.clientKey)
		if err != nil {
			return nil, cli.Usagef("-client-cert %s, -client-key %s: %v", s.clientCert, s.clientKey, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	client.Transport = tr
	return client, nil
}

// oneShot builds the operation the flags describe.
func (s *settings) oneShot() (reconcile.OneShot, error) {
	if s.opKey == "" || s.guest == "" || s.do.Value == "" {
		return reconcile.OneShot{}, cli.Usagef("an operation needs -op-key, -guest and -do (or use -demo or -keygen)")
	}
	ref, err := parseRef(s.guest)
	if err != nil {
		return reconcile.OneShot{}, cli.Usagef("-guest: %v", err)
	}
	op := reconcile.OneShot{Key: s.opKey, Ref: ref, Kind: reconcile.ActionKind(s.do.Value), Digest: s.digest,
		Timeout: s.timeout, AllowIrreversible: s.allow}
	if len(s.set) > 0 {
		op.Set = s.set
	}
	if len(s.del) > 0 {
		op.Delete = s.del
	}
	if err := op.Validate(); err != nil {
		return reconcile.OneShot{}, cli.Usagef("%v", err)
	}
	return op, nil
}

func parseRef(s string) (proxmox.Ref, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return proxmox.Ref{}, fmt.Errorf("%q: want node/type/vmid", s)
	}
	vmid, err := strconv.Atoi(parts[2])
	if err != nil {
		return proxmox.Ref{}, fmt.Errorf("%q: vmid is not a number", s)
	}
	ref := proxmox.Ref{Node: parts[0], Type: proxmox.GuestType(parts[1]), VMID: vmid}
	return ref, ref.Validate()
}

// hub signs and sends operations.
type hub struct {
	priv     ed25519.PrivateKey
	kid      string
	issuer   string
	agentID  string
	ttl      time.Duration
	endpoint string
	client   *http.Client
}

func (h *hub) sign(op reconcile.OneShot, audience string, now time.Time) (string, error) {
	return signedop.Sign(h.priv, h.kid, signedop.Claims{Issuer: h.issuer, Audience: audience,
		IssuedAt: now, Expiry: now.Add(h.ttl), Op: op})
}

// answer is the agent's answer to one token.
type answer struct {
	status int
	body   []byte
	fields struct {
		State    string `json:"state"`
		OpID     string `json:"op_id"`
		Replayed bool   `json:"replayed"`
		Error    any    `json:"error"`
	}
	code string
}

func (a *answer) succeeded() bool {
	return a.status == http.StatusOK && a.fields.State == string(journal.Succeeded)
}

func (a *answer) summary() string {
	switch {
	case a.code != "":
		return a.code
	case a.fields.Replayed:
		return a.fields.State + ", replayed from the journal (op " + a.fields.OpID + ")"
	default:
		return a.fields.State + " (op " + a.fields.OpID + ")"
	}
}

func (h *hub) post(ctx context.Context, token string) (*answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.endpoint, bytes.NewReader([]byte(token)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/jose")
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("posting to the agent: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("reading the agent's answer: %w", err)
	}
	if len(body) > maxAnswer {
		return nil, errors.New("the agent's answer is too large")
	}
	a := &answer{status: resp.StatusCode, body: body}
	if err := json.Unmarshal(body, &a.fields); err != nil {
		return nil, fmt.Errorf("the agent's answer (%d) is not JSON", resp.StatusCode)
	}
	if e, ok := a.fields.Error.(map[string]any); ok {
		a.code, _ = e["code"].(string)
	}
	return a, nil
}

// demoGuest is the demo fleet's VM that no desired state declares, so the
// agent's passes leave alone what the hub changes.
var demoGuest = proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 150}

// runDemo sends the demonstration's operations and checks each answer.
func runDemo(ctx context.Context, h *hub, stdout, stderr io.Writer) int {
	run := make([]byte, 4)
	if _, err := rand.Read(run); err != nil {
		return fail(stderr, err)
	}
	prefix := "hub-demo/" + hex.EncodeToString(run) // each run's keys are new
	now := time.Now()
	describe := reconcile.OneShot{Key: prefix + "/describe", Ref: demoGuest, Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"description": "changed by the hub at " + now.UTC().Format(time.RFC3339)}}
	password := reconcile.OneShot{Key: prefix + "/cipassword", Ref: demoGuest, Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"cipassword": "demo-" + hex.EncodeToString(run)}}
	approved := password
	approved.AllowIrreversible = true
	conflicting := describe
	conflicting.Set = map[string]string{"description": "another request under the same JWT ID"}

	stranger, err := newStranger(h)
	if err != nil {
		return fail(stderr, err)
	}
	describeToken, err := h.sign(describe, h.agentID, now)
	if err != nil {
		return fail(stderr, err)
	}
	type step struct {
		title  string
		token  func() (string, error)
		status int
		code   string // want this error code, or, when "", success
		replay bool
	}
	steps := []step{
		{"set the description of " + demoGuest.String() + ": a change that can be undone",
			func() (string, error) { return describeToken, nil }, http.StatusOK, "", false},
		{"the same token again, as a retry after a lost answer would send it",
			func() (string, error) { return describeToken, nil }, http.StatusOK, "", true},
		{"set cipassword, unapproved: Proxmox never gives a password back, so this cannot be undone",
			func() (string, error) { return h.sign(password, h.agentID, now) }, http.StatusForbidden, "irreversible", false},
		{"the same request, with the signed approval (allow_irreversible)",
			func() (string, error) { return h.sign(approved, h.agentID, now) }, http.StatusOK, "", false},
		{"a token for another agent",
			func() (string, error) { return h.sign(describe, h.agentID+"-other", now) }, http.StatusForbidden, "audience", false},
		{"a token signed by a key the agent does not trust",
			func() (string, error) { return stranger.sign(describe, h.agentID, now) }, http.StatusUnauthorized, "unknown_key", false},
		{"the JWT ID of step 1 for another request",
			func() (string, error) { return h.sign(conflicting, h.agentID, now) }, http.StatusConflict, "key_conflict", false},
	}
	fmt.Fprintf(stdout, "guestward hub demo: signing with key %s, for agent %q at %s\n", h.kid, h.agentID, h.endpoint)
	problems := 0
	var firstOp string
	for i, st := range steps {
		fmt.Fprintf(stdout, "\n%d. %s\n", i+1, st.title)
		token, err := st.token()
		if err != nil {
			return fail(stderr, err)
		}
		ans, err := h.post(ctx, token)
		if err != nil {
			return fail(stderr, err)
		}
		fmt.Fprintf(stdout, "   -> %d %s\n", ans.status, ans.summary())
		var problem string
		switch {
		case ans.status != st.status:
			problem = fmt.Sprintf("want status %d", st.status)
		case st.code != "" && ans.code != st.code:
			problem = fmt.Sprintf("want error %q", st.code)
		case st.code == "" && !ans.succeeded():
			problem = "want the operation to succeed"
		case st.code == "" && ans.fields.Replayed != st.replay:
			problem = fmt.Sprintf("want replayed=%v", st.replay)
		case st.replay && ans.fields.OpID != firstOp:
			problem = "want the first run's operation"
		}
		if i == 0 {
			firstOp = ans.fields.OpID
		}
		if problem != "" {
			problems++
			fmt.Fprintf(stdout, "   UNEXPECTED: %s; the agent answered %s\n", problem, strings.TrimSpace(string(ans.body)))
		}
	}
	if problems > 0 {
		fmt.Fprintf(stderr, "hub: %d of %d steps did not go as described\n", problems, len(steps))
		return cli.ExitFailure
	}
	fmt.Fprintf(stdout, "\nDone: two operations ran, the replay sent nothing, and nothing unsigned, unapproved or misaddressed ran.\n")
	return cli.ExitOK
}

// newStranger returns a hub with a fresh key no agent trusts.
func newStranger(h *hub) (*hub, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	s := *h
	s.priv, s.kid = priv, hubkey.KeyID(pub)
	return &s, nil
}
