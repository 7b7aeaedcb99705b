// Package killtest kills a real process that is appending to a journal, at
// random moments, and checks that every record the process saw acknowledged
// survives. It is shared by the tests of the journal backends.
//
// The test binary re-executes itself as the child: the parent runs [Parent]
// from a test, and the same binary, started with the environment variable
// [ChildEnv] set, runs [Child] from a test named by the parent's childTest
// argument. The child appends from several goroutines and reports each
// acknowledged record on file descriptor 3, one line per record, written
// with a single write after Append returned; the parent reads the lines and
// sends SIGKILL after a random number of them.
package killtest

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/guestward/guestward/journal"
)

// ChildEnv holds the journal path in the child's environment.
const ChildEnv = "GUESTWARD_KILLTEST_JOURNAL"

const roundEnv = "GUESTWARD_KILLTEST_ROUND"

// Open opens the journal at path for the child or for the parent's check.
type Open func(path string) (journal.Journal, error)

// Options tune a kill test.
type Options struct {
	Rounds  int // child processes to start and kill
	MaxAcks int // a child is killed after a random number of acks in [0, MaxAcks]
	Seed    uint64
}

// compactEvery is how many acks the child reports between two requests to
// its compacting goroutine. A quarter of the kills are aimed at the moment
// right after such an ack, when a compaction is starting.
const compactEvery = 29

var rank = map[journal.State]int{journal.Started: 0, journal.TaskRunning: 1, journal.Succeeded: 2, journal.Failed: 2}

// Parent runs the kill rounds against the journal at path. childTest is the
// name of the test that calls [Child] in the same binary.
func Parent(t *testing.T, path, childTest string, open Open, o Options) {
	t.Helper()
	if runtimeSkip() {
		t.Skip("needs SIGKILL")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x6b696c6c))
	acked := map[string]journal.State{}
	totalAcks, killedEarly, midSwap := 0, 0, 0
	for round := range o.Rounds {
		limit := rng.IntN(o.MaxAcks + 1)
		switch rng.IntN(8) {
		case 0:
			limit = 0
		case 1, 2:
			limit = compactEvery * (1 + rng.IntN(max(o.MaxAcks/compactEvery, 1)))
		}
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(exe, "-test.run=^"+childTest+"$", "-test.count=1", "-test.v=false")
		cmd.Env = append(os.Environ(), ChildEnv+"="+path, roundEnv+"="+strconv.Itoa(round))
		cmd.ExtraFiles = []*os.File{w}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		sc := bufio.NewScanner(r)
		n := 0
		killed := false
		kill := func() {
			if !killed {
				killed = true
				cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		if limit == 0 {
			kill() // during start-up and recovery
		}
		for sc.Scan() {
			op, state, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				t.Fatalf("round %d: bad line from child: %q", round, sc.Text())
			}
			if prev, seen := acked[op]; !seen || rank[journal.State(state)] > rank[prev] {
				acked[op] = journal.State(state)
			}
			n++
			if n >= limit {
				kill()
			}
		}
		r.Close()
		err = cmd.Wait()
		if !killed {
			t.Fatalf("round %d: child exited by itself after %d acks: %v\n%s", round, n, err, stderr.String())
		}
		if n == 0 {
			killedEarly++
		}
		for _, suffix := range []string{".compact", ".create"} {
			if _, err := os.Stat(path + suffix); err == nil {
				midSwap++ // the kill interrupted a compaction or a creation
			}
		}
		totalAcks += n
		verify(t, round, path, open, acked)
	}
	t.Logf("%d rounds, %d acknowledged records checked after kills (%d kills before the first ack, %d in the middle of writing a new file)",
		o.Rounds, totalAcks, killedEarly, midSwap)
}

func verify(t *testing.T, round int, path string, open Open, acked map[string]journal.State) {
	t.Helper()
	ctx := context.Background()
	j, err := open(path)
	if err != nil {
		t.Fatalf("round %d: open after kill: %v", round, err)
	}
	defer j.Close()
	for op, st := range acked {
		e, ok, err := j.Latest(ctx, op)
		if err != nil {
			t.Fatalf("round %d: Latest(%s): %v", round, op, err)
		}
		if !ok {
			t.Fatalf("round %d: op %s was acknowledged as %s, and is gone after the kill", round, op, st)
		}
		if rank[e.State] < rank[st] || st.Terminal() && e.State != st {
			t.Fatalf("round %d: op %s was acknowledged as %s, recovered as %s", round, op, st, e.State)
		}
	}
	inflight, err := j.InFlight(ctx)
	if err != nil {
		t.Fatalf("round %d: InFlight: %v", round, err)
	}
	for _, e := range inflight {
		if e.State.Terminal() {
			t.Fatalf("round %d: InFlight lists terminal op %s", round, e.OpID)
		}
		if st, ok := acked[e.OpID]; ok && st.Terminal() {
			t.Fatalf("round %d: op %s was acknowledged %s but is in flight", round, e.OpID, st)
		}
	}
}

// Child runs in the re-executed test binary: it appends until killed. It
// returns at once when the process is not a kill-test child.
func Child(t *testing.T, open Open, compact func(journal.Journal) error) {
	path := os.Getenv(ChildEnv)
	if path == "" {
		t.Skip("runs only as the child of a kill test")
	}
	round := os.Getenv(roundEnv)
	acks := os.NewFile(3, "acks")
	j, err := open(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kill child: open: %v\n", err)
		os.Exit(2)
	}
	ctx := context.Background()
	var mu sync.Mutex
	total := 0
	compactNow := make(chan struct{}, 1)
	report := func(op string, st journal.State) {
		mu.Lock()
		defer mu.Unlock()
		// One write per line: the parent sees whole lines or nothing.
		if _, err := acks.Write([]byte(op + " " + string(st) + "\n")); err != nil {
			os.Exit(0) // the parent is gone
		}
		total++
		if total%compactEvery == 0 {
			select {
			case compactNow <- struct{}{}:
			default:
			}
		}
	}
	if compact != nil {
		// Compactions run alongside the appends, back to back when acks
		// come fast, so kills often land inside one.
		go func() {
			for range compactNow {
				if err := compact(j); err != nil {
					fmt.Fprintf(os.Stderr, "kill child: compact: %v\n", err)
					os.Exit(2)
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1_000_000; i++ {
				op := fmt.Sprintf("r%s-g%d-%d", round, g, i)
				steps := []journal.Entry{
					{OpID: op, VMID: 100 + g, Kind: "set_config", State: journal.Started,
						Params: map[string]string{"memory": strconv.Itoa(512 * (i%8 + 1))}, IdempKey: "key-" + op},
					{OpID: op, State: journal.TaskRunning, UPID: "UPID:node:" + op},
					{OpID: op, State: journal.Succeeded},
				}
				if i%5 == 4 {
					steps[2] = journal.Entry{OpID: op, State: journal.Failed, Error: "task failed"}
				}
				// Most ops finish; some are left started or running.
				n := 3
				switch i % 6 {
				case 1:
					n = 1
				case 3:
					n = 2
				}
				for _, e := range steps[:n] {
					if err := j.Append(ctx, e); err != nil {
						fmt.Fprintf(os.Stderr, "kill child: append: %v\n", err)
						os.Exit(2)
					}
					report(op, e.State)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Fprintln(os.Stderr, "kill child: ran out of work before being killed")
	os.Exit(3)
}
