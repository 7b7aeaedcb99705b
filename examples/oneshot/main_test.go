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

// A key names one attempt: after a failure, the same key reports the
// failure and sends nothing.
func TestFailedKeyStaysUsed(t *testing.T) {
	f := newFixture(t, "journal")
	args := []string{"-key", "start-db", "-guest", "pve1/qemu/101", "-do", "start"}
	code, out, errOut := oneshotRun(f.env, args...)
	if code != cli.ExitFailure || !strings.Contains(out, "FAILED") {
		t.Fatalf("start of a locked guest: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	before := len(f.srv.Requests())
	code, out, _ = oneshotRun(f.env, args...)
	if code != cli.ExitFailure || !strings.Contains(out, "already used") || !strings.Contains(out, "use a new key") {
		t.Fatalf("the same key again: exit %d\nstdout:\n%s", code, out)
	}
	for _, r := range f.srv.Requests()[before:] {
		if r.Method != "GET" {
			t.Errorf("the replay sent %s %s", r.Method, r.Path)
		}
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
