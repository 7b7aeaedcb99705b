package signedop_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

var web = proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}

// agent is a fake cluster with one stopped VM, a file journal, an engine
// and a handler, as an agent process holds them.
type agent struct {
	t      testing.TB
	srv    *proxmoxtest.Server
	client *proxmox.Client
	path   string
	j      *journal.FileJournal
	e      *reconcile.Engine
	v      *signedop.Verifier
	h      http.Handler
	priv   ed25519.PrivateKey
}

func newAgent(t testing.TB, opts ...func(*reconcile.Config)) *agent {
	t.Helper()
	srv := proxmoxtest.Start(t, proxmoxtest.WithNodes("pve1"), proxmoxtest.WithSeed(1))
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100,
		Config: map[string]string{"name": "web", "memory": "2048"}}); err != nil {
		t.Fatal(err)
	}
	c, err := proxmox.New(srv.URL,
		proxmox.WithHTTPClient(srv.Client()),
		proxmox.WithAPIToken(srv.APIToken()),
		proxmox.WithTaskPolling(time.Millisecond, 5*time.Millisecond),
		proxmox.WithRetry(2, time.Millisecond, 5*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	_, priv := seedKey(1)
	a := &agent{t: t, srv: srv, client: c, path: filepath.Join(t.TempDir(), "journal"), priv: priv}
	a.v = newTestVerifier(t)
	a.restart(opts...)
	return a
}

// restart closes the journal, if open, and starts a new engine on the
// reopened file, as a restarted agent would.
func (a *agent) restart(opts ...func(*reconcile.Config)) {
	a.t.Helper()
	if a.j != nil {
		if err := a.j.Close(); err != nil {
			a.t.Fatal(err)
		}
	}
	j, err := journal.OpenFile(a.path)
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { _ = j.Close() })
	cfg := reconcile.Config{
		Proxmox:     a.client,
		Journal:     j,
		RetryMin:    time.Millisecond,
		RetryMax:    5 * time.Millisecond,
		SettleDelay: time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	e, err := reconcile.NewEngine(cfg)
	if err != nil {
		a.t.Fatal(err)
	}
	a.j, a.e = j, e
	a.h = signedop.Handler(e, a.v)
}

// token signs op for agent-1, valid from a minute ago for five minutes.
func (a *agent) token(op reconcile.OneShot) string {
	a.t.Helper()
	now := time.Now()
	return a.tokenAt(op, now.Add(-time.Minute), now.Add(4*time.Minute))
}

func (a *agent) tokenAt(op reconcile.OneShot, iat, exp time.Time) string {
	a.t.Helper()
	tok, err := signedop.Sign(a.priv, "k1", signedop.Claims{Issuer: "hub-1", Audience: "agent-1", IssuedAt: iat, Expiry: exp, Op: op})
	if err != nil {
		a.t.Fatal(err)
	}
	return tok
}

// answer is a decoded answer of the handler.
type answer struct {
	status int
	header http.Header
	body   string
	result map[string]any // the Result, from the body or its "result"
	code   string         // the error code, if any
}

func (a *agent) post(token string) answer {
	a.t.Helper()
	return a.do(httptest.NewRequestWithContext(ctxT(a.t), http.MethodPost, "/op", strings.NewReader(token)))
}

func (a *agent) do(req *http.Request) answer {
	a.t.Helper()
	rec := httptest.NewRecorder()
	a.h.ServeHTTP(rec, req)
	ans := answer{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		a.t.Fatalf("answer is not JSON: %v: %q", err, ans.body)
	}
	if e, ok := m["error"].(map[string]any); ok {
		ans.code, _ = e["code"].(string)
		ans.result, _ = m["result"].(map[string]any)
	} else {
		ans.result = m
	}
	return ans
}

// writes counts the requests to Proxmox that could change something.
func (a *agent) writes() int {
	n := 0
	for _, r := range a.srv.Requests() {
		if r.Method != http.MethodGet {
			n++
		}
	}
	return n
}

func (a *agent) guest() proxmoxtest.GuestState {
	a.t.Helper()
	g, ok := a.srv.Guest(web)
	if !ok {
		a.t.Fatal("guest gone")
	}
	return g
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
