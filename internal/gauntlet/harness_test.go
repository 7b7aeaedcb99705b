package gauntlet

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

var (
	longRun    = flag.Bool("gauntlet.long", false, "run the long gauntlet: more guests, rounds, crash iterations and load")
	seedFlag   = flag.Uint64("gauntlet.seed", 0, "seed for the gauntlet's random choices; 0 picks one and logs it")
	figuresOut = flag.String("gauntlet.figures", "", "append each test's figures, one JSON object per line, to this file")
)

// sized returns bounded in the default (CI) run and long with -gauntlet.long.
func sized[T any](bounded, long T) T {
	if *longRun {
		return long
	}
	return bounded
}

// newRand returns the test's source of random choices, seeded from
// -gauntlet.seed or the clock, and logs the seed so that a failure can be
// replayed. Only the choices are replayable, not the interleavings.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay the choices with -gauntlet.seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// figures are the counts a gauntlet test reports: what it did and what it
// found. They are logged at the end of the test (go test -v shows them) and,
// with -gauntlet.figures, appended to a file.
type figures struct {
	mu   sync.Mutex
	name string
	m    map[string]any
}

func newFigures(t *testing.T) *figures {
	f := &figures{name: t.Name(), m: map[string]any{}}
	t.Cleanup(func() { f.report(t) })
	return f
}

func (f *figures) add(key string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, _ := f.m[key].(int)
	f.m[key] = v + n
}

func (f *figures) set(key string, v any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[key] = v
}

func (f *figures) report(t *testing.T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]string, 0, len(f.m))
	for k := range f.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, f.m[k])
	}
	status := "passed"
	if t.Failed() {
		status = "FAILED"
	}
	t.Logf("figures (%s):%s", status, b.String())
	if *figuresOut == "" {
		return
	}
	line, err := json.Marshal(map[string]any{"test": f.name, "status": status, "long": *longRun, "figures": f.m})
	if err != nil {
		t.Errorf("figures: %v", err)
		return
	}
	out, err := os.OpenFile(*figuresOut, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("figures: %v", err)
		return
	}
	defer out.Close()
	if _, err := out.Write(append(line, '\n')); err != nil {
		t.Errorf("figures: %v", err)
	}
}

// ctxFor returns a context bounded by d and ended with the test.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newClient returns a client of srv with fast task polling and retries, so
// that a test's duration is spent on its work rather than on waiting.
func newClient(t *testing.T, srv *proxmoxtest.Server, opts ...proxmox.Option) *proxmox.Client {
	t.Helper()
	base := []proxmox.Option{
		proxmox.WithHTTPClient(srv.Client()),
		proxmox.WithAPIToken(srv.APIToken()),
		proxmox.WithTaskPolling(time.Millisecond, 10*time.Millisecond),
		proxmox.WithRetry(2, time.Millisecond, 5*time.Millisecond),
	}
	c, err := proxmox.New(srv.URL, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond until it holds or d passes; it is how the gauntlet
// waits for a condition, never by sleeping a fixed time.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkNoGoroutineLeak waits until the number of goroutines is back to
// baseline, and fails with their stacks if it does not come back.
func checkNoGoroutineLeak(t *testing.T, baseline int) {
	t.Helper()
	if waitFor(20*time.Second, func() bool { return runtime.NumGoroutine() <= baseline }) {
		return
	}
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
	t.Errorf("goroutine leak: %d goroutines, %d before the test\n%s", runtime.NumGoroutine(), baseline, buf.String())
}

// taskClaims checks the link between the tasks Proxmox ran and the
// operations the journal holds: every task that acts on one of guests must
// be the task of exactly one operation, and no operation may name a task
// that does not exist. A task no operation claims was started by a request
// nobody accounted for (a blind resend); a task two operations claim means
// one of them never ran although it is recorded as done. ops is the latest
// state of every operation (journal Ops).
func taskClaims(tasks []proxmoxtest.Task, ops []journal.Entry, guests func(proxmox.Ref) bool) []string {
	var problems []string
	claimedBy := map[string]string{}
	for _, op := range ops {
		if op.UPID == "" {
			continue
		}
		if prev, dup := claimedBy[op.UPID]; dup {
			problems = append(problems, fmt.Sprintf("task %s is claimed by two operations, %s and %s", op.UPID, prev, op.OpID))
			continue
		}
		claimedBy[op.UPID] = op.OpID
	}
	exists := map[string]bool{}
	for _, task := range tasks {
		exists[string(task.UPID)] = true
		if !guests(task.Guest) {
			continue
		}
		if _, ok := claimedBy[string(task.UPID)]; !ok {
			problems = append(problems, fmt.Sprintf("task %s (%s on %s, exit %q) belongs to no operation", task.UPID, task.Type, task.Guest, task.ExitStatus))
		}
	}
	for upid, op := range claimedBy {
		if !exists[upid] {
			problems = append(problems, fmt.Sprintf("operation %s names task %s, which Proxmox never ran", op, upid))
		}
	}
	sort.Strings(problems)
	return problems
}

// outcomeTruth checks that the journal tells the truth about every task it
// names: an operation recorded as succeeded had a task that ended OK (or
// with warnings, or that found the guest already in the state asked for),
// and one recorded as failed had a task that failed. An operation whose
// task succeeded but which is recorded as failed misleads whoever asked for
// it into asking again.
func outcomeTruth(tasks []proxmoxtest.Task, ops []journal.Entry) []string {
	byUPID := map[string]proxmoxtest.Task{}
	for _, t := range tasks {
		byUPID[string(t.UPID)] = t
	}
	var problems []string
	for _, op := range ops {
		task, ok := byUPID[op.UPID]
		if op.UPID == "" || !ok || !op.State.Terminal() {
			continue
		}
		if task.Running {
			problems = append(problems, fmt.Sprintf("operation %s is %s, but its task %s still runs", op.OpID, op.State, op.UPID))
			continue
		}
		taskOK := task.ExitStatus == "OK" || strings.HasPrefix(task.ExitStatus, "WARNINGS: ")
		reached := strings.Contains(task.ExitStatus, "already running") || strings.Contains(task.ExitStatus, "not running")
		switch {
		case op.State == journal.Succeeded && !taskOK && !reached:
			problems = append(problems, fmt.Sprintf("operation %s (%s on %d) is recorded as succeeded, but its task %s failed: %s", op.OpID, op.Kind, op.VMID, op.UPID, task.ExitStatus))
		case op.State == journal.Failed && taskOK:
			problems = append(problems, fmt.Sprintf("operation %s (%s on %d) is recorded as failed (%s), but its task %s succeeded", op.OpID, op.Kind, op.VMID, op.Error, op.UPID))
		}
	}
	sort.Strings(problems)
	return problems
}

// opsOf returns the latest state of every operation a journal holds.
func opsOf(ctx context.Context, j journal.Journal) ([]journal.Entry, error) {
	l, ok := j.(interface {
		Ops(context.Context) ([]journal.Entry, error)
	})
	if !ok {
		return nil, fmt.Errorf("journal %T cannot list its operations", j)
	}
	return l.Ops(ctx)
}

// attemptOf splits the journal key of a one-shot operation into the
// requester's idempotency key and the number of the attempt at it:
// package reconcile journals the first attempt at a key under the key
// itself, and attempt n under key + "\x1fattempt=" + n (a key holds no
// control character, so no key is another key's attempt). ok is false for
// a journal key of neither form.
func attemptOf(journalKey string) (key string, n int, ok bool) {
	key, suffix, later := strings.Cut(journalKey, "\x1f")
	if !later {
		return key, 1, key != ""
	}
	num, isAttempt := strings.CutPrefix(suffix, "attempt=")
	n, err := strconv.Atoi(num)
	if !isAttempt || err != nil || n < 2 || strconv.Itoa(n) != num {
		return "", 0, false
	}
	return key, n, true
}

// keyAttempts groups the one-shot operations among ops by idempotency key,
// each key's attempts in order: index i holds attempt i+1. Attempts are
// numbered from 1 without a gap (the journal's retention never runs in the
// gauntlet), and one operation holds each; anything else is a problem.
func keyAttempts(ops []journal.Entry) (map[string][]journal.Entry, []string) {
	byN := map[string]map[int]journal.Entry{}
	var problems []string
	for _, op := range ops {
		if op.IdempKey == "" {
			continue
		}
		key, n, ok := attemptOf(op.IdempKey)
		if !ok {
			problems = append(problems, fmt.Sprintf("operation %s holds journal key %q, which names no attempt at a key", op.OpID, op.IdempKey))
			continue
		}
		if byN[key] == nil {
			byN[key] = map[int]journal.Entry{}
		}
		if prev, dup := byN[key][n]; dup {
			problems = append(problems, fmt.Sprintf("key %q: attempt %d is held by two operations, %s and %s", key, n, prev.OpID, op.OpID))
			continue
		}
		byN[key][n] = op
	}
	out := make(map[string][]journal.Entry, len(byN))
	for key, m := range byN {
		for n := 1; n <= len(m); n++ {
			op, ok := m[n]
			if !ok {
				problems = append(problems, fmt.Sprintf("key %q: %d attempts, but no attempt %d", key, len(m), n))
				break
			}
			out[key] = append(out[key], op)
		}
	}
	sort.Strings(problems)
	return out, problems
}

// refusedExit reports whether the exit status of a failed task is one of
// the refusals Proxmox raises before it acts on the request, as the fake
// words them after qemu-server and pve-container: the guest is locked
// (check_lock), its configuration lock could not be taken in time
// (lock_config), the digest sent is stale, its configuration does not
// exist, or a power action found it in the other state (vm_start, vm_stop,
// vm_shutdown, vm_reboot). Any other failure may have come after part of
// the work.
func refusedExit(status string) bool {
	for _, refusal := range []string{
		"is locked (", "can't lock file", "file change by other user", "file changed by other user",
		"does not exist", "already running", "not running",
	} {
		if strings.Contains(status, refusal) {
			return true
		}
	}
	return false
}

// keysAtMostOnce checks the at-most-once rule of idempotency keys against
// the journal (byKey, from keyAttempts) and the tasks Proxmox ran: a key is
// spent once Proxmox may have acted on its request, so an attempt may
// follow only attempts that did nothing. Every attempt but the last must be
// recorded as failed, and its task, if it had one, must have ended in a
// refusal (refusedExit); and a key gets at most reconcile.MaxKeyAttempts
// attempts. A spent key that ran again is a request carried out twice.
func keysAtMostOnce(byKey map[string][]journal.Entry, tasks []proxmoxtest.Task) []string {
	byUPID := map[string]proxmoxtest.Task{}
	for _, t := range tasks {
		byUPID[string(t.UPID)] = t
	}
	var problems []string
	for key, attempts := range byKey {
		if len(attempts) > reconcile.MaxKeyAttempts {
			problems = append(problems, fmt.Sprintf("key %q has %d attempts, more than %d", key, len(attempts), reconcile.MaxKeyAttempts))
		}
		for i, op := range attempts[:len(attempts)-1] {
			next := attempts[i+1]
			if op.State != journal.Failed {
				problems = append(problems, fmt.Sprintf("key %q ran twice: attempt %d (op %s, %s on %d) is %s, yet attempt %d (op %s) ran",
					key, i+1, op.OpID, op.Kind, op.VMID, op.State, i+2, next.OpID))
				continue
			}
			if op.UPID == "" {
				continue
			}
			task, ok := byUPID[op.UPID]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("key %q: attempt %d (op %s) names task %s, which Proxmox never ran", key, i+1, op.OpID, op.UPID))
			case task.Running || !refusedExit(task.ExitStatus):
				problems = append(problems, fmt.Sprintf("key %q ran twice: attempt %d (op %s, %s on %d) had task %s, which may have acted (running %v, exit %q), yet attempt %d (op %s) ran",
					key, i+1, op.OpID, op.Kind, op.VMID, op.UPID, task.Running, task.ExitStatus, i+2, next.OpID))
			}
		}
	}
	sort.Strings(problems)
	return problems
}
