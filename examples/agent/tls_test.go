package main

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/hubkey"
	"github.com/guestward/guestward/internal/testca"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

// writePair writes cert and its key as PEM files in dir and returns their
// paths.
func writePair(t *testing.T, dir, name string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	return testca.WritePair(t, dir, name, cert)
}

// writeCA writes ca's certificate as a PEM file in dir.
func writeCA(t *testing.T, dir, name string, ca *testca.CA) string {
	t.Helper()
	return ca.WriteCert(t, dir, name)
}

// httpsClient trusts ca and presents cert when it is not nil.
func httpsClient(t *testing.T, ca *testca.CA, cert *tls.Certificate) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// Each wrong TLS setting stops the agent at start with the usage exit
// code and a message naming the flag, before it connects to anything.
func TestTLSUsageErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t)
	certFile, keyFile := writePair(t, dir, "server", ca.Issue(t, nil, net.IPv4(127, 0, 0, 1)))
	_, otherKey := writePair(t, dir, "other", ca.Issue(t, nil, net.IPv4(127, 0, 0, 1)))
	caFile := writeCA(t, dir, "client-ca", ca)
	noCerts := filepath.Join(dir, "empty.pem")
	must(t, os.WriteFile(noCerts, []byte("no certificate here\n"), 0o600))
	keyOnly := filepath.Join(dir, "key-only.pem")
	keyPEM, err := os.ReadFile(keyFile)
	must(t, err)
	must(t, os.WriteFile(keyOnly, keyPEM, 0o600))
	hubKey := filepath.Join(dir, "hub.key")
	_, err = hubkey.Generate(hubKey)
	must(t, err)
	missing := filepath.Join(dir, "missing.pem")

	withListen := func(args ...string) []string {
		return append([]string{"-listen", "127.0.0.1:0", "-hub-keys", hubKey + ".pub", "-agent-id", "agent-7"}, args...)
	}
	// Nothing here is reached: every case is refused first.
	env := map[string]string{"GUESTWARD_DESIRED": filepath.Join(dir, "desired.json"), "GUESTWARD_JOURNAL": filepath.Join(dir, "journal")}
	tests := []struct {
		name   string
		reason string
		args   []string
		env    map[string]string
		want   string
	}{
		{"cert without key", "a certificate cannot be served without its key",
			withListen("-tls-cert", certFile), nil, "-tls-cert and -tls-key go together"},
		{"key without cert", "a key alone serves nothing",
			withListen("-tls-key", keyFile), nil, "-tls-cert and -tls-key go together"},
		{"cert from the environment without key", "the environment is checked as the flags are",
			withListen(), map[string]string{"GUESTWARD_TLS_CERT": certFile}, "-tls-cert and -tls-key go together"},
		{"cert file missing", "tls.LoadX509KeyPair cannot read it",
			withListen("-tls-cert", missing, "-tls-key", keyFile), nil, "-tls-cert " + missing},
		{"key that is not the cert's", "tls.LoadX509KeyPair refuses a mismatched pair",
			withListen("-tls-cert", certFile, "-tls-key", otherKey), nil, "-tls-key " + otherKey},
		{"cert file holding only a key", "no certificate to serve",
			withListen("-tls-cert", keyOnly, "-tls-key", keyFile), nil, "-tls-cert " + keyOnly},
		{"client CA without certificates", "it would refuse every client",
			withListen("-tls-cert", certFile, "-tls-key", keyFile, "-tls-client-ca", noCerts), nil, "-tls-client-ca " + noCerts},
		{"client CA missing", "an unreadable file is a wrong setting",
			withListen("-tls-cert", certFile, "-tls-key", keyFile, "-tls-client-ca", missing), nil, "-tls-client-ca"},
		{"client CA without TLS", "client certificates need TLS",
			withListen("-tls-client-ca", caFile), nil, "-tls-client-ca"},
		{"client CA for the health only", "mutual TLS applies to -listen only",
			[]string{"-health-listen", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile, "-tls-client-ca", caFile}, nil, "-tls-client-ca"},
		{"TLS without a listener", "the flags would be silently ignored",
			[]string{"-tls-cert", certFile, "-tls-key", keyFile}, nil, "-tls-cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{}
			for k, v := range env {
				e[k] = v
			}
			for k, v := range tt.env {
				e[k] = v
			}
			code, out, errOut := agentRun(t, e, "", tt.args...)
			if code != cli.ExitUsage {
				t.Fatalf("exit %d, want %d (%s)\nstdout:\n%s\nstderr:\n%s", code, cli.ExitUsage, tt.reason, out, errOut)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("stderr does not name %q (%s):\n%s", tt.want, tt.reason, errOut)
			}
		})
	}
}

var healthURL = regexp.MustCompile(`https?://[^\s"]+/healthz`)

// With -tls-cert, -tls-key and -tls-client-ca, both listeners speak TLS
// (1.3 to a client that offers it); -listen takes only clients with a
// certificate the client CA signed, and the health asks for none. A
// plain-HTTP request is answered 400 and runs nothing.
func TestTLSListenersMutual(t *testing.T) {
	c := newCluster(t)
	serverCA, clientCA, otherCA := testca.New(t), testca.New(t), testca.New(t)
	certFile, keyFile := writePair(t, c.dir, "server", serverCA.Issue(t, nil, net.IPv4(127, 0, 0, 1)))
	clientCAFile := writeCA(t, c.dir, "client-ca", clientCA)
	url, hub, stop := signedAgent(t, c.env, c.dir, "-interval", "1h", "-health-listen", "127.0.0.1:0",
		"-tls-cert", certFile, "-tls-key", keyFile, "-tls-client-ca", clientCAFile)
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("signed operations announced at %s, want https", url)
	}
	health := healthURL.FindString(hub.out.String())
	if !strings.HasPrefix(health, "https://127.0.0.1:") {
		t.Fatalf("health announced at %q, want https:\n%s", health, hub.out.String())
	}

	// The health: any client trusting the server's CA, no certificate.
	res, err := httpsClient(t, serverCA, nil).Get(health)
	if err != nil {
		t.Fatalf("health over TLS: %v", err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.TLS == nil || res.TLS.Version != tls.VersionTLS13 {
		t.Errorf("health over TLS: %d, TLS state %v; want 200 over TLS 1.3", res.StatusCode, res.TLS)
	}
	plainStatus(t, health)

	// Signed operations: each attempt carries a token that would change
	// the guest, so a refusal is seen to run nothing.
	refused := []struct {
		name   string
		reason string
		client *http.Client
	}{
		{"no client certificate", "-tls-client-ca requires one", httpsClient(t, serverCA, nil)},
		{"certificate of another CA", "only the client CA's are trusted", httpsClient(t, serverCA, ptr(otherCA.IssueClient(t, "intruder")))},
		{"untrusted server", "the client must verify the agent too", httpsClient(t, otherCA, ptr(clientCA.IssueClient(t, "hub")))},
	}
	for i, r := range refused {
		tok := hub.sign(reconcile.OneShot{Key: "hub/refused-" + string(rune('a'+i)), Ref: c.dns, Kind: reconcile.ActionSetConfig,
			Set: map[string]string{"description": "refused"}})
		res, err := r.client.Post(url, "application/jose", strings.NewReader(tok))
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			t.Errorf("%s: answered %d, want the connection refused (%s)", r.name, res.StatusCode, r.reason)
		}
	}
	tok := hub.sign(reconcile.OneShot{Key: "hub/plain", Ref: c.dns, Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"description": "plain"}})
	res, err = http.Post(strings.Replace(url, "https://", "http://", 1), "application/jose", strings.NewReader(tok))
	must(t, err)
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to -listen: %d, want 400", res.StatusCode)
	}
	if g, _ := c.srv.Guest(c.dns); strings.Contains(g.Config["description"], "refused") || strings.Contains(g.Config["description"], "plain") {
		t.Fatalf("a refused request ran: description %q", g.Config["description"])
	}

	hub.client = httpsClient(t, serverCA, ptr(clientCA.IssueClient(t, "hub")))
	status, ans := hub.post(http.MethodPost, hub.sign(reconcile.OneShot{Key: "hub/describe", Ref: c.dns, Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"description": "over mutual TLS"}}))
	if status != http.StatusOK || ans["state"] != "succeeded" {
		t.Fatalf("with the client CA's certificate: %d %v", status, ans)
	}
	if g, _ := c.srv.Guest(c.dns); strings.TrimSpace(g.Config["description"]) != "over mutual TLS" {
		t.Errorf("description %q", g.Config["description"])
	}
	code, out, errOut := stop()
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if strings.Contains(errOut, "in clear") {
		t.Errorf("a clear-text warning with TLS on:\n%s", errOut)
	}
}

// plainStatus checks that a plain-HTTP GET of an https URL is answered 400.
func plainStatus(t *testing.T, url string) {
	t.Helper()
	res, err := http.Get(strings.Replace(url, "https://", "http://", 1))
	must(t, err)
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to %s: %d, want 400", url, res.StatusCode)
	}
}

func ptr[T any](v T) *T { return &v }

// Without -tls-client-ca, -listen speaks TLS to any client that trusts
// its certificate, and refuses TLS older than 1.2. The demo serves it too,
// and its hint names https.
func TestTLSListenWithoutClientCA(t *testing.T) {
	// Go's own server default is 1.2 already, but this setting brings
	// 1.0 back: the agent's minimum must hold regardless.
	t.Setenv("GODEBUG", "tls10server=1")
	dir := t.TempDir()
	ca := testca.New(t)
	certFile, keyFile := writePair(t, dir, "server", ca.Issue(t, []string{"localhost"}, net.IPv4(127, 0, 0, 1)))
	url, hub, stop := signedAgent(t, nil, dir, "-demo", "-tls-cert", certFile, "-tls-key", keyFile)
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("announced at %s, want https", url)
	}
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool,
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}}}
	if res, err := old.Post(url, "application/jose", strings.NewReader("x")); err == nil {
		res.Body.Close()
		t.Errorf("TLS 1.1 client answered %d, want the handshake refused", res.StatusCode)
	}
	hub.client = httpsClient(t, ca, nil)
	scratch := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 150}
	status, ans := hub.post(http.MethodPost, hub.sign(reconcile.OneShot{Key: "hub/stop-scratch", Ref: scratch, Kind: reconcile.ActionStop}))
	if status != http.StatusOK || ans["state"] != "succeeded" {
		t.Fatalf("answer %d %v", status, ans)
	}
	code, out, errOut := stop()
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "-agent https://") {
		t.Errorf("the demo's hint does not name https:\n%s", out)
	}
}

// Without TLS, -listen on an address others can reach logs that signed
// operations travel in clear; on loopback, or with TLS, it does not.
func TestClearListenWarning(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t)
	certFile, keyFile := writePair(t, dir, "server", ca.Issue(t, nil, net.IPv4zero))
	tests := []struct {
		name   string
		reason string
		args   []string
		warn   bool
	}{
		{"loopback", "nobody else reads it", []string{"-listen", "127.0.0.1:0"}, false},
		{"every interface", "the network reads it", []string{"-listen", "0.0.0.0:0"}, true},
		{"every interface with TLS", "TLS hides it", []string{"-listen", "0.0.0.0:0", "-tls-cert", certFile, "-tls-key", keyFile}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, stop := signedAgent(t, nil, t.TempDir(), append([]string{"-demo"}, tt.args...)...)
			code, out, errOut := stop()
			if code != cli.ExitOK {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if got := strings.Contains(errOut, "in clear on a non-loopback address"); got != tt.warn {
				t.Errorf("warning logged: %v, want %v (%s)\nstderr:\n%s", got, tt.warn, tt.reason, errOut)
			}
		})
	}
}
