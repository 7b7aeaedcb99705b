// Package crashtest turns an example program's test binary into the
// program itself, armed to kill itself at a chosen step of an operation:
// the child process guestward's crash tests start, stop with SIGKILL
// between two journal steps, and restart to see that the next run
// recovers.
//
// The example programs themselves cannot do this: no flag or environment
// variable makes them die on purpose. Only a test binary can, through
// [RunChild] called first thing in its TestMain:
//
//	func TestMain(m *testing.M) {
//		crashtest.RunChild(func(ctx context.Context) int {
//			return run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
//		})
//		os.Exit(m.Run())
//	}
//
// A test then runs its own executable (or one built with go test -c) with
// the program's arguments and [EnvFailpoints] set. Without that variable
// the binary runs its tests as usual.
//
// Only test code imports this package.
package crashtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/internal/failpoint"
)

// EnvFailpoints is the environment variable that makes a test binary run
// as the program, with the failpoints its value names armed. Its presence,
// even empty, selects the program; its value is parsed by [Failpoints].
const EnvFailpoints = "GUESTWARD_TEST_FAILPOINTS"

// ExitBadSpec is the exit code of a child whose [EnvFailpoints] does not
// parse, so that a misspelt point cannot pass for a program that ran.
const ExitBadSpec = 3

// RunChild returns at once when [EnvFailpoints] is not set. When it is,
// it runs program as the process's main would, under a context that a
// stop request (SIGINT, SIGTERM) ends and that carries the failpoints,
// and exits with program's code; it does not return. A second stop
// request ends the process at once, as the programs' own main does.
func RunChild(program func(ctx context.Context) int) {
	spec, ok := os.LookupEnv(EnvFailpoints)
	if !ok {
		return
	}
	fp, err := Failpoints(spec, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "crashtest: %v\n", err)
		os.Exit(ExitBadSpec)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := program(checkpoint.With(ctx, fp))
	stop()
	os.Exit(code)
}

// Failpoints parses spec and returns failpoints that kill the process,
// with SIGKILL where there is one, when an armed point is reached: a crash
// at a chosen step, with no deferred function, no journal close and no
// flush.
//
// spec is a comma-separated list of point[:n] items, where point is one of
// the engine's checkpoint names and n (default 1) says at which arrival at
// that point, counted across all operations of the process, to die:
// "op/after-call" dies at the first call's return, "op/after-intent:3"
// when the third intent has been journaled. Before dying it writes one
// line naming the point to w, so that a test can tell a failpoint kill
// from another death.
//
// An empty spec returns an empty Set: nothing armed. An unknown point or
// a bad count is an error.
func Failpoints(spec string, w io.Writer) (*failpoint.Set, error) {
	known := checkpoint.Names()
	armed := map[string]int{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, count, hasCount := strings.Cut(item, ":")
		n := 1
		if hasCount {
			var err error
			n, err = strconv.Atoi(count)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%s: %q: the count after ':' must be a positive integer", EnvFailpoints, item)
			}
		}
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("%s: unknown point %q (known: %s)", EnvFailpoints, name, strings.Join(known, ", "))
		}
		if prev, ok := armed[name]; !ok || n < prev {
			armed[name] = n
		}
	}
	fp := new(failpoint.Set)
	var mu sync.Mutex
	for name, at := range armed {
		seen := 0
		fp.Enable(name, func() error {
			mu.Lock()
			seen++
			hit, n := seen == at, seen
			mu.Unlock()
			if hit {
				fmt.Fprintf(w, "failpoint %s reached (arrival %d): killing the process\n", name, n)
				killSelf()
			}
			return nil
		})
	}
	return fp, nil
}
