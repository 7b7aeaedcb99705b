package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/hubkey"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

var opsURL = regexp.MustCompile(`https?://[^\s"]+/v1/op`)

// signedAgent runs the agent with args and -listen (127.0.0.1:0 unless
// args set it) in this process until the test stops it, and returns the
// URL it takes signed operations at, the hub's key, and a function that
// stops the agent and returns its exit code and outputs.
func signedAgent(t *testing.T, env map[string]string, dir string, args ...string) (url string, h *testHub, stop func() (int, string, string)) {
	t.Helper()
	keyPath := filepath.Join(dir, "hub.key")
	if _, err := hubkey.Generate(keyPath); err != nil {
		t.Fatal(err)
	}
	priv, err := hubkey.ReadPrivate(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	out := &notifyWriter{want: "Taking signed operations", seen: make(chan struct{})}
	seen := out.seen
	var stderr bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	if !slices.Contains(args, "-listen") {
		args = append(args, "-listen", "127.0.0.1:0")
	}
	args = append(args, "-hub-keys", keyPath+".pub", "-agent-id", "agent-7")
	go func() { done <- run(ctx, args, cli.MapEnv(env), out, &stderr) }()
	select {
	case <-seen:
	case code := <-done:
		cancel()
		t.Fatalf("the agent ended with %d before listening\nstdout:\n%s\nstderr:\n%s", code, out.String(), stderr.String())
	}
	url = opsURL.FindString(out.String())
	if url == "" {
		cancel()
		t.Fatalf("no URL in the output:\n%s", out.String())
	}
	stopped := false
	var code int
	stop = func() (int, string, string) {
		if !stopped {
			stopped = true
			cancel()
			code = <-done
		}
		return code, out.String(), stderr.String()
	}
	t.Cleanup(func() { stop() })
	return url, &testHub{t: t, priv: priv, url: url, out: out}, stop
}

type testHub struct {
	t      *testing.T
	priv   []byte
	url    string
	out    *notifyWriter // the agent's standard output
	client *http.Client  // nil: http.DefaultClient
}

// waitOutput waits until the agent has printed want.
func (h *testHub) waitOutput(want string) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(h.out.String(), want) {
		if time.Now().After(deadline) {
			h.t.Fatalf("the agent never printed %q:\n%s", want, h.out.String())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
}

func (h *testHub) sign(op reconcile.OneShot) string {
	h.t.Helper()
	now := time.Now()
	tok, err := signedop.Sign(h.priv, hubkey.KeyID(h.priv[32:]), signedop.Claims{Issuer: "test-hub", Audience: "agent-7",
		IssuedAt: now, Expiry: now.Add(time.Minute), Op: op})
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

func (h *testHub) post(method, token string) (int, map[string]any) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url, strings.NewReader(token))
	if err != nil {
		h.t.Fatal(err)
	}
	client := h.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		h.t.Fatalf("answer %d is not JSON: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, m
}

// The daemon takes signed operations beside its passes: one runs, its
// replay is answered from the journal, and other methods are refused.
func TestDaemonTakesSignedOperations(t *testing.T) {
	c := newCluster(t)
	_, hub, stop := signedAgent(t, c.env, c.dir, "-interval", "1h")
	op := reconcile.OneShot{Key: "hub/describe-dns", Ref: c.dns, Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"description": "set by the hub"}}
	tok := hub.sign(op)
	status, ans := hub.post(http.MethodPost, tok)
	if status != http.StatusOK || ans["state"] != "succeeded" {
		t.Fatalf("answer %d %v", status, ans)
	}
	// The daemon's first pass runs beside the hub's requests; once it has
	// reported, nothing but the hub's requests writes to the cluster.
	hub.waitOutput("pass 1:")
	tasksBefore := len(c.srv.Tasks())
	writesBefore := countWrites(c)
	status, ans = hub.post(http.MethodPost, tok)
	if status != http.StatusOK || ans["replayed"] != true {
		t.Errorf("replay: %d %v", status, ans)
	}
	if len(c.srv.Tasks()) != tasksBefore || countWrites(c) != writesBefore {
		t.Error("the replay sent something")
	}
	if status, _ := hub.post(http.MethodGet, ""); status != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", status)
	}
	g, _ := c.srv.Guest(c.dns)
	if strings.TrimSpace(g.Config["description"]) != "set by the hub" {
		t.Errorf("description %q", g.Config["description"])
	}
	code, out, errOut := stop()
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func countWrites(c *cluster) int {
	n := 0
	for _, r := range c.srv.Requests() {
		if r.Method != http.MethodGet {
			n++
		}
	}
	return n
}

// The demo, with -listen, goes on taking signed operations for its fleet
// after the story, until it is stopped.
func TestDemoTakesSignedOperations(t *testing.T) {
	_, hub, stop := signedAgent(t, nil, t.TempDir(), "-demo")
	scratch := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 150}
	status, ans := hub.post(http.MethodPost, hub.sign(reconcile.OneShot{Key: "hub/stop-scratch", Ref: scratch, Kind: reconcile.ActionStop}))
	if status != http.StatusOK || ans["state"] != "succeeded" {
		t.Fatalf("answer %d %v", status, ans)
	}
	code, out, errOut := stop()
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"6. Signed operations", "go run ./examples/hub -demo", "pve1/qemu/150  stop       done", "stopping:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
