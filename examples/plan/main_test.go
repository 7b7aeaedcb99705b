package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

func planRun(env map[string]string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, cli.MapEnv(env), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestDemoText(t *testing.T) {
	code, out, errOut := planRun(nil, "-demo")
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, errOut)
	}
	for _, want := range []string{
		"Plan for the 13 guests declared in the demo's desired state",
		"Nothing has been changed.",
		"pve2/lxc/203: act",
		"1. stop pve2/lxc/203 [reversible]",
		// 102's disk would grow: a resize cannot be undone, so without
		// -allow-irreversible the guest is skipped, and the plan says why.
		"pve2/qemu/102: skip (irreversible): resize cannot be undone (scsi0: Proxmox cannot shrink a disk",
		"13 guests: 3 in sync, 6 to change (9 actions), 4 skipped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestDemoJSON(t *testing.T) {
	code, out, errOut := planRun(nil, "-demo", "-output", "json")
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, errOut)
	}
	var plan struct {
		Summary struct{ InSync, Act, Skip, Actions int } `json:"summary"`
		Guests  []struct {
			Guest   string `json:"guest"`
			Verdict string `json:"verdict"`
			Power   string `json:"power"`
		} `json:"guests"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if plan.Summary.Actions != 9 || len(plan.Guests) != 13 {
		t.Errorf("summary %+v with %d guests", plan.Summary, len(plan.Guests))
	}
	if g := plan.Guests[1]; g.Guest != "pve1/qemu/101" || g.Power != "stopped -> running" {
		t.Errorf("second guest %+v; the power change must read as written, not HTML-escaped", g)
	}
}

// With -allow-irreversible the resize is planned, and its class shown.
func TestDemoAllowIrreversible(t *testing.T) {
	code, out, errOut := planRun(nil, "-demo", "-allow-irreversible")
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, errOut)
	}
	for _, want := range []string{
		"resize pve2/qemu/102 scsi0 32G -> 48G [irreversible: scsi0: Proxmox cannot shrink a disk",
		"13 guests: 3 in sync, 7 to change (11 actions), 3 skipped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// A desired-state file of one's own, against the demo fleet.
func TestOwnDesiredAgainstDemo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mine.json")
	if err := os.WriteFile(path, []byte(`{"guests": [{"node": "pve1", "type": "qemu", "vmid": 150, "power": "stopped"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := planRun(nil, "-demo", "-desired", path)
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, errOut)
	}
	if !strings.Contains(out, "Plan for the 1 guest declared in") || !strings.Contains(out, "1. stop pve1/qemu/150") || !strings.Contains(out, "1 to change") {
		t.Errorf("unexpected plan:\n%s", out)
	}
}

// Against a cluster, plan only reads: every request is a GET.
func TestAgainstClusterOnlyReads(t *testing.T) {
	srv := proxmoxtest.Start(t, proxmoxtest.WithNodes("pve1"))
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100,
		Config: map[string]string{"name": "web-1", "memory": "1024"}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	desired := filepath.Join(dir, "desired.json")
	if err := os.WriteFile(desired, []byte(`{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "power": "running", "config": {"memory": 2048}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	id, secret := srv.APIToken()
	env := map[string]string{"GUESTWARD_URL": srv.URL, "GUESTWARD_TOKEN_ID": id, "GUESTWARD_TOKEN_SECRET": secret,
		"GUESTWARD_FINGERPRINT": srv.Fingerprint(), "GUESTWARD_DESIRED": desired}
	code, out, errOut := planRun(env)
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, errOut)
	}
	if !strings.Contains(out, "1. set_config pve1/qemu/100 memory=2048") || !strings.Contains(out, "2. start pve1/qemu/100") {
		t.Errorf("unexpected plan:\n%s", out)
	}
	if strings.Contains(out+errOut, secret) {
		t.Error("the output contains the token secret")
	}
	for _, r := range srv.Requests() {
		if r.Method != "GET" {
			t.Errorf("plan sent %s %s", r.Method, r.Path)
		}
	}
}

func TestBadSettings(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"guests": [{"node": "pve1", "type": "vm", "vmid": 100}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no desired", nil, nil, "no desired state"},
		{"no url", map[string]string{"GUESTWARD_DESIRED": bad}, nil, "no Proxmox URL"},
		{"demo with url", nil, []string{"-demo", "-url", "https://pve:8006"}, "drop -url"},
		{"demo-pve without demo", nil, []string{"-demo-pve", "7.4", "-desired", bad}, "only applies with -demo"},
		{"invalid desired", nil, []string{"-demo", "-desired", bad}, "desired state"},
		{"missing desired", nil, []string{"-demo", "-desired", bad + ".nope"}, "desired state"},
		{"unknown demo version", nil, []string{"-demo", "-demo-pve", "6.4"}, "6.4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := planRun(tc.env, tc.args...)
			if code != cli.ExitUsage || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 2 and %q", code, errOut, tc.want)
			}
		})
	}
}

// -detailed-exitcode tells a script from the code alone whether anything
// differs, and folds every error into 1.
func TestDetailedExitCode(t *testing.T) {
	srv := proxmoxtest.Start(t, proxmoxtest.WithNodes("pve1"))
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100,
		Config: map[string]string{"memory": "1024"}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	inSync := write("in-sync.json", `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "config": {"memory": 1024}}]}`)
	drift := write("drift.json", `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "config": {"memory": 2048}}]}`)
	skipped := write("skipped.json", `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 999}]}`)
	id, secret := srv.APIToken()
	env := map[string]string{"GUESTWARD_URL": srv.URL, "GUESTWARD_TOKEN_ID": id, "GUESTWARD_TOKEN_SECRET": secret,
		"GUESTWARD_FINGERPRINT": srv.Fingerprint()}
	for _, c := range []struct {
		name         string
		args         []string
		plain, coded int
	}{
		{"in sync", []string{"-desired", inSync}, cli.ExitOK, cli.ExitOK},
		{"changes planned", []string{"-desired", drift}, cli.ExitOK, exitDiffers},
		{"a guest skipped", []string{"-desired", skipped}, cli.ExitOK, exitDiffers},
		{"a wrong setting", []string{"-desired", filepath.Join(dir, "missing.json")}, cli.ExitUsage, cli.ExitFailure},
	} {
		if code, _, errOut := planRun(env, c.args...); code != c.plain {
			t.Errorf("%s: exit %d, want %d\n%s", c.name, code, c.plain, errOut)
		}
		if code, _, errOut := planRun(env, append([]string{"-detailed-exitcode"}, c.args...)...); code != c.coded {
			t.Errorf("%s with -detailed-exitcode: exit %d, want %d\n%s", c.name, code, c.coded, errOut)
		}
	}
	if code, out, _ := planRun(nil, "-version"); code != cli.ExitOK || !strings.HasPrefix(out, "plan guestward ") {
		t.Errorf("-version: exit %d, %q", code, out)
	}
}
