package cli

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/guestward/guestward/reconcile"
)

// EnvFailpoints is the environment variable that arms failpoints, for
// guestward's crash tests.
const EnvFailpoints = "GUESTWARD_FAILPOINTS"

// Checkpoints returns the names of the points at which the reconcile engine
// calls Config.Checkpoint, in the order an operation reaches them.
func Checkpoints() []string { return reconcile.Checkpoints() }

// Failpoints parses the value of GUESTWARD_FAILPOINTS and returns a
// function for reconcile.Config.Checkpoint that kills the process, with
// SIGKILL where there is one, when an armed point is reached: a crash at a
// chosen step, with no deferred function, no journal close and no flush.
//
// The value is a comma-separated list of point[:n] items, where point is
// one of Checkpoints and n (default 1) says at which arrival at that point,
// counted across all operations of the process, to die: "op/after-call"
// dies at the first call's return, "op/after-intent:3" when the third
// intent has been journaled. Before dying it writes one line naming the
// point to w, so a test can tell a failpoint kill from another death.
//
// An empty spec returns nil: no checkpoint at all. An unknown point or a bad
// count is a *UsageError, so that a misspelt point cannot make a crash test
// pass without crashing.
func Failpoints(spec string, w io.Writer) (func(point string) error, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	known := Checkpoints()
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
				return nil, Usagef("%s: %q: the count after ':' must be a positive integer", EnvFailpoints, item)
			}
		}
		if !slices.Contains(known, name) {
			return nil, Usagef("%s: unknown point %q (known: %s)", EnvFailpoints, name, strings.Join(known, ", "))
		}
		if prev, ok := armed[name]; !ok || n < prev {
			armed[name] = n
		}
	}
	if len(armed) == 0 {
		return nil, nil
	}
	var mu sync.Mutex
	seen := map[string]int{}
	return func(point string) error {
		mu.Lock()
		seen[point]++
		hit := armed[point] != 0 && seen[point] == armed[point]
		n := seen[point]
		mu.Unlock()
		if hit {
			fmt.Fprintf(w, "failpoint %s reached (arrival %d): killing the process\n", point, n)
			killSelf()
		}
		return nil
	}, nil
}
