package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/examples/internal/crashtest"
)

// The agent binary, built once for the tests that run it as a process.
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// TestMain runs the agent itself, armed to kill itself at a failpoint,
// when the crash tests start this test binary as their child (see
// crashtest); otherwise it runs the tests.
func TestMain(m *testing.M) {
	crashtest.RunChild(func(ctx context.Context) int {
		return run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	})
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// agentBinary builds the agent with the go command that runs the tests
// (go test puts it first on PATH) and returns the executable's path.
func agentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("no go command to build the agent with: %w", err)
			return
		}
		if binDir, buildErr = os.MkdirTemp("", "guestward-agent-e2e-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "agent")
		if runtime.GOOS == "windows" {
			binPath += ".exe"
		}
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command(goTool, append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// childEnv is this process's environment without any GUESTWARD_ variable,
// plus env.
func childEnv(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GUESTWARD_") {
			out = append(out, kv)
		}
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// The README's first command: the demo, as the binary a user runs. It must
// show the plan, the actions succeeding, a second pass with nothing to do,
// exit 0, and leave no temporary files behind.
func TestDemoEndToEnd(t *testing.T) {
	bin := agentBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-demo")
	cmd.Env = childEnv(nil)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("agent -demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"A fake Proxmox VE 8.4.1 cluster (nodes pve1, pve2)",
		"1. Recover",
		"recover: the journal shows no operation in flight",
		"2. Plan, as a dry run",
		"pve1/qemu/101: act",
		`memory current: desired "4096", actual "2048"`,
		"2. start pve1/qemu/101",
		"pve1/qemu/103: skip (locked): locked (backup)",
		"pve2/qemu/104: skip (pending)",
		"pve2/lxc/204: skip (missing)",
		"13 guests: 3 in sync, 7 to change (11 actions), 3 skipped",
		"Not drift: Proxmox rewrote these declared values",
		`declared "virtio,bridge=vmbr0"`,
		"3. Apply: 11 actions on 7 guests",
		"resize pve2/qemu/102 scsi0 32G -> 48G",
		"running as task UPID:",
		"[11/11]",
		"pass 1: 13 guests: 3 in sync, 7 changed, 3 skipped; 11 actions sent, 11 succeeded",
		"5. Second pass",
		"pass 2: 13 guests: 10 in sync, 3 skipped; 0 actions sent, 0 succeeded",
		"Done: 11 actions changed 7 guests, and the second pass sent nothing.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	if strings.Contains(out, "FAILED") {
		t.Error("the demo's output reports a failed action")
	}
	if stderr.Len() != 0 {
		t.Errorf("the demo wrote to stderr (it should be quiet by default):\n%s", stderr.String())
	}
	m := regexp.MustCompile(`journal\s+(\S+) \(file backend`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("the demo does not say where its journal is")
	}
	if _, err := os.Stat(filepath.Dir(m[1])); !os.IsNotExist(err) {
		t.Errorf("the demo left %s behind (stat: %v)", filepath.Dir(m[1]), err)
	}
	if t.Failed() {
		t.Logf("stdout:\n%s", out)
	}
}

// Exit codes as the process reports them, for a usage error and for -h.
func TestExitCodesOfTheBinary(t *testing.T) {
	bin := agentBinary(t)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"-h"}, 0},
		{[]string{"-interval", "0s"}, 2},
		{[]string{"-token-secret", "x"}, 2},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = childEnv(nil)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Errorf("agent %q: exit %d, want %d\nstderr:\n%s", tc.args, code, tc.code, stderr.String())
		}
	}
}
