package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

func oneshotRun(env map[string]string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, cli.MapEnv(env), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestDemo(t *testing.T) {
	code, out, errOut := oneshotRun(nil, "-demo")
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"applied by op", "already applied by op", "nothing was sent", "Proxmox ran 1 start task"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

type fixture struct {
	srv    *proxmoxtest.Server
	env    map[string]string
	secret string
	web    proxmox.Ref
	db     proxmox.Ref
}

func newFixture(t *testing.T, journalName string) *fixture {
	srv := proxmoxtest.Start(t, proxmoxtest.WithNodes("pve1"))
	f := &fixture{srv: srv, web: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100},
		db: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 101}}
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100,
		Config: map[string]string{"name": "web-1", "memory": "1024"}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 101, Lock: "backup",
		Config: map[string]string{"name": "db-1", "memory": "1024"}}); err != nil {
		t.Fatal(err)
	}
	id, secret := srv.APIToken()
	f.secret = secret
	f.env = map[string]string{"GUESTWARD_URL": srv.URL, "GUESTWARD_TOKEN_ID": id, "GUESTWARD_TOKEN_SECRET": secret,
		"GUESTWARD_FINGERPRINT": srv.Fingerprint(), "GUESTWARD_JOURNAL": filepath.Join(t.TempDir(), journalName),
		"GUESTWARD_SETTLE_DELAY": "100ms"}
	return f
}

// The same key twice, in two runs of the program sharing the journal: the
// second run sends nothing and says so; a new key runs again.
func TestSameKeyTwice(t *testing.T) {
	for _, name := range []string{"journal", "journal.bolt"} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, name)
			args := []string{"-key", "ticket-1/memory", "-guest", "pve1/qemu/100", "-do", "set_config", "-set", "memory=2048", "-set", "tags=web"}
			code, out, errOut := oneshotRun(f.env, args...)
			if code != cli.ExitOK || !strings.Contains(out, "applied by op") {
				t.Fatalf("first run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			code, out, errOut = oneshotRun(f.env, append(args, "-output", "json")...)
			if code != cli.ExitOK {
				t.Fatalf("second run: exit %d\nstderr:\n%s", code, errOut)
			}
			var replayed bool
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var rec struct {
					Type   string `json:"type"`
					Result struct {
						Replayed bool   `json:"replayed"`
						State    string `json:"state"`
					} `json:"result"`
				}
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("not JSON: %q", line)
				}
				if rec.Type == "oneshot" {
					replayed = rec.Result.Replayed && rec.Result.State == "succeeded"
				}
			}
			if !replayed {
				t.Errorf("the second run did not report a replayed success:\n%s", out)
			}
			if n := f.srv.TaskCount(f.web, "qmconfig"); n != 1 {
				t.Errorf("%d config tasks, want 1", n)
			}
			if strings.Contains(out+errOut, f.secret) {
				t.Error("the output contains the token secret")
			}

			args[1] = "ticket-2/memory"
			if code, out, errOut = oneshotRun(f.env, args...); code != cli.ExitOK || !strings.Contains(out, "applied by op") {
				t.Fatalf("a new key: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if n := f.srv.TaskCount(f.web, "qmconfig"); n != 2 {
				t.Errorf("%d config tasks after a new key, want 2", n)
			}
		})
	}
}

// writesSince returns the writes (requests other than GET) the fake got
// after the first n requests of its log.
func (f *fixture) writesSince(n int) []string {
	var out []string
	for _, r := range f.srv.Requests()[n:] {
		if r.Method != "GET" {
			out = append(out, r.Method+" "+r.Path)
		}
	}
	return out
}

// oneShotRecord returns the "oneshot" and "exit" records of a run with
// -output json.
func oneShotRecord(t *testing.T, out string) (res map[string]any, exit map[string]any) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		switch rec["type"] {
		case "oneshot":
			res, _ = rec["result"].(map[string]any)
		case "exit":
			exit = rec
		}
	}
	if res == nil || exit == nil {
		t.Fatalf("no oneshot or exit record:\n%s", out)
	}
	return res, exit
}

// A failure that proves Proxmox did nothing (a start refused because the
// guest is locked) leaves the key unused, and says so: the same command
// runs the request again, as a new attempt, once the lock is gone; after
// that success the key is spent, and a third run is a replay. All along
// the key still names its request: another request with it is refused.
func TestKeyUnusedAfterNothingDone(t *testing.T) {
	f := newFixture(t, "journal")
	args := []string{"-key", "start-db", "-guest", "pve1/qemu/101", "-do", "start"}
	code, out, errOut := oneshotRun(f.env, args...)
	if code != cli.ExitFailure || !strings.Contains(out, "FAILED") || !strings.Contains(out, "VM is locked (backup)") {
		t.Fatalf("start of a locked guest: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"Proxmox did nothing", "still unused", "the same request with the same key runs again"} {
		if !strings.Contains(out, want) {
			t.Errorf("the locked start does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "use a new key") {
		t.Errorf("the locked start tells the user to use a new key, but the key is unused:\n%s", out)
	}
	if st, _ := f.srv.Guest(f.db); st.Running {
		t.Fatal("the locked guest was started")
	}

	// The unused key still names its request.
	before := len(f.srv.Requests())
	code, out, errOut = oneshotRun(f.env, "-key", "start-db", "-guest", "pve1/qemu/101", "-do", "stop")
	if code != cli.ExitUsage || !strings.Contains(out, "refused, nothing was sent") || !strings.Contains(out, "needs a new key") {
		t.Errorf("the unused key for another request: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if w := f.writesSince(before); len(w) != 0 {
		t.Errorf("a refused request sent %v", w)
	}

	// The lock goes; the same command runs again.
	if err := f.srv.SetLock(f.db, ""); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = oneshotRun(f.env, append(args, "-output", "json")...)
	res, exit := oneShotRecord(t, out)
	if code != cli.ExitOK || res["state"] != "succeeded" || res["replayed"] == true || res["attempt"] != 2.0 || res["key_unused"] == true {
		t.Fatalf("the same command once the lock is gone: exit %d, result %v\nstdout:\n%s\nstderr:\n%s", code, res, out, errOut)
	}
	if exit["code"] != 0.0 || exit["reason"] != "applied" {
		t.Errorf("exit record %v", exit)
	}
	if st, _ := f.srv.Guest(f.db); !st.Running {
		t.Error("the second attempt did not start the guest")
	}
	if n := f.srv.TaskCount(f.db, "qmstart"); n != 2 {
		t.Errorf("%d start tasks, want 2: the refused one and the one that ran", n)
	}

	// The key is spent now: a third run is a replay, and sends nothing.
	before = len(f.srv.Requests())
	code, out, errOut = oneshotRun(f.env, args...)
	if code != cli.ExitOK || !strings.Contains(out, "already applied by op") || !strings.Contains(out, "nothing was sent") {
		t.Fatalf("the same command a third time: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if w := f.writesSince(before); len(w) != 0 {
		t.Errorf("the replay sent %v", w)
	}
	if n := f.srv.TaskCount(f.db, "qmstart"); n != 2 {
		t.Errorf("%d start tasks after the replay, want 2", n)
	}
}

// A failure after Proxmox may have acted (a start task that fails with an
// ordinary error) spends the key: the same key reports the failure, sends
// nothing, and tells the user to use a new key, which runs.
func TestFailedKeyStaysUsed(t *testing.T) {
	f := newFixture(t, "journal")
	f.srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/pve1/qemu/100/status/start", Times: 1,
		TaskError: "start failed: QEMU exited with code 1"})
	args := []string{"-key", "start-web", "-guest", "pve1/qemu/100", "-do", "start"}
	code, out, errOut := oneshotRun(f.env, args...)
	if code != cli.ExitFailure || !strings.Contains(out, "FAILED") || !strings.Contains(out, "QEMU exited with code 1") {
		t.Fatalf("a start task that fails: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "use a new key") || strings.Contains(out, "did nothing") || strings.Contains(out, "unused") {
		t.Errorf("a failure that may have acted must say the key is spent:\n%s", out)
	}

	before := len(f.srv.Requests())
	code, out, _ = oneshotRun(f.env, append(args, "-output", "json")...)
	res, exit := oneShotRecord(t, out)
	if code != cli.ExitFailure || res["replayed"] != true || res["state"] != "failed" || res["key_unused"] == true || res["attempt"] != 1.0 {
		t.Fatalf("the same key again: exit %d, result %v\nstdout:\n%s", code, res, out)
	}
	if reason, _ := exit["reason"].(string); !strings.Contains(reason, "use a new key") {
		t.Errorf("exit record %v", exit)
	}
	code, out, _ = oneshotRun(f.env, args...)
	if code != cli.ExitFailure || !strings.Contains(out, "already used") || !strings.Contains(out, "use a new key") {
		t.Fatalf("the same key a third time: exit %d\nstdout:\n%s", code, out)
	}
	if w := f.writesSince(before); len(w) != 0 {
		t.Errorf("the replays sent %v", w)
	}
	if n := f.srv.TaskCount(f.web, "qmstart"); n != 1 {
		t.Errorf("%d start tasks for a spent key, want 1", n)
	}

	args[1] = "start-web/2"
	if code, out, errOut = oneshotRun(f.env, args...); code != cli.ExitOK || !strings.Contains(out, "applied by op") {
		t.Fatalf("a new key: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if st, _ := f.srv.Guest(f.web); !st.Running {
		t.Error("the new key did not start the guest")
	}
}

// A key names one request: the same key with another guest, action or
// option is refused with a clear message and exit 2, and nothing is sent.
func TestKeyForAnotherRequest(t *testing.T) {
	f := newFixture(t, "journal")
	args := []string{"-key", "ticket-7", "-guest", "pve1/qemu/100", "-do", "set_config", "-set", "memory=2048"}
	if code, out, errOut := oneshotRun(f.env, args...); code != cli.ExitOK {
		t.Fatalf("first run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // what the message names as different
	}{
		{"another value", []string{"-guest", "pve1/qemu/100", "-do", "set_config", "-set", "memory=4096"}, `"2048", not "4096"`},
		{"another guest", []string{"-guest", "pve1/qemu/101", "-do", "set_config", "-set", "memory=2048"}, "vmid 100, not 101"},
		{"another action", []string{"-guest", "pve1/qemu/100", "-do", "start"}, "kind set_config, not start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.srv.Requests())
			code, out, errOut := oneshotRun(f.env, append([]string{"-key", "ticket-7"}, tc.args...)...)
			if code != cli.ExitUsage {
				t.Errorf("exit %d, want %d", code, cli.ExitUsage)
			}
			for _, want := range []string{"refused, nothing was sent", "idempotency key already used for another request", "needs a new key"} {
				if !strings.Contains(out, want) {
					t.Errorf("the output does not say %q:\nstdout:\n%s\nstderr:\n%s", want, out, errOut)
				}
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("the output does not name what differs (%q):\n%s", tc.want, out)
			}
			if w := f.writesSince(before); len(w) != 0 {
				t.Errorf("a refused request sent %v", w)
			}
			code, out, _ = oneshotRun(f.env, append([]string{"-key", "ticket-7", "-output", "json"}, tc.args...)...)
			res, exit := oneShotRecord(t, out)
			if code != cli.ExitUsage || exit["code"] != float64(cli.ExitUsage) || res["op_id"] != "" {
				t.Errorf("JSON: exit %d, result %v, exit record %v", code, res, exit)
			}
		})
	}
	if st, _ := f.srv.Guest(f.web); st.Config["memory"] != "2048" || st.Running {
		t.Errorf("web-1: memory %s, running %v; only the first request may have run", st.Config["memory"], st.Running)
	}
}

func TestBadSettings(t *testing.T) {
	f := newFixture(t, "journal")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no key", f.env, []string{"-guest", "pve1/qemu/100", "-do", "start"}, "no -key"},
		{"no guest", f.env, []string{"-key", "k", "-do", "start"}, "no -guest"},
		{"bad guest", f.env, []string{"-key", "k", "-guest", "pve1/vm/100", "-do", "start"}, "-guest"},
		{"no action", f.env, []string{"-key", "k", "-guest", "pve1/qemu/100"}, "no -do"},
		{"unknown action", f.env, []string{"-key", "k", "-guest", "pve1/qemu/100", "-do", "destroy"}, "destroy"},
		{"set with start", f.env, []string{"-key", "k", "-guest", "pve1/qemu/100", "-do", "start", "-set", "memory=1"}, "start"},
		{"bad set", f.env, []string{"-key", "k", "-guest", "pve1/qemu/100", "-do", "set_config", "-set", "memory"}, "option=value"},
		{"no journal", map[string]string{"GUESTWARD_TOKEN_SECRET": "x"}, []string{"-key", "k", "-guest", "pve1/qemu/100", "-do", "start"}, "no journal"},
		{"demo with key", nil, []string{"-demo", "-key", "k"}, "drop -key"},
		{"secret as a flag", f.env, []string{"-token-secret", "x"}, "never taken from a flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := oneshotRun(tc.env, tc.args...)
			if code != cli.ExitUsage || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 2 and %q", code, errOut, tc.want)
			}
		})
	}
	if n := len(f.srv.Tasks()); n != 0 {
		t.Errorf("bad settings started %d tasks", n)
	}
}

// revertRecord returns the "revert" and "exit" records of a run with
// -output json.
func revertRecord(t *testing.T, out string) (res map[string]any, exit map[string]any) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		switch rec["type"] {
		case "revert":
			res, _ = rec["result"].(map[string]any)
		case "exit":
			exit = rec
		}
	}
	if res == nil || exit == nil {
		t.Fatalf("no revert or exit record:\n%s", out)
	}
	return res, exit
}

// -revert undoes an operation once: exit 0, then 0 again with nothing
// sent; a guest changed since is refused (exit 1) unless -force; an
// unknown operation id is a wrong setting (exit 2); and -revert takes no
// operation flags.
func TestRevert(t *testing.T) {
	f := newFixture(t, "j.journal")
	code, out, errOut := oneshotRun(f.env, "-key", "mem", "-guest", "pve1/qemu/100", "-do", "set_config", "-set", "memory=2048", "-output", "json")
	if code != cli.ExitOK {
		t.Fatalf("set_config: exit %d\n%s\n%s", code, out, errOut)
	}
	res, _ := oneShotRecord(t, out)
	opID, _ := res["op_id"].(string)

	// Someone edits the guest: the revert is refused, nothing is sent.
	if err := f.srv.UpdateConfig(f.web, map[string]string{"name": "web-2"}, nil); err != nil {
		t.Fatal(err)
	}
	writes := len(writeLog(f.srv))
	code, out, _ = oneshotRun(f.env, "-revert", opID)
	if code != cli.ExitFailure || !strings.Contains(out, "-force") || len(writeLog(f.srv)) != writes {
		t.Fatalf("revert after an edit: exit %d, %d writes\n%s", code, len(writeLog(f.srv))-writes, out)
	}

	code, out, errOut = oneshotRun(f.env, "-revert", opID, "-force", "-output", "json")
	rres, exit := revertRecord(t, out)
	if code != cli.ExitOK || rres["state"] != "succeeded" || rres["reverts"] != opID || exit["code"] != float64(cli.ExitOK) {
		t.Fatalf("forced revert: exit %d %v\n%s\n%s", code, rres, out, errOut)
	}
	if g, _ := f.srv.Guest(f.web); g.Config["memory"] != "1024" || g.Config["name"] != "web-2" {
		t.Fatalf("after the revert memory=%s name=%s", g.Config["memory"], g.Config["name"])
	}
	writes = len(writeLog(f.srv))
	code, out, _ = oneshotRun(f.env, "-revert", opID)
	if code != cli.ExitOK || !strings.Contains(out, "already reverted") || len(writeLog(f.srv)) != writes {
		t.Fatalf("second revert: exit %d, %d writes\n%s", code, len(writeLog(f.srv))-writes, out)
	}

	if code, _, _ = oneshotRun(f.env, "-revert", "20260101T000000Z-0000000000000000"); code != cli.ExitUsage {
		t.Errorf("unknown op: exit %d, want %d", code, cli.ExitUsage)
	}
	if code, _, _ = oneshotRun(f.env, "-revert", opID, "-key", "x"); code != cli.ExitUsage {
		t.Errorf("-revert with -key: exit %d, want %d", code, cli.ExitUsage)
	}
	if code, _, _ = oneshotRun(f.env, "-key", "y", "-guest", "pve1/qemu/100", "-do", "start", "-force"); code != cli.ExitUsage {
		t.Errorf("-force without -revert: exit %d, want %d", code, cli.ExitUsage)
	}
	// An irreversible one-shot needs -allow-irreversible.
	code, out, _ = oneshotRun(f.env, "-key", "pw", "-guest", "pve1/qemu/100", "-do", "set_config", "-set", "cipassword=x")
	if code != cli.ExitFailure || !strings.Contains(out, "irreversible") {
		t.Errorf("cipassword without approval: exit %d\n%s", code, out)
	}
	if code, out, _ = oneshotRun(f.env, "-key", "pw", "-guest", "pve1/qemu/100", "-do", "set_config", "-set", "cipassword=x", "-allow-irreversible"); code != cli.ExitOK {
		t.Errorf("cipassword approved: exit %d\n%s", code, out)
	}
}

// writeLog returns every write (request other than GET) the fake got.
func writeLog(srv *proxmoxtest.Server) []string {
	var out []string
	for _, r := range srv.Requests() {
		if r.Method != "GET" {
			out = append(out, r.Method+" "+r.Path)
		}
	}
	return out
}
