package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/demo"
	"github.com/guestward/guestward/examples/internal/hubkey"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

func hubRun(env map[string]string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, cli.MapEnv(env), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// agent is the demo fleet behind signedop.Handler, as examples/agent
// -demo -listen serves it, trusting the key at keyPath+".pub".
type agent struct {
	fleet   *demo.Fleet
	url     string
	env     map[string]string
	handler http.Handler // what the agent serves, for another server
}

func newAgent(t *testing.T) *agent {
	t.Helper()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "hub.key")
	if code, out, errOut := hubRun(nil, "-keygen", "-key", keyPath); code != cli.ExitOK {
		t.Fatalf("keygen: %d\n%s\n%s", code, out, errOut)
	}
	keys, err := hubkey.ReadTrusted(keyPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := demo.Start(demo.Options{TaskDuration: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	client, err := fleet.Client(proxmox.WithTaskPolling(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.CloseIdleConnections)
	j, err := journal.OpenFile(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Close() })
	e, err := reconcile.NewEngine(reconcile.Config{Proxmox: client, Journal: j, SettleDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	v, err := signedop.NewVerifier("agent-7", keys)
	if err != nil {
		t.Fatal(err)
	}
	handler := signedop.Handler(e, v)
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return &agent{fleet: fleet, url: srv.URL, handler: handler, env: map[string]string{
		"GUESTWARD_HUB_KEY": keyPath, "GUESTWARD_AGENT_URL": srv.URL, "GUESTWARD_AGENT_ID": "agent-7",
	}}
}

func TestHelp(t *testing.T) {
	code, _, errOut := hubRun(nil, "-h")
	if code != cli.ExitOK || !strings.Contains(errOut, "hub -keygen -key FILE") || !strings.Contains(errOut, "GUESTWARD_HUB_KEY") {
		t.Errorf("exit %d\n%s", code, errOut)
	}
}

func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.key")
	code, out, errOut := hubRun(nil, "-keygen", "-key", path)
	if code != cli.ExitOK {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	priv, err := hubkey.ReadPrivate(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, hubkey.KeyID(priv.Public().(ed25519.PublicKey))) {
		t.Errorf("output does not name the key id:\n%s", out)
	}
	if code, _, errOut := hubRun(nil, "-keygen", "-key", path); code != cli.ExitFailure || !strings.Contains(errOut, "exists") {
		t.Errorf("a second keygen over the key: %d %s", code, errOut)
	}
}

// One operation: it runs (exit 0), the same command again is answered from
// the agent's journal (exit 0, replayed), and a refusal exits 1.
func TestSendOne(t *testing.T) {
	a := newAgent(t)
	args := []string{"-op-key", "deploy-1/stop-scratch", "-guest", "pve1/qemu/150", "-do", "stop"}
	code, out, errOut := hubRun(a.env, args...)
	if code != cli.ExitOK || !strings.Contains(out, `"state":"succeeded"`) {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	tasks := len(a.fleet.Server.Tasks())
	code, out, errOut = hubRun(a.env, args...)
	if code != cli.ExitOK || !strings.Contains(out, `"replayed":true`) {
		t.Fatalf("again: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if n := len(a.fleet.Server.Tasks()); n != tasks {
		t.Errorf("the second command started %d tasks", n-tasks)
	}
	// The same key for another request.
	code, out, errOut = hubRun(a.env, "-op-key", "deploy-1/stop-scratch", "-guest", "pve1/qemu/150", "-do", "start")
	if code != cli.ExitFailure || !strings.Contains(out, "key_conflict") || !strings.Contains(errOut, "409") {
		t.Errorf("conflict: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// Another agent's id.
	code, out, _ = hubRun(a.env, "-agent-id", "agent-8", "-op-key", "k2", "-guest", "pve1/qemu/150", "-do", "start")
	if code != cli.ExitFailure || !strings.Contains(out, `"audience"`) {
		t.Errorf("audience: exit %d\n%s", code, out)
	}
}

func TestBadSettings(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "hub.key")
	if code, _, errOut := hubRun(nil, "-keygen", "-key", keyPath); code != cli.ExitOK {
		t.Fatal(errOut)
	}
	notKey := filepath.Join(dir, "not.key")
	if err := os.WriteFile(notKey, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GUESTWARD_HUB_KEY": keyPath, "GUESTWARD_AGENT_URL": "http://127.0.0.1:1", "GUESTWARD_AGENT_ID": "a"}
	op := []string{"-op-key", "k", "-guest", "pve1/qemu/100", "-do", "start"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range env {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"no key", nil, op, cli.ExitUsage, "no key"},
		{"not a key", with("GUESTWARD_HUB_KEY", notKey), op, cli.ExitUsage, "PRIVATE KEY"},
		{"public key as private", with("GUESTWARD_HUB_KEY", keyPath+".pub"), op, cli.ExitUsage, "PRIVATE KEY"},
		{"no agent", with("GUESTWARD_AGENT_URL", ""), op, cli.ExitUsage, "no agent"},
		{"no agent id", with("GUESTWARD_AGENT_ID", ""), op, cli.ExitUsage, "no agent id"},
		{"agent not http", with("GUESTWARD_AGENT_URL", "ftp://x"), op, cli.ExitUsage, "want http"},
		{"agent with credentials", with("GUESTWARD_AGENT_URL", "http://u:p@x"), op, cli.ExitUsage, "want http"},
		{"no operation", env, nil, cli.ExitUsage, "-op-key"},
		{"bad guest", env, []string{"-op-key", "k", "-guest", "pve1/100", "-do", "start"}, cli.ExitUsage, "node/type/vmid"},
		{"bad action", env, []string{"-op-key", "k", "-guest", "pve1/qemu/100", "-do", "destroy"}, cli.ExitUsage, "-do"},
		{"set without set_config", env, append(op, "-set", "memory=1"), cli.ExitUsage, "no configuration change"},
		{"zero ttl", env, append(op, "-ttl", "0s"), cli.ExitUsage, "-ttl"},
		{"keygen with an operation", nil, []string{"-keygen", "-key", filepath.Join(dir, "k2"), "-do", "start"}, cli.ExitUsage, "drop -do"},
		{"demo with an operation", env, []string{"-demo", "-op-key", "k"}, cli.ExitUsage, "drop -op-key"},
		{"agent unreachable", env, op, cli.ExitFailure, "posting to the agent"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := hubRun(tc.env, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", code, tc.code, tc.want, out, errOut)
			}
			if !strings.HasPrefix(errOut, "hub: ") {
				t.Errorf("stderr does not start with the program's name:\n%s", errOut)
			}
		})
	}
}
