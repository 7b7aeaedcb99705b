package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/crashtest"
	"github.com/guestward/guestward/internal/checkpoint"
)

// TestMain runs the program itself, armed to kill itself at a failpoint,
// when a crash test starts this test binary as its child (see crashtest);
// otherwise it runs the tests.
func TestMain(m *testing.M) {
	crashtest.RunChild(func(ctx context.Context) int {
		return run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	})
	os.Exit(m.Run())
}

// A run killed at any step of its operation, then run again with the same
// key, leaves the change made exactly once.
func TestCrashThenSameKey(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, point := range checkpoint.Names() {
		t.Run(point, func(t *testing.T) {
			f := newFixture(t, "journal")
			args := []string{"-key", "ticket-1/memory", "-guest", "pve1/qemu/100", "-do", "set_config", "-set", "memory=2048"}
			cmd := exec.Command(exe, args...)
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GUESTWARD_") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			for k, v := range f.env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			cmd.Env = append(cmd.Env, crashtest.EnvFailpoints+"="+point)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			var ee *exec.ExitError
			if err := cmd.Run(); !errors.As(err, &ee) || !strings.Contains(stderr.String(), "failpoint "+point+" reached") {
				t.Fatalf("the child was not killed at %s: %v\nstderr:\n%s", point, err, stderr.String())
			}
			if err := f.srv.WaitIdle(t.Context()); err != nil {
				t.Fatal(err)
			}

			code, out, errOut := oneshotRun(f.env, args...)
			if code != cli.ExitOK {
				t.Fatalf("the run after the crash: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if n := f.srv.TaskCount(f.web, "qmconfig"); n != 1 {
				t.Errorf("%d config tasks, want 1", n)
			}
			if g, _ := f.srv.Guest(f.web); g.Config["memory"] != "2048" {
				t.Errorf("memory is %s", g.Config["memory"])
			}
		})
	}
}
