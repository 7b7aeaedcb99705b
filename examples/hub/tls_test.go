package main

import (
	"crypto/tls"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/internal/testca"
)

// An agent behind mutual TLS with a private CA: the hub reaches it only
// with -ca and a client certificate that agent's client CA signed, and
// every operation refused on the way runs nothing.
func TestMutualTLSAgent(t *testing.T) {
	a := newAgent(t)
	dir := t.TempDir()
	serverCA, clientCA, otherCA := testca.New(t), testca.New(t), testca.New(t)
	srv := httptest.NewUnstartedServer(a.handler)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{serverCA.Issue(t, nil, net.IPv4(127, 0, 0, 1))},
		ClientCAs:    clientCA.Pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	env := map[string]string{"GUESTWARD_HUB_KEY": a.env["GUESTWARD_HUB_KEY"], "GUESTWARD_AGENT_URL": srv.URL, "GUESTWARD_AGENT_ID": "agent-7"}
	caFile := serverCA.WriteCert(t, dir, "server-ca")
	goodCert, goodKey := testca.WritePair(t, dir, "hub", clientCA.IssueClient(t, "hub"))
	badCert, badKey := testca.WritePair(t, dir, "stranger", otherCA.IssueClient(t, "stranger"))
	op := []string{"-op-key", "tls-1", "-guest", "pve1/qemu/150", "-do", "stop"}
	tasks := len(a.fleet.Server.Tasks())

	for _, tc := range []struct {
		name, reason string
		args         []string
	}{
		{"system roots", "the agent's certificate is from a private CA", nil},
		{"no client certificate", "the agent asks for one", []string{"-ca", caFile}},
		{"another CA's client certificate", "the agent trusts only its client CA", []string{"-ca", caFile, "-client-cert", badCert, "-client-key", badKey}},
	} {
		code, out, errOut := hubRun(env, append(tc.args, op...)...)
		if code != cli.ExitFailure || strings.Contains(out, "succeeded") {
			t.Errorf("%s (%s): exit %d\nstdout:\n%s\nstderr:\n%s", tc.name, tc.reason, code, out, errOut)
		}
	}
	if n := len(a.fleet.Server.Tasks()); n != tasks {
		t.Fatalf("refused connections started %d tasks", n-tasks)
	}
	code, out, errOut := hubRun(env, append([]string{"-ca", caFile, "-client-cert", goodCert, "-client-key", goodKey}, op...)...)
	if code != cli.ExitOK || !strings.Contains(out, `"state":"succeeded"`) {
		t.Fatalf("with the CA and a client certificate: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

// The TLS flags are checked before anything is sent: each mistake is a
// usage error naming the flag.
func TestTLSFlagErrors(t *testing.T) {
	a := newAgent(t)
	dir := t.TempDir()
	ca := testca.New(t)
	caFile := ca.WriteCert(t, dir, "ca")
	cert, key := testca.WritePair(t, dir, "hub", ca.IssueClient(t, "hub"))
	_, otherKey := testca.WritePair(t, dir, "other", ca.IssueClient(t, "other"))
	empty := filepath.Join(dir, "empty.pem")
	https := map[string]string{"GUESTWARD_HUB_KEY": a.env["GUESTWARD_HUB_KEY"], "GUESTWARD_AGENT_URL": "https://127.0.0.1:1", "GUESTWARD_AGENT_ID": "agent-7"}
	op := []string{"-op-key", "k", "-guest", "pve1/qemu/150", "-do", "stop"}
	for _, tc := range []struct {
		name, reason string
		env          map[string]string
		args         []string
		flag         string
	}{
		{"over http", "TLS settings for a clear-text agent would be ignored", a.env, []string{"-ca", caFile}, "-ca"},
		{"cert without key", "a certificate is useless without its key", https, []string{"-client-cert", cert}, "-client-key"},
		{"key without cert", "the same, the other way", https, []string{"-client-key", key}, "-client-cert"},
		{"mismatched pair", "the key is not the certificate's", https, []string{"-client-cert", cert, "-client-key", otherKey}, "-client-cert"},
		{"missing CA file", "nothing to trust", https, []string{"-ca", empty}, "-ca"},
		{"CA file without a certificate", "a key is not a CA", https, []string{"-ca", key}, "-ca"},
		{"with -keygen", "a key pair needs no agent", nil, []string{"-keygen", "-key", filepath.Join(dir, "new.key"), "-ca", caFile}, "-ca"},
	} {
		code, out, errOut := hubRun(tc.env, append(tc.args, op...)...)
		if tc.name == "with -keygen" {
			code, out, errOut = hubRun(tc.env, tc.args...)
		}
		if code != cli.ExitUsage || !strings.Contains(errOut, tc.flag) {
			t.Errorf("%s (%s): exit %d, want %d naming %s\nstdout:\n%s\nstderr:\n%s", tc.name, tc.reason, code, cli.ExitUsage, tc.flag, out, errOut)
		}
	}
}
