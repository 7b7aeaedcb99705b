package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/hubkey"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

// cluster is a small fake cluster with a desired state, and the environment
// an agent needs to reach it, as an operator would write it.
type cluster struct {
	srv     *proxmoxtest.Server
	dir     string
	secret  string
	env     map[string]string
	web     proxmox.Ref // stopped, declared running with more memory
	dns     proxmox.Ref // in sync
	backupd proxmox.Ref // locked, declared with other memory
}

const desiredJSON = `{"guests": [
  {"node": "pve1", "type": "qemu", "vmid": 100, "power": "running", "config": {"memory": 2048, "tags": "web"}},
  {"node": "pve1", "type": "lxc", "vmid": 200, "power": "running", "config": {"hostname": "dns-1"}}
]}`

func newCluster(t *testing.T, opts ...proxmoxtest.Option) *cluster {
	t.Helper()
	opts = append([]proxmoxtest.Option{proxmoxtest.WithNodes("pve1")}, opts...)
	c := &cluster{
		srv:     proxmoxtest.Start(t, opts...),
		dir:     t.TempDir(),
		web:     proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100},
		dns:     proxmox.Ref{Node: "pve1", Type: proxmox.LXC, VMID: 200},
		backupd: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 101},
	}
	must(t, c.srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100,
		Config: map[string]string{"name": "web-1", "memory": "1024"}}))
	must(t, c.srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.LXC, VMID: 200, Running: true,
		Config: map[string]string{"hostname": "dns-1", "memory": "512", "rootfs": "local-lvm:vm-200-disk-0,size=8G"}}))
	must(t, c.srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 101, Running: true, Lock: "backup",
		Config: map[string]string{"name": "backupd", "memory": "1024"}}))
	id, secret := c.srv.APIToken()
	c.secret = secret
	secretFile := filepath.Join(c.dir, "token")
	must(t, os.WriteFile(secretFile, []byte(secret+"\n"), 0o600))
	desired := filepath.Join(c.dir, "desired.json")
	must(t, os.WriteFile(desired, []byte(desiredJSON), 0o600))
	c.env = map[string]string{
		"GUESTWARD_URL":               c.srv.URL,
		"GUESTWARD_TOKEN_ID":          id,
		"GUESTWARD_TOKEN_SECRET_FILE": secretFile,
		"GUESTWARD_FINGERPRINT":       c.srv.Fingerprint(),
		"GUESTWARD_DESIRED":           desired,
		"GUESTWARD_JOURNAL":           filepath.Join(c.dir, "journal"),
		"GUESTWARD_SETTLE_DELAY":      "100ms",
	}
	return c
}

// with returns a copy of the environment with the given changes; an empty
// value removes the variable.
func (c *cluster) with(kv ...string) map[string]string {
	env := make(map[string]string, len(c.env))
	for k, v := range c.env {
		env[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(env, kv[i])
		} else {
			env[kv[i]] = kv[i+1]
		}
	}
	return env
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// agentRun runs the agent in this process and returns its exit code and
// outputs. It fails the test if the token secret shows up in either output.
func agentRun(t *testing.T, env map[string]string, secret string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, cli.MapEnv(env), &stdout, &stderr)
	if secret != "" && (strings.Contains(stdout.String(), secret) || strings.Contains(stderr.String(), secret)) {
		t.Errorf("the token secret appears in the output of agent %q", args)
	}
	return code, stdout.String(), stderr.String()
}

// records parses JSON-lines output into records, by type.
func records(t *testing.T, out string) map[string][]map[string]any {
	t.Helper()
	recs := map[string][]map[string]any{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("output line is not JSON: %v: %q", err, sc.Text())
		}
		typ, _ := m["type"].(string)
		if typ == "" {
			t.Fatalf("output line without a type: %q", sc.Text())
		}
		recs[typ] = append(recs[typ], m)
	}
	return recs
}

func TestOnceConvergesThenHasNothingToDo(t *testing.T) {
	for _, journalName := range []string{"journal", "journal.db"} {
		t.Run(journalName, func(t *testing.T) {
			c := newCluster(t)
			// Only the two guests that can converge are declared here.
			env := c.with("GUESTWARD_JOURNAL", filepath.Join(c.dir, journalName))

			code, out, errOut := agentRun(t, env, c.secret, "-once", "-output", "json")
			if code != cli.ExitOK {
				t.Fatalf("first -once: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			recs := records(t, out)
			start := recs["start"][0]
			if start["journal_backend"] != cli.Backend(journalName) || start["proxmox_version"] != c.srv.Version() {
				t.Errorf("start record %v: want backend %s and version %s", start, cli.Backend(journalName), c.srv.Version())
			}
			rep := recs["report"][0]
			if rep["converged"] != true || rep["actions_sent"] != 2.0 || rep["actions_succeeded"] != 2.0 {
				t.Errorf("first pass: %v, want converged with 2 actions (set_config, start) succeeded", rep)
			}
			if len(recs["event"]) == 0 {
				t.Error("no event records: progress is not reported")
			}
			if exit := recs["exit"]; len(exit) != 1 || exit[0]["code"] != 0.0 {
				t.Errorf("exit records %v, want one with code 0", exit)
			}
			st, _ := c.srv.Guest(c.web)
			if !st.Running || st.Config["memory"] != "2048" {
				t.Errorf("web guest: running %v, memory %s; want running with 2048", st.Running, st.Config["memory"])
			}

			code, out, errOut = agentRun(t, env, c.secret, "-once", "-output", "json")
			if code != cli.ExitOK {
				t.Fatalf("second -once: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			rep = records(t, out)["report"][0]
			if rep["actions_sent"] != 0.0 {
				t.Errorf("second pass sent %v actions, want none", rep["actions_sent"])
			}
			if n := c.srv.TaskCount(c.web, "qmstart"); n != 1 {
				t.Errorf("%d start tasks, want 1", n)
			}
		})
	}
}

// A CA file instead of a pinned fingerprint: the fake's self-signed
// certificate is its own CA, and it names 127.0.0.1.
func TestOnceWithCAFile(t *testing.T) {
	c := newCluster(t)
	caFile := filepath.Join(c.dir, "ca.pem")
	must(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.srv.Certificate().Raw}), 0o600))
	code, out, errOut := agentRun(t, c.with("GUESTWARD_FINGERPRINT", "", "GUESTWARD_CA_FILE", caFile), c.secret, "-once")
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func TestOnceNotConvergedExits3(t *testing.T) {
	c := newCluster(t)
	desired := filepath.Join(c.dir, "locked.json")
	must(t, os.WriteFile(desired, []byte(`{"guests": [{"node": "pve1", "type": "qemu", "vmid": 101, "config": {"memory": 4096}}]}`), 0o600))
	code, out, errOut := agentRun(t, c.with("GUESTWARD_DESIRED", desired), c.secret, "-once")
	if code != cli.ExitNotConverged {
		t.Fatalf("exit %d, want %d for a locked guest\nstdout:\n%s\nstderr:\n%s", code, cli.ExitNotConverged, out, errOut)
	}
	if !strings.Contains(out, "locked (backup)") {
		t.Errorf("the text output does not say why:\n%s", out)
	}
}

func TestDryRunChangesNothingAndOpensNoJournal(t *testing.T) {
	c := newCluster(t)
	code, out, errOut := agentRun(t, c.env, c.secret, "-once", "-dry-run")
	if code != cli.ExitNotConverged {
		t.Fatalf("exit %d, want %d (changes planned)\nstdout:\n%s\nstderr:\n%s", code, cli.ExitNotConverged, out, errOut)
	}
	if !strings.Contains(out, "planned") {
		t.Errorf("the output does not show the planned guest:\n%s", out)
	}
	if n := len(c.srv.Tasks()); n != 0 {
		t.Errorf("a dry run started %d tasks", n)
	}
	if _, err := os.Stat(c.env["GUESTWARD_JOURNAL"]); !os.IsNotExist(err) {
		t.Errorf("a dry run created the journal: %v", err)
	}
}

func TestHelp(t *testing.T) {
	code, _, errOut := agentRun(t, nil, "", "-h")
	if code != cli.ExitOK || !strings.Contains(errOut, "GUESTWARD_TOKEN_SECRET") || !strings.Contains(errOut, "-demo") {
		t.Fatalf("-h: exit %d, usage:\n%s", code, errOut)
	}
}

// Every bad setting gets a clear message on stderr and a non-zero exit
// code: 2 when the settings are wrong, 1 when the agent cannot do its work.
func TestBadSettings(t *testing.T) {
	c := newCluster(t)
	notPEM := filepath.Join(c.dir, "ca.pem")
	must(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	badDesired := filepath.Join(c.dir, "bad.json")
	must(t, os.WriteFile(badDesired, []byte(`{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "confg": {}}]}`), 0o600))
	invalidDesired := filepath.Join(c.dir, "invalid.json")
	must(t, os.WriteFile(invalidDesired, []byte(`{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "power": "on"}]}`), 0o600))
	wrongSecret := filepath.Join(c.dir, "wrong")
	must(t, os.WriteFile(wrongSecret, []byte("00000000-0000-0000-0000-000000000000"), 0o600))
	otherFP := strings.Repeat("AB:", 31) + "AB"
	hubKey := filepath.Join(c.dir, "hub.key")
	if _, err := hubkey.Generate(hubKey); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string // on stderr
	}{
		{"nothing set", nil, nil, cli.ExitUsage, "no desired state"},
		{"no journal", c.with("GUESTWARD_JOURNAL", ""), nil, cli.ExitUsage, "no journal"},
		{"secret as a flag", c.env, []string{"-token-secret", c.secret}, cli.ExitUsage, "never taken from a flag"},
		{"secret twice", c.with("GUESTWARD_TOKEN_SECRET", c.secret), nil, cli.ExitUsage, "given twice"},
		{"no secret", c.with("GUESTWARD_TOKEN_SECRET_FILE", ""), nil, cli.ExitUsage, "no API token secret"},
		{"no url", c.with("GUESTWARD_URL", ""), nil, cli.ExitUsage, "no Proxmox URL"},
		{"plain http", c.with("GUESTWARD_URL", "http://127.0.0.1:8006"), nil, cli.ExitUsage, "https"},
		{"bad fingerprint", c.with("GUESTWARD_FINGERPRINT", "12:34"), nil, cli.ExitUsage, "fingerprint"},
		{"ca file without certificates", c.env, []string{"-ca-file", notPEM}, cli.ExitUsage, "no PEM certificate"},
		{"bad interval from env", c.with("GUESTWARD_INTERVAL", "soon"), nil, cli.ExitUsage, "GUESTWARD_INTERVAL"},
		{"zero interval", c.env, []string{"-interval", "0s"}, cli.ExitUsage, "-interval must be positive"},
		{"jitter over interval", c.env, []string{"-interval", "1s", "-jitter", "2s"}, cli.ExitUsage, "exceeds -interval"},
		{"zero concurrency", c.env, []string{"-concurrency", "0"}, cli.ExitUsage, "-concurrency"},
		{"unknown output", c.env, []string{"-output", "xml"}, cli.ExitUsage, "text, json"},
		{"unknown log level", c.with("GUESTWARD_LOG_LEVEL", "loud"), nil, cli.ExitUsage, "GUESTWARD_LOG_LEVEL"},
		{"stray argument", c.env, []string{"-once", "now"}, cli.ExitUsage, "unexpected argument"},
		{"unknown flag", c.env, []string{"-frobnicate"}, cli.ExitUsage, "frobnicate"},
		{"missing desired file", c.with("GUESTWARD_DESIRED", filepath.Join(c.dir, "nope.json")), nil, cli.ExitUsage, "desired state"},
		{"misspelt desired field", c.with("GUESTWARD_DESIRED", badDesired), nil, cli.ExitUsage, "confg"},
		{"invalid desired value", c.with("GUESTWARD_DESIRED", invalidDesired), nil, cli.ExitUsage, "desired state"},
		{"demo with a cluster", nil, []string{"-demo", "-url", c.srv.URL}, cli.ExitUsage, "drop -url"},
		{"demo-pve without demo", c.env, []string{"-demo-pve", "7.4"}, cli.ExitUsage, "only applies with -demo"},
		{"listen without keys", c.env, []string{"-listen", "127.0.0.1:0", "-agent-id", "a"}, cli.ExitUsage, "-hub-keys"},
		{"listen without id", c.env, []string{"-listen", "127.0.0.1:0", "-hub-keys", hubKey + ".pub"}, cli.ExitUsage, "-agent-id"},
		{"keys without listen", c.env, []string{"-hub-keys", hubKey + ".pub"}, cli.ExitUsage, "only with -listen"},
		{"private key as trusted", c.env, []string{"-listen", "127.0.0.1:0", "-agent-id", "a", "-hub-keys", hubKey}, cli.ExitUsage, "PUBLIC KEY"},
		{"missing key file", c.with("GUESTWARD_HUB_KEYS", filepath.Join(c.dir, "nope.pub"), "GUESTWARD_AGENT_ID", "a"), []string{"-listen", "127.0.0.1:0"}, cli.ExitUsage, "-hub-keys"},
		{"agent id with blank", c.env, []string{"-listen", "127.0.0.1:0", "-agent-id", "a ", "-hub-keys", hubKey + ".pub"}, cli.ExitUsage, "audience"},
		{"listen with once", c.env, []string{"-listen", "127.0.0.1:0", "-agent-id", "a", "-hub-keys", hubKey + ".pub", "-once"}, cli.ExitUsage, "drop -once"},
		{"listen on a bad address", c.env, []string{"-listen", "256.0.0.1:0", "-agent-id", "a", "-hub-keys", hubKey + ".pub"}, cli.ExitFailure, "-listen"},
		{"health with once", c.env, []string{"-health-listen", "127.0.0.1:0", "-once"}, cli.ExitUsage, "drop -once"},
		{"health with demo", nil, []string{"-health-listen", "127.0.0.1:0", "-demo"}, cli.ExitUsage, "not to -demo"},
		{"health on a bad address", c.env, []string{"-health-listen", "256.0.0.1:0"}, cli.ExitFailure, "-health-listen"},
		{"wrong secret", c.with("GUESTWARD_TOKEN_SECRET_FILE", wrongSecret), []string{"-once"}, cli.ExitFailure, "refused the token"},
		{"wrong fingerprint", c.with("GUESTWARD_FINGERPRINT", otherFP), []string{"-once"}, cli.ExitFailure, c.srv.URL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := agentRun(t, tc.env, c.secret, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr does not contain %q:\n%s", tc.want, errOut)
			}
			if !strings.HasPrefix(errOut, "agent: ") {
				t.Errorf("stderr does not start with the program's name:\n%s", errOut)
			}
		})
	}
	if n := len(c.srv.Tasks()); n != 0 {
		t.Errorf("bad settings started %d tasks", n)
	}
}

func TestJournalInUse(t *testing.T) {
	c := newCluster(t)
	j, err := journal.OpenFile(c.env["GUESTWARD_JOURNAL"])
	must(t, err)
	defer j.Close()
	code, _, errOut := agentRun(t, c.env, c.secret, "-once")
	if code != cli.ExitFailure || !strings.Contains(errOut, "in use by another process") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and a message that the journal is in use", code, errOut)
	}
}

// The demo, in process: the end-to-end test in e2e_test.go runs the real
// binary; this one checks the JSON story in detail.
func TestDemoJSON(t *testing.T) {
	code, out, errOut := agentRun(t, nil, "", "-demo", "-output", "json")
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, errOut)
	}
	recs := records(t, out)
	if plans := recs["plan"]; len(plans) != 1 {
		t.Fatalf("%d plan records, want 1", len(plans))
	}
	summary := recs["plan"][0]["plan"].(map[string]any)["summary"].(map[string]any)
	if summary["actions"] != 11.0 || summary["skip"] != 3.0 || summary["in_sync"] != 3.0 {
		t.Errorf("plan summary %v", summary)
	}
	reps := recs["report"]
	if len(reps) != 2 {
		t.Fatalf("%d report records, want 2", len(reps))
	}
	if reps[0]["actions_sent"] != 11.0 || reps[0]["actions_succeeded"] != 11.0 {
		t.Errorf("first pass: %v", reps[0])
	}
	if reps[1]["actions_sent"] != 0.0 {
		t.Errorf("second pass sent %v actions", reps[1]["actions_sent"])
	}
	done := 0
	for _, ev := range recs["event"] {
		if ev["phase"] == "done" {
			done++
		}
	}
	if done != 11 {
		t.Errorf("%d done events, want 11", done)
	}
	if errOut != "" {
		t.Errorf("the demo logged to stderr:\n%s", errOut)
	}
}

func TestMemoryAsString(t *testing.T) {
	for v, want := range map[string]bool{"7.4-17": false, "8.0.4": false, "8.1.4": true, "8.4.1": true, "9.0.10": true, "x": false} {
		if got := memoryAsString(v); got != want {
			t.Errorf("memoryAsString(%q) = %v", v, got)
		}
	}
}

// notifyWriter is a stdout that tells the test when a line containing want
// has been written.
type notifyWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if w.seen != nil && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
		w.seen = nil
	}
	return n, err
}

func (w *notifyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// The daemon in this process, in text mode: it runs pass after pass at the
// interval and stops cleanly when its context ends, as on SIGTERM.
func TestDaemonRunsPassesUntilStopped(t *testing.T) {
	c := newCluster(t)
	out := &notifyWriter{want: "pass 3:", seen: make(chan struct{})}
	seen := out.seen
	var stderr bytes.Buffer
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"-interval", "20ms", "-jitter", "1ms"}, cli.MapEnv(c.env), out, &stderr)
	}()
	<-seen
	stop()
	if code := <-done; code != cli.ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), stderr.String())
	}
	text := out.String()
	for _, want := range []string{
		"guestward agent: Proxmox VE " + c.srv.Version(),
		"journal " + c.env["GUESTWARD_JOURNAL"] + " (file backend)",
		"recover: the journal shows no operation in flight",
		"pass 1: 2 guests: 1 in sync, 1 changed; 2 actions sent, 2 succeeded",
		"pass 2: 2 guests: 2 in sync; 0 actions sent",
		"set_config done",
		"stopping: no new operation starts",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("stdout lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text+stderr.String(), c.secret) {
		t.Error("the token secret appears in the output")
	}
	j, err := journal.OpenFile(c.env["GUESTWARD_JOURNAL"])
	if err != nil {
		t.Fatalf("the journal was not closed: %v", err)
	}
	j.Close()
}

// A stop request while the agent is still connecting or recovering ends it
// with exit 0, like a stop at any later moment; with -once it is a
// failure, since the pass it was asked for did not happen. What recovery
// left undone stays in the journal.
func TestStopWhileStarting(t *testing.T) {
	for _, tt := range []struct {
		name   string
		path   string // the request held when the stop comes
		args   []string
		want   int
		reason string // in the exit record, if the agent got that far
	}{
		{"connecting", "/version", nil, cli.ExitOK, ""},
		{"connecting, -once", "/version", []string{"-once"}, cli.ExitFailure, ""},
		{"recovering", "/nodes/pve1/tasks", []string{"-output", "json"}, cli.ExitOK, `"reason":"stopped during recovery"`},
		{"recovering, -once", "/nodes/pve1/tasks", []string{"-once", "-output", "json"}, cli.ExitFailure, `"reason":"recovery did not finish`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t)
			// An operation a crash left in flight, long enough ago that
			// recovery looks for its task at once.
			j, err := journal.OpenFile(c.env["GUESTWARD_JOURNAL"])
			must(t, err)
			must(t, j.Append(context.Background(), journal.Entry{OpID: "op-1", VMID: 100, Kind: "start", State: journal.Started,
				At: time.Now().Add(-time.Hour), Params: map[string]string{"node": "pve1", "type": "qemu"}}))
			must(t, j.Close())

			hold, arrived := make(chan struct{}), make(chan struct{})
			var once sync.Once
			c.srv.Inject(proxmoxtest.Fault{Path: tt.path, Wait: hold,
				Before: func() { once.Do(func() { close(arrived) }) }})
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan int)
			var stdout, stderr bytes.Buffer
			go func() { done <- run(ctx, tt.args, cli.MapEnv(c.env), &stdout, &stderr) }()
			<-arrived // the agent waits for the held request
			stop()
			code := <-done
			close(hold)
			if code != tt.want || !strings.Contains(stdout.String(), tt.reason) {
				t.Errorf("exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", code, tt.want, tt.reason, stdout.String(), stderr.String())
			}
			j, err = journal.OpenFile(c.env["GUESTWARD_JOURNAL"])
			must(t, err)
			defer j.Close()
			if inflight, err := j.InFlight(context.Background()); err != nil || len(inflight) != 1 {
				t.Errorf("in flight after the stop: %v %v, want op-1 still there", inflight, err)
			}
		})
	}
}
