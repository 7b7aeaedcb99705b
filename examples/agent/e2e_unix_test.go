//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guestward/guestward/examples/internal/crashtest"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

// runChild runs the agent binary to completion and returns its wait status,
// stdout and stderr.
func runChild(t *testing.T, env map[string]string, args ...string) (syscall.WaitStatus, string, string) {
	t.Helper()
	return runProgram(t, agentBinary(t), childEnv(env), args...)
}

// runCrashChild runs this test binary as the agent, with the failpoints
// spec names armed (see TestMain), to completion or its death.
func runCrashChild(t *testing.T, env map[string]string, spec string, args ...string) (syscall.WaitStatus, string, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return runProgram(t, exe, append(childEnv(env), crashtest.EnvFailpoints+"="+spec), args...)
}

func runProgram(t *testing.T, bin string, env []string, args ...string) (syscall.WaitStatus, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running the agent: %v", err)
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus), stdout.String(), stderr.String()
}

// A crash at any step of an operation, as a failpoint in the test binary
// makes one, is resolved by the next start of the real agent: every
// operation ran at most once and the guests converge. This is the hook
// the reliability tests build on.
func TestFailpointKillThenRecover(t *testing.T) {
	for _, point := range []string{
		"op/before-intent", "op/after-intent", "op/after-call",
		"op/after-task-record", "op/after-wait", "op/after-outcome",
	} {
		t.Run(strings.ReplaceAll(point, "/", "_"), func(t *testing.T) {
			c := newCluster(t)
			ws, out, errOut := runCrashChild(t, c.env, point, "-once", "-output", "json")
			if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("the agent was not killed at %s: %v\nstdout:\n%s\nstderr:\n%s", point, ws, out, errOut)
			}
			if !strings.Contains(errOut, "failpoint "+point+" reached") {
				t.Errorf("stderr does not name the failpoint:\n%s", errOut)
			}

			ws, out, errOut = runChild(t, c.env, "-once", "-output", "json")
			if ws.ExitStatus() != 0 {
				t.Fatalf("the run after the crash: %v\nstdout:\n%s\nstderr:\n%s", ws, out, errOut)
			}
			recs := records(t, out)
			rec := recs["recovery"][0]
			if rec["unresolved"] != 0.0 {
				t.Errorf("recovery left operations unresolved: %v", rec)
			}
			wantRecovered := point != "op/before-intent" && point != "op/after-outcome"
			if ops, _ := rec["ops"].([]any); (len(ops) == 1) != wantRecovered {
				t.Errorf("recovery resolved %d operations, want %v", len(ops), map[bool]int{true: 1, false: 0}[wantRecovered])
			}
			if rep := recs["report"][0]; rep["converged"] != true {
				t.Errorf("the pass after recovery did not converge: %v", rep)
			}
			for _, typ := range []string{"qmconfig", "qmstart"} {
				if n := c.srv.TaskCount(c.web, typ); n != 1 {
					t.Errorf("%d %s tasks, want exactly 1", n, typ)
				}
			}
			st, _ := c.srv.Guest(c.web)
			if !st.Running || st.Config["memory"] != "2048" {
				t.Errorf("web guest: running %v, memory %s", st.Running, st.Config["memory"])
			}
		})
	}
}

// daemon is an agent process running as a daemon, its JSON lines read as
// they come.
type daemon struct {
	cmd    *exec.Cmd
	lines  chan map[string]any
	stderr bytes.Buffer
}

func startDaemon(t *testing.T, env map[string]string, args ...string) *daemon {
	t.Helper()
	d := &daemon{lines: make(chan map[string]any, 100)}
	d.cmd = exec.Command(agentBinary(t), append([]string{"-output", "json"}, args...)...)
	d.cmd.Env = childEnv(env)
	d.cmd.Stderr = &d.stderr
	stdout, err := d.cmd.StdoutPipe()
	must(t, err)
	must(t, d.cmd.Start())
	t.Cleanup(func() { _ = d.cmd.Process.Kill() })
	go func() {
		defer close(d.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				d.lines <- m
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	return d
}

// await returns the first record matching match, failing if the output
// ends first.
func (d *daemon) await(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.NewTimer(time.Minute) // a bound for a hung agent, not a synchronization
	defer timeout.Stop()
	for {
		select {
		case m, ok := <-d.lines:
			if !ok {
				t.Fatalf("the agent's output ended before %s; stderr:\n%s", what, d.stderr.String())
			}
			if match(m) {
				return m
			}
		case <-timeout.C:
			t.Fatalf("no %s within a minute; stderr:\n%s", what, d.stderr.String())
		}
	}
}

func (d *daemon) wait(t *testing.T) syscall.WaitStatus {
	t.Helper()
	for range d.lines { // drain, so the process never blocks on a full pipe
	}
	err := d.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return d.cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func isTaskEvent(kind string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		return m["type"] == "event" && m["kind"] == kind && m["phase"] == "task"
	}
}

func isType(typ string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["type"] == typ }
}

// SIGTERM while an operation runs: the agent starts nothing new, lets the
// running operation finish and be journaled, then exits 0 with the journal
// closed and nothing in flight.
func TestSignalDrainsRunningOperation(t *testing.T) {
	c := newCluster(t, proxmoxtest.WithManualTasks())
	d := startDaemon(t, c.env, "-interval", "1h")
	d.await(t, "the set_config task", isTaskEvent("set_config"))
	must(t, d.cmd.Process.Signal(syscall.SIGTERM))
	d.await(t, "the shutdown record", isType("shutdown"))
	if n := c.srv.FinishTasks(); n != 1 {
		t.Fatalf("finished %d tasks, want the one set_config task", n)
	}
	d.await(t, "the set_config outcome", func(m map[string]any) bool {
		return m["type"] == "event" && m["kind"] == "set_config" && m["phase"] == "done"
	})
	exit := d.await(t, "the exit record", isType("exit"))
	if ws := d.wait(t); ws.ExitStatus() != 0 || exit["code"] != 0.0 {
		t.Fatalf("exit %v (record %v); stderr:\n%s", ws, exit, d.stderr.String())
	}
	if n := c.srv.TaskCount(c.web, "qmstart"); n != 0 {
		t.Errorf("%d start tasks after the stop request, want none", n)
	}
	j, err := journal.OpenFile(c.env["GUESTWARD_JOURNAL"])
	if err != nil {
		t.Fatalf("the journal was not closed: %v", err)
	}
	defer j.Close()
	if inflight, err := j.InFlight(context.Background()); err != nil || len(inflight) != 0 {
		t.Errorf("in flight after a graceful stop: %v, %v", inflight, err)
	}
}

// When the grace period ends first, the operation is left in flight in the
// journal, and the next start resolves it from its task.
func TestSignalGraceExpiresThenRecover(t *testing.T) {
	c := newCluster(t, proxmoxtest.WithManualTasks())
	d := startDaemon(t, c.env, "-interval", "1h", "-shutdown-grace", "50ms")
	d.await(t, "the set_config task", isTaskEvent("set_config"))
	must(t, d.cmd.Process.Signal(syscall.SIGTERM))
	d.await(t, "the exit record", isType("exit"))
	if ws := d.wait(t); ws.ExitStatus() != 0 {
		t.Fatalf("exit %v; stderr:\n%s", ws, d.stderr.String())
	}
	j, err := journal.OpenFile(c.env["GUESTWARD_JOURNAL"])
	must(t, err)
	inflight, err := j.InFlight(context.Background())
	must(t, err)
	must(t, j.Close())
	if len(inflight) != 1 || inflight[0].UPID == "" {
		t.Fatalf("in flight: %+v, want the set_config operation with its task", inflight)
	}

	// The task finishes while no agent runs; the next start adopts its
	// outcome, then starts the guest.
	c.srv.FinishTasks()
	d = startDaemon(t, c.env, "-once")
	rec := d.await(t, "the recovery record", isType("recovery"))
	ops, _ := rec["ops"].([]any)
	if len(ops) != 1 || ops[0].(map[string]any)["to"] != string(journal.Succeeded) {
		t.Fatalf("recovery: %v, want the set_config resolved as succeeded", rec)
	}
	d.await(t, "the start task", isTaskEvent("start"))
	c.srv.FinishTasks()
	if ws := d.wait(t); ws.ExitStatus() != 0 {
		t.Fatalf("exit %v; stderr:\n%s", ws, d.stderr.String())
	}
	if n := c.srv.TaskCount(c.web, "qmconfig"); n != 1 {
		t.Errorf("%d set_config tasks, want 1", n)
	}
}

// The agent a user runs has no way to kill itself: the environment
// variables that arm failpoints in the crash tests' child do nothing to
// it, and it converges.
func TestAgentIgnoresFailpointVariables(t *testing.T) {
	c := newCluster(t)
	env := c.with("GUESTWARD_FAILPOINTS", "op/after-call", crashtest.EnvFailpoints, "op/after-call")
	ws, out, errOut := runChild(t, env, "-once", "-output", "json")
	if ws.Signaled() || ws.ExitStatus() != 0 {
		t.Fatalf("the agent: %v\nstdout:\n%s\nstderr:\n%s", ws, out, errOut)
	}
	if rep := records(t, out)["report"][0]; rep["converged"] != true {
		t.Errorf("the pass did not converge: %v", rep)
	}
	if strings.Contains(errOut, "failpoint") {
		t.Errorf("stderr mentions a failpoint:\n%s", errOut)
	}
}
