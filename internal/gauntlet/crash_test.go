package gauntlet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/boltjournal"
	"github.com/guestward/guestward/normalize"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// The crash loop runs the agent (examples/agent -once) and the one-shot
// program (examples/oneshot) as child processes against a fake cluster
// this process holds, kills them with SIGKILL over and over, at every kind
// of moment, and restarts them, while the desired state keeps changing:
//
//   - at a failpoint between two journal steps (run as the programs' test
//     binaries, which arm them; the programs themselves cannot);
//   - inside Proxmox, while it handles the child's k-th write, before or
//     after the write takes effect (a fault hook on the fake server);
//   - after the child reported its k-th event on stdout;
//   - at a random moment.
//
// Now and then the agent runs as a daemon instead, and is stopped with
// SIGTERM (unless a kill comes first); a graceful stop must leave no
// operation it had started in flight. Now and then Proxmox drops or
// refuses one of the agent's writes as well, before or after handling it,
// or fails the task of a one-shot.
//
// After every run it checks that the restarted child's recovery left
// nothing unresolved, and that the fake's tasks and both journals agree:
// no task without an operation, except the ones a crash left for the next
// recovery to find; no operation with another's task; no outcome recorded
// that Proxmox contradicts; no one-shot key run again after an attempt
// that may have acted. At the end it lets the agent run unharmed until
// the fleet converges, asks for every one-shot key again, and checks all
// of it strictly.

// checkpointNames are the engine's points between journal steps.
var checkpointNames = checkpoint.Names()

// envFailpoints makes the programs' test binaries run as the programs
// with failpoints armed (examples/internal/crashtest, which this package
// may not import, names it).
const envFailpoints = "GUESTWARD_TEST_FAILPOINTS"

// buildOnce builds the programs the crash loop runs, once per test binary.
var buildOnce struct {
	sync.Once
	dir string
	err error
}

// buildPrograms builds examples/agent and examples/oneshot, with the race
// detector when this test runs under it, so that a race in the child fails
// the test too, and their test binaries beside them (agent.test,
// oneshot.test): run with envFailpoints set, a test binary is its program
// with failpoints armed.
func buildPrograms(t *testing.T) (agent, oneshot string) {
	t.Helper()
	buildOnce.Do(func() {
		// go test puts the go command's directory first on PATH.
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildOnce.err = err
			return
		}
		dir, err := os.MkdirTemp("", "gauntlet-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.dir = dir
		args := []string{"build", "-o", dir + string(filepath.Separator)}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/guestward/guestward/examples/agent", "github.com/guestward/guestward/examples/oneshot")
		out, err := exec.Command(goTool, args...).CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		args[0] = "test"
		args = slices.Insert(args, 1, "-c")
		out, err = exec.Command(goTool, args...).CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatalf("building the programs: %v", buildOnce.err)
	}
	return filepath.Join(buildOnce.dir, "agent"), filepath.Join(buildOnce.dir, "oneshot")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildOnce.dir != "" {
		os.RemoveAll(buildOnce.dir)
	}
	os.Exit(code)
}

// child is one run of a program.
type child struct {
	name     string
	cmd      *exec.Cmd
	done     chan struct{} // closed once the process has exited and its output is read
	progress chan string   // the type of every event and report line, dropped when full
	err      error         // from Wait

	mu       sync.Mutex
	lines    []map[string]any // stdout, one JSON object per line
	killedBy string
	stderr   bytes.Buffer
}

func startChild(name, bin string, args, env []string) (*child, error) {
	c := &child{name: name, done: make(chan struct{}), progress: make(chan string, 4096)}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = env
	c.cmd.Stderr = &lockedWriter{mu: &c.mu, w: &c.stderr}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				line = map[string]any{"type": "unparsed", "text": sc.Text()}
			}
			c.mu.Lock()
			c.lines = append(c.lines, line)
			c.mu.Unlock()
			if typ, _ := line["type"].(string); typ == "event" || typ == "report" {
				select {
				case c.progress <- typ:
				default:
				}
			}
		}
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// kill sends SIGKILL, once, and remembers why.
func (c *child) kill(why string) { c.signal(why, syscall.SIGKILL) }

// stop asks the child to stop with SIGTERM, once, and remembers why.
func (c *child) stop(why string) { c.signal(why, syscall.SIGTERM) }

func (c *child) signal(why string, sig os.Signal) {
	c.mu.Lock()
	first := c.killedBy == ""
	if first {
		c.killedBy = why
	}
	c.mu.Unlock()
	if first && c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(sig)
	}
}

// outcome says how the run ended: killed (by us or by a failpoint), or
// exited with a code.
func (c *child) outcome() (killed bool, code int) {
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return true, -1
		}
		return false, ee.ExitCode()
	}
	return false, 0
}

func (c *child) linesOf(typ string) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, l := range c.lines {
		if l["type"] == typ {
			out = append(out, l)
		}
	}
	return out
}

func (c *child) describe() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%v, killed by %q)\nstdout:\n", c.name, c.err, c.killedBy)
	for _, l := range c.lines {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "stderr:\n%s", c.stderr.String())
	return b.String()
}

// crashGuest is a guest of the crash loop.
type crashGuest struct {
	ref   proxmox.Ref
	power reconcile.Power
	desc  string
}

// taskTypes maps an operation kind to the task types it may start.
func taskTypes(kind string, t proxmox.GuestType) string {
	prefix := "qm"
	if t == proxmox.LXC {
		prefix = "vz"
	}
	if kind == "set_config" {
		if t == proxmox.LXC {
			return ""
		}
		return "qmconfig"
	}
	return prefix + kind
}

// crashCheck checks the fake's tasks against the operations of the
// journals. Between runs a killed child may have left operations in flight
// whose request reached Proxmox: their tasks are unclaimed until the next
// recovery adopts them, so each such operation excuses one unclaimed task
// of its guest and type. With strict, nothing may be in flight.
func crashCheck(tasks []proxmoxtest.Task, ops []journal.Entry, types map[int]proxmox.GuestType, strict bool) []string {
	var problems []string
	excuses := map[string]int{} // vmid/type -> in-flight operations without a task
	var settled []journal.Entry
	for _, op := range ops {
		if !op.State.Terminal() {
			if strict {
				problems = append(problems, fmt.Sprintf("operation %s (%s on %d) is still %s", op.OpID, op.Kind, op.VMID, op.State))
			}
			if op.UPID == "" {
				excuses[fmt.Sprintf("%d/%s", op.VMID, taskTypes(op.Kind, types[op.VMID]))]++
			}
		}
		settled = append(settled, op)
	}
	for _, p := range taskClaims(tasks, settled, func(proxmox.Ref) bool { return true }) {
		// An unclaimed task is excused by an operation that may yet adopt it.
		var upid string
		if _, err := fmt.Sscanf(p, "task %s (", &upid); err == nil && strings.Contains(p, "belongs to no operation") {
			info, perr := proxmox.ParseUPID(upid)
			key := fmt.Sprintf("%s/%s", info.ID, info.Type)
			if perr == nil && excuses[key] > 0 {
				excuses[key]--
				continue
			}
		}
		problems = append(problems, p)
	}
	return append(problems, outcomeTruth(tasks, ops)...)
}

// readOps returns the operations of a journal a dead child left, opening
// it as the next run would (a torn tail is dropped then, too).
func readOps(t *testing.T, path string) []journal.Entry {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var (
		j   journal.Journal
		err error
	)
	if strings.HasSuffix(path, ".db") {
		j, err = boltjournal.Open(path)
	} else {
		j, err = journal.OpenFile(path)
	}
	if err != nil {
		t.Fatalf("opening %s after a crash: %v", path, err)
	}
	defer j.Close()
	ops, err := opsOf(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

// TestCrashLoop runs the crash loop in the steps the comment at the top of
// this file describes; the state they share is a *crashLoop.
func TestCrashLoop(t *testing.T) {
	cl := newCrashLoop(t)
	for it := 1; it <= cl.iterations; it++ {
		cl.iteration(it)
	}
	cl.converge()
	cl.askEveryKeyAgain()
	cl.atMostOnce()
}

// crashKey is a one-shot key the hub made: its guest and the oneshot
// program's arguments that ask for its request.
type crashKey struct {
	ref  proxmox.Ref
	args []string
}

// crashLoop is the state the steps of TestCrashLoop share.
type crashLoop struct {
	t                     *testing.T
	rng                   *rand.Rand
	fig                   *figures
	ctx                   context.Context
	srv                   *proxmoxtest.Server
	agentBin, oneshotBin  string
	guests                []*crashGuest
	types                 map[int]proxmox.GuestType
	shotGuests            []proxmox.Ref
	desiredPath           string
	agentJournal          string // file backend
	shotJournal           string // bbolt backend
	baseEnv, conn         []string
	agentArgs, daemonArgs []string
	lookupClient          *proxmox.Client
	iterations            int
	// The other writer renames guests between runs; the names must
	// survive every run and every crash.
	lastName map[int]string
	keys     map[string]crashKey // the hub's one-shot keys
	keyOrder []string            // in the order the hub made them
}

// newCrashLoop builds the programs, the fleet and the desired state.
func newCrashLoop(t *testing.T) *crashLoop {
	agentBin, oneshotBin := buildPrograms(t)
	rng := newRand(t)
	fig := newFigures(t)
	ctx := ctxFor(t, sized(6*time.Minute, 60*time.Minute))
	dir := t.TempDir()

	// Agent guests live on pve1..pve3, one-shot guests on pve4, so that
	// faults can tell the two programs' writes apart by path.
	srv, err := proxmoxtest.NewServer(
		proxmoxtest.WithNodes("pve1", "pve2", "pve3", "pve4"),
		proxmoxtest.WithTaskDuration(20*time.Millisecond),
		proxmoxtest.WithSeed(rng.Uint64()),
		proxmoxtest.WithRequestLogLimit(0),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	tokenID, secret := srv.APIToken()

	var guests []*crashGuest
	types := map[int]proxmox.GuestType{}
	for i := range 12 {
		g := &crashGuest{ref: proxmox.Ref{Node: fmt.Sprintf("pve%d", 1+i%3), Type: proxmox.QEMU, VMID: 100 + i},
			power: reconcile.PowerStopped, desc: "declared"}
		if i%3 == 1 {
			g.ref.Type = proxmox.LXC
		}
		cfg := map[string]string{"memory": "512", "description": "initial", nameKey(g.ref.Type): fmt.Sprintf("g%d", g.ref.VMID)}
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: g.ref.Node, Type: g.ref.Type, VMID: g.ref.VMID, Config: cfg}); err != nil {
			t.Fatal(err)
		}
		guests = append(guests, g)
		types[g.ref.VMID] = g.ref.Type
	}
	var shotGuests []proxmox.Ref
	for i := range 3 {
		ref := proxmox.Ref{Node: "pve4", Type: proxmox.QEMU, VMID: 900 + i}
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID,
			Config: map[string]string{"memory": "512", "name": fmt.Sprintf("hub%d", i)}}); err != nil {
			t.Fatal(err)
		}
		shotGuests = append(shotGuests, ref)
		types[ref.VMID] = ref.Type
	}

	desiredPath := filepath.Join(dir, "desired.json")

	agentJournal := filepath.Join(dir, "agent.journal") // file backend
	shotJournal := filepath.Join(dir, "oneshot.db")     // bbolt backend
	baseEnv := []string{"GUESTWARD_TOKEN_SECRET=" + secret, "GORACE=halt_on_error=1 exitcode=66"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GUESTWARD_") && !strings.HasPrefix(kv, "GORACE=") {
			baseEnv = append(baseEnv, kv)
		}
	}
	conn := []string{"-url", srv.URL, "-token-id", tokenID, "-fingerprint", srv.Fingerprint(),
		"-http-timeout", "30s", "-settle-delay", "1s", "-output", "json", "-log-level", "error"}
	agentArgs := append(append([]string{}, conn...), "-desired", desiredPath, "-journal", agentJournal, "-once", "-concurrency", "4")
	daemonArgs := append(append([]string{}, conn...), "-desired", desiredPath, "-journal", agentJournal, "-concurrency", "4",
		"-interval", "200ms", "-shutdown-grace", "1m")

	// The other writer renames guests between runs; the names must
	// survive every run and every crash.
	cl := &crashLoop{t: t, rng: rng, fig: fig, ctx: ctx, srv: srv, agentBin: agentBin, oneshotBin: oneshotBin,
		guests: guests, types: types, shotGuests: shotGuests, desiredPath: desiredPath,
		agentJournal: agentJournal, shotJournal: shotJournal, baseEnv: baseEnv, conn: conn,
		agentArgs: agentArgs, daemonArgs: daemonArgs, lastName: map[int]string{}, keys: map[string]crashKey{},
		lookupClient: newClient(t, srv), iterations: sized(30, 400)}
	cl.writeDesired()
	return cl

}

// writeDesired writes the desired state of the guests as they are declared now.
func (cl *crashLoop) writeDesired() {
	var b strings.Builder
	b.WriteString(`{"guests": [`)
	for i, g := range cl.guests {
		if i > 0 {
			b.WriteString(",\n")
		}
		desc, _ := json.Marshal(g.desc)
		fmt.Fprintf(&b, `{"node": %q, "type": %q, "vmid": %d, "power": %q, "config": {"memory": 1024, "description": %s}}`,
			g.ref.Node, g.ref.Type, g.ref.VMID, g.power, desc)
	}
	b.WriteString("]}\n")
	writeFile(cl.t, cl.desiredPath, b.String())
}

// run runs one child to its end, killing or stopping it as plan
// says, and checks what it printed. It may run on another goroutine
// than the test's: it reports with t.Errorf and returns nil when the
// child could not run properly; the caller stops the test.
func (cl *crashLoop) run(name, bin string, args []string, plan killPlan, writePath string) *child {
	t, fig, ctx, srv, baseEnv := cl.t, cl.fig, cl.ctx, cl.srv, cl.baseEnv
	env := append([]string{}, baseEnv...)
	if plan.failpoint != "" {
		bin += ".test"
		env = append(env, envFailpoints+"="+plan.failpoint)
	}
	c := &child{name: name}
	var started sync.WaitGroup
	started.Add(1)
	var writes atomic.Int64
	var handles []*proxmoxtest.FaultHandle
	writeFaults := []proxmoxtest.Fault{
		{Method: "POST", Path: writePath + "/*/*/status/*"},
		{Method: "POST", Path: writePath + "/*/*/config"},
		{Method: "PUT", Path: writePath + "/*/*/config"},
	}
	switch {
	case plan.hookWrite > 0:
		hook := func() {
			if writes.Add(1) == int64(plan.hookWrite) {
				started.Wait()
				c.kill(plan.mode)
			}
		}
		for _, f := range writeFaults {
			if plan.afterHandling {
				f.After = hook
			} else {
				f.Before = hook
			}
			handles = append(handles, srv.Inject(f))
		}
	case plan.fault != nil:
		// The fault hits the write that follows faultSkip others of
		// its kind, for each kind.
		for _, f := range writeFaults {
			f.Times, f.Skip = 1, plan.faultSkip
			f.Drop, f.Status, f.TaskError = plan.fault.Drop, plan.fault.Status, plan.fault.TaskError
			f.Before = func() { fig.add("faults_injected", 1) }
			handles = append(handles, srv.Inject(f))
		}
	}
	defer func() {
		for _, h := range handles {
			h.Remove()
		}
	}()
	sc, err := startChild(name, bin, args, env)
	if err != nil {
		started.Done()
		t.Errorf("starting %s: %v", name, err)
		return nil
	}
	c = sc
	started.Done()
	var timer *time.Timer
	if plan.timer > 0 {
		timer = time.AfterFunc(plan.timer, func() {
			if plan.graceful {
				c.stop("term_timer")
			} else {
				c.kill("timer")
			}
		})
	}
	events, reports := 0, 0
wait:
	for {
		select {
		case <-c.done:
			break wait
		case typ := <-c.progress:
			if typ == "report" {
				reports++
			} else {
				events++
			}
			switch {
			case plan.afterEvents > 0 && events == plan.afterEvents && plan.graceful:
				c.stop("term_event")
			case plan.afterEvents > 0 && events == plan.afterEvents:
				c.kill("event")
			case plan.daemon && reports >= 2:
				// Whatever was meant to stop it has not: two passes
				// are enough.
				c.stop("term_after_two_passes")
			}
		case <-ctx.Done():
			c.kill("test deadline")
			<-c.done
			t.Errorf("%s did not finish: %s", name, c.describe())
			return nil
		}
	}
	if timer != nil {
		timer.Stop()
	}
	killed, code := c.outcome()
	c.mu.Lock()
	by := c.killedBy
	c.mu.Unlock()
	switch {
	case killed && by == "" && plan.failpoint != "" && strings.Contains(c.stderrText(), "failpoint"):
		fig.add("kills_failpoint", 1)
	case killed && by != "" && !strings.HasPrefix(by, "term"):
		fig.add("kills_"+by, 1)
	case killed && strings.HasPrefix(by, "term") && len(c.linesOf("start")) == 0:
		// SIGTERM before the program had set up its handler (it
		// had printed nothing): the default action, death.
		fig.add("stops_during_startup", 1)
	case killed:
		t.Errorf("%s died of a signal nobody sent: %s", name, c.describe())
		return nil
	case code == 66:
		t.Errorf("%s: the race detector found a race: %s", name, c.describe())
		return nil
	case strings.HasPrefix(by, "term"):
		// A stop request: the agent lets running operations finish,
		// and exits 0. A stop that comes while the agent connects or
		// recovers cuts that short instead (the grace period covers
		// only the operations of passes); it still exits 0, and the
		// next start's recovery finishes the work.
		exits := c.linesOf("exit")
		reason := ""
		if len(exits) == 1 {
			reason, _ = exits[0]["reason"].(string)
		}
		recovered := false
		for _, rec := range c.linesOf("recovery") {
			recovered = rec["error"] == nil
		}
		switch {
		case code == 0 && reason == "stopped":
			fig.add("graceful_stops", 1)
		case code == 0 && (reason == "stopped during recovery" ||
			len(exits) == 0 && strings.Contains(c.stderrText(), "stopped on request before the first pass")):
			fig.add("stops_during_startup", 1)
		case code == 1 && !recovered && strings.Contains(reason+c.stderrText(), "context canceled"):
			fig.add("stops_during_startup", 1)
		default:
			t.Errorf("%s did not stop cleanly on SIGTERM: %s", name, c.describe())
			return nil
		}
	default:
		fig.add(fmt.Sprintf("%s_exit_%d", name, code), 1)
	}
	if killed {
		fig.add("kills", 1)
	}
	// After every restart: the recovery, if the child got that far,
	// resolved everything the crashes before it left.
	for _, rec := range c.linesOf("recovery") {
		if rec["error"] == "context canceled" && strings.HasPrefix(by, "term") {
			continue // cut short by the stop request, see above
		}
		if n, _ := rec["unresolved"].(float64); n != 0 || rec["error"] != nil {
			t.Errorf("%s: recovery left operations unresolved: %s", name, c.describe())
			return nil
		}
		ops, _ := rec["ops"].([]any)
		fig.add("recovered_ops", len(ops))
	}
	return c
}

// checkAll compares the fake's tasks with both journals, and checks
// that no one-shot key ran again after an attempt that may have acted.
func (cl *crashLoop) checkAll(when string, strict bool) {
	t, ctx, srv, types, agentJournal, shotJournal := cl.t, cl.ctx, cl.srv, cl.types, cl.agentJournal, cl.shotJournal
	shotOps := readOps(t, shotJournal)
	ops := append(readOps(t, agentJournal), shotOps...)
	if err := srv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	problems := crashCheck(srv.Tasks(), ops, types, strict)
	attempts, kp := keyAttempts(shotOps)
	problems = append(append(problems, kp...), keysAtMostOnce(attempts, srv.Tasks())...)
	for _, p := range problems {
		t.Errorf("%s: %s", when, p)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// lookupKeys returns what the one-shot journal holds for each key,
// as Engine.Lookup finds it (following the attempts at the key).
func (cl *crashLoop) lookupKeys(keys []string) map[string]reconcile.Result {
	t, ctx, shotJournal, lookupClient := cl.t, cl.ctx, cl.shotJournal, cl.lookupClient
	j, err := boltjournal.Open(shotJournal)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	e, err := reconcile.NewEngine(reconcile.Config{Proxmox: lookupClient, Journal: j})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Queue().Close(ctx)
	held := map[string]reconcile.Result{}
	for _, key := range keys {
		res, ok, err := e.Lookup(ctx, key)
		if err != nil {
			t.Fatalf("Lookup %q: %v", key, err)
		}
		if ok {
			held[key] = res
		}
	}
	return held
}

// iteration is one round of crashes: the desired state and a guest's name
// change, then the agent and, often, a one-shot run side by side, each
// killed, stopped or faulted as a random plan says.
func (cl *crashLoop) iteration(it int) {
	t, rng, fig, srv, guests, shotGuests, agentJournal, shotJournal, conn, agentArgs, daemonArgs, agentBin, oneshotBin := cl.t, cl.rng, cl.fig, cl.srv, cl.guests, cl.shotGuests, cl.agentJournal, cl.shotJournal, cl.conn, cl.agentArgs, cl.daemonArgs, cl.agentBin, cl.oneshotBin
	// The desired state changes for some guests.
	for _, g := range guests {
		if rng.IntN(3) == 0 {
			g.power = map[bool]reconcile.Power{true: reconcile.PowerRunning, false: reconcile.PowerStopped}[g.power != reconcile.PowerRunning]
		}
		if rng.IntN(4) == 0 {
			g.desc = fmt.Sprintf("iteration %d & ; %%00", it)
		}
	}
	cl.writeDesired()
	g := guests[rng.IntN(len(guests))]
	name := fmt.Sprintf("w%d", it)
	if err := srv.UpdateConfig(g.ref, map[string]string{nameKey(g.ref.Type): name}, nil); err != nil {
		t.Fatal(err)
	}
	cl.lastName[g.ref.VMID] = name

	// The agent and, often, a one-shot run side by side.
	var wg sync.WaitGroup
	wg.Add(1)
	agentPlan := randomKillPlan(rng, 8)
	args := agentArgs
	if rng.IntN(4) == 0 {
		// Now and then the agent runs as a daemon, and is stopped
		// gracefully unless the plan kills it first.
		agentPlan.daemon = true
		agentPlan.graceful = agentPlan.failpoint == "" && agentPlan.hookWrite == 0 && rng.IntN(2) == 0
		args = daemonArgs
	}
	if agentPlan.hookWrite == 0 && rng.IntN(5) == 0 {
		// And now and then Proxmox misbehaves too.
		agentPlan.fault = &[]proxmoxtest.Fault{
			{Drop: proxmoxtest.DropAfterHandling},
			{Drop: proxmoxtest.DropBeforeHandling},
			{Status: 502},
			{Status: 595},
		}[rng.IntN(4)]
		agentPlan.faultSkip = rng.IntN(6)
	}
	var agentRun *child
	go func() {
		defer wg.Done()
		agentRun = cl.run("agent", agentBin, args, agentPlan, "/nodes/pve[123]")
	}()
	if rng.IntN(5) < 3 {
		var key string
		if len(cl.keyOrder) > 0 && rng.IntN(3) == 0 {
			key = cl.keyOrder[rng.IntN(len(cl.keyOrder))] // the hub asks again
			fig.add("oneshot_repeats", 1)
		} else {
			key = fmt.Sprintf("hub-%d", it)
			ref := shotGuests[rng.IntN(len(shotGuests))]
			args := append(append([]string{}, conn...), "-journal", shotJournal, "-key", key, "-guest", ref.String())
			switch rng.IntN(4) {
			case 0:
				args = append(args, "-do", "start")
			case 1:
				args = append(args, "-do", "stop")
			case 2:
				args = append(args, "-do", "reboot")
			default:
				args = append(args, "-do", "set_config", "-set", "description=one-shot "+key)
			}
			cl.keys[key] = crashKey{ref: ref, args: args}
			cl.keyOrder = append(cl.keyOrder, key)
		}
		fig.add("oneshot_runs", 1)
		wg.Add(1)
		plan := randomKillPlan(rng, 1)
		if plan.hookWrite == 0 && rng.IntN(5) == 0 {
			// Its task fails after Proxmox may have acted: the key
			// is spent, and asking again must not run it.
			plan.fault = &proxmoxtest.Fault{TaskError: "start failed: QEMU exited with code 1"}
		}
		go func() {
			defer wg.Done()
			cl.run("oneshot", oneshotBin, cl.keys[key].args, plan, "/nodes/pve4")
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if agentRun != nil && agentRun.stoppedGracefully() {
		// A stop request let every operation the agent had started
		// finish. (One whose intent was being journaled as the stop
		// came is not waited for: the agent learns of an operation
		// from its "start" event, which follows the intent. It stays
		// in flight, and the next start resolves it.)
		started := map[string]bool{}
		for _, ev := range agentRun.linesOf("event") {
			if ev["phase"] == "start" {
				started[fmt.Sprint(ev["op_id"])] = true
			}
		}
		for _, op := range readOps(t, agentJournal) {
			if op.State.Terminal() {
				continue
			}
			if started[op.OpID] {
				t.Fatalf("iteration %d: operation %s (%s on %d) left %s by a graceful stop: %s", it, op.OpID, op.Kind, op.VMID, op.State, agentRun.describe())
			}
			fig.add("left_in_flight_by_a_stop", 1)
		}
	}
	fig.add("iterations", 1)
	cl.checkAll(fmt.Sprintf("after iteration %d", it), false)
}

// converge runs the agent unharmed until the fleet is in line.
func (cl *crashLoop) converge() {
	t, fig, srv, guests, agentArgs, agentBin := cl.t, cl.fig, cl.srv, cl.guests, cl.agentArgs, cl.agentBin
	// The crashes stop. The agent converges the fleet within a few
	// unharmed runs, and the run after that finds nothing to do.
	runs := 0
	for {
		runs++
		c := cl.run("agent", agentBin, agentArgs, killPlan{}, "")
		if c == nil {
			t.FailNow()
		}
		if _, code := c.outcome(); code == 0 {
			reps := c.linesOf("report")
			if sent, _ := reps[len(reps)-1]["actions_sent"].(float64); sent == 0 {
				break
			}
		}
		if runs >= maxConvergePasses+1 {
			t.Fatalf("the fleet did not converge in %d runs once the crashes stopped: %s", runs, c.describe())
		}
	}
	fig.set("convergence_runs", runs)
	for _, g := range guests {
		st, _ := srv.Guest(g.ref)
		if st.Running != (g.power == reconcile.PowerRunning) || st.Config["memory"] != "1024" || !normalizeSet(g.ref.Type).Equal("description", g.desc, st.Config["description"]) {
			t.Errorf("%s: running=%v memory=%s description=%q; declared %s, %q", g.ref, st.Running, st.Config["memory"], st.Config["description"], g.power, g.desc)
		}
		if want, ok := cl.lastName[g.ref.VMID]; ok && st.Config[nameKey(g.ref.Type)] != want {
			t.Errorf("lost update: %s %s is %q, the other writer left %q", g.ref, nameKey(g.ref.Type), st.Config[nameKey(g.ref.Type)], want)
			fig.add("lost_updates", 1)
		}
	}

}

// askEveryKeyAgain asks for every one-shot key again, twice.
func (cl *crashLoop) askEveryKeyAgain() {
	t, fig, ctx, srv, oneshotBin := cl.t, cl.fig, cl.ctx, cl.srv, cl.oneshotBin
	// Every one-shot key is asked for again, twice, with its request. A
	// key that is spent (its last attempt may have acted) is answered from
	// the journal, and nothing runs. A key left unused runs its request
	// again, as its next attempt: one whose first run died before its
	// intent reached the journal, and one whose last attempt proved that
	// Proxmox did nothing (a start of a running guest, a reboot of a
	// stopped one). The second time, a key the first spent is replayed,
	// and one it left unused runs again.
	sort.Strings(cl.keyOrder)
	var answered map[string]map[string]any // the first round's answers
	for round := 1; round <= 2; round++ {
		tasksBefore := len(srv.Tasks())
		ran := 0
		answers := map[string]map[string]any{}
		for _, key := range cl.keyOrder {
			// Looked up just before the key's run: the run before it
			// recovered what the crashes left in flight.
			h, ok := cl.lookupKeys([]string{key})[key]
			if prev := answered[key]; prev != nil {
				// What the journal holds is what the program answered.
				unused, _ := prev["key_unused"].(bool)
				if !ok || prev["op_id"] != h.OpID || unused != h.KeyUnused {
					t.Errorf("key %s: Lookup finds %+v (found %v), but round 1 answered %v", key, h, ok, prev)
				}
			}
			c := cl.run("oneshot", oneshotBin, cl.keys[key].args, killPlan{}, "")
			if c == nil {
				t.FailNow()
			}
			lines := c.linesOf("oneshot")
			if len(lines) != 1 {
				t.Fatalf("key %s asked again: %s", key, c.describe())
			}
			res, _ := lines[0]["result"].(map[string]any)
			answers[key] = res
			attempt, _ := res["attempt"].(float64)
			replayed := res["replayed"] == true
			switch {
			case !ok:
				ran++
				if replayed || attempt != 1 {
					t.Errorf("key %s asked again (round %d), never journaled before, did not run its first attempt: %s", key, round, c.describe())
				}
			case !h.State.Terminal():
				// Left in flight by a killed run: the run recovers it
				// first, and it spends the key or proves nothing was
				// done (keysAtMostOnce checks which was right).
				if !replayed {
					ran++
				}
				if replayed && (res["op_id"] != h.OpID || int(attempt) != h.Attempt) || !replayed && int(attempt) != h.Attempt+1 {
					t.Errorf("key %s asked again (round %d), attempt %d (op %s) in flight: %s", key, round, h.Attempt, h.OpID, c.describe())
				}
			case h.KeyUnused:
				ran++
				if replayed || int(attempt) != h.Attempt+1 || res["op_id"] == h.OpID {
					t.Errorf("key %s asked again (round %d), left unused by attempt %d (op %s), did not run attempt %d: %s",
						key, round, h.Attempt, h.OpID, h.Attempt+1, c.describe())
				}
			default:
				if !replayed || res["op_id"] != h.OpID || int(attempt) != h.Attempt || res["key_unused"] == true {
					t.Errorf("key %s asked again (round %d), spent by attempt %d (op %s, %s), was not replayed: %s",
						key, round, h.Attempt, h.OpID, h.State, c.describe())
				}
			}
		}
		if err := srv.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(srv.Tasks()) - tasksBefore; n > ran {
			t.Errorf("asking again for %d cl.keys, of which %d were unused, started %d tasks", len(cl.keyOrder), ran, n)
		}
		fig.set(fmt.Sprintf("oneshot_keys_run_again_%d", round), ran)
		cl.checkAll(fmt.Sprintf("after asking for every key again (%d)", round), true)
		answered = answers
	}

}

// atMostOnce checks every key ran at most once, and records the figures.
func (cl *crashLoop) atMostOnce() {
	t, fig, srv, agentJournal, shotJournal := cl.t, cl.fig, cl.srv, cl.agentJournal, cl.shotJournal
	// At most once, in its final form: every attempt at a key but its
	// last did nothing (checkAll), and Lookup finds the last.
	agentOps, shotOps := readOps(t, agentJournal), readOps(t, shotJournal)
	attempts, problems := keyAttempts(shotOps)
	problems = append(problems, keysAtMostOnce(attempts, srv.Tasks())...)
	held := cl.lookupKeys(cl.keyOrder)
	for _, key := range cl.keyOrder {
		at, h := attempts[key], held[key]
		if len(at) == 0 || h.OpID != at[len(at)-1].OpID || h.Attempt != len(at) {
			problems = append(problems, fmt.Sprintf("key %s: Lookup finds %+v, the journal %d attempts", key, h, len(at)))
		}
		if len(at) > 1 {
			fig.add("oneshot_keys_with_later_attempts", 1)
		}
	}
	dups := 0
	for _, p := range problems {
		dups++
		t.Error(p)
	}
	fig.set("oneshot_keys", len(cl.keys))
	fig.set("operations", len(agentOps)+len(shotOps))
	fig.set("tasks", len(srv.Tasks()))
	fig.set("duplicates", dups)
	fig.add("lost_updates", 0)
}

func (c *child) stderrText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

// killPlan says when to kill a child. The zero plan lets it run.
type killPlan struct {
	mode          string
	failpoint     string        // envFailpoints, for the program's test binary
	hookWrite     int           // kill while Proxmox handles the child's n-th write
	afterHandling bool          // ... after the write took effect
	afterEvents   int           // kill once the child reported its n-th event
	timer         time.Duration // kill after this long
	// daemon: the child runs until stopped; graceful: the event or timer
	// sends SIGTERM rather than SIGKILL.
	daemon, graceful bool
	// fault, if set, hits the child's write after faultSkip others.
	fault     *proxmoxtest.Fault
	faultSkip int
}

// stoppedGracefully reports whether the child stopped on a stop request.
func (c *child) stoppedGracefully() bool {
	c.mu.Lock()
	by := c.killedBy
	c.mu.Unlock()
	killed, code := c.outcome()
	return strings.HasPrefix(by, "term") && !killed && code == 0
}

// randomKillPlan picks a plan for a child making about writes writes.
func randomKillPlan(rng *rand.Rand, writes int) killPlan {
	switch r := rng.IntN(100); {
	case r < 30:
		p := checkpointNames[rng.IntN(len(checkpointNames))]
		return killPlan{mode: "failpoint", failpoint: fmt.Sprintf("%s:%d", p, 1+rng.IntN(max(1, writes/2)))}
	case r < 45:
		return killPlan{mode: "write_before", hookWrite: 1 + rng.IntN(writes)}
	case r < 60:
		return killPlan{mode: "write_after", hookWrite: 1 + rng.IntN(writes), afterHandling: true}
	case r < 75:
		return killPlan{mode: "event", afterEvents: 1 + rng.IntN(2*writes)}
	case r < 90:
		return killPlan{mode: "timer", timer: time.Duration(rng.IntN(600)) * time.Millisecond}
	}
	return killPlan{}
}

// normalizeSet is the rule set for a guest of type t: descriptions read
// back differently for VMs and containers.
func normalizeSet(t proxmox.GuestType) *normalize.Set {
	if t == proxmox.LXC {
		return normalize.LXC()
	}
	return normalize.QEMU()
}
