package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/internal/failpoint"
)

var errCrash = errors.New("crash")

func TestReach(t *testing.T) {
	armed := new(failpoint.Set)
	armed.Enable(checkpoint.AfterCall, func() error { return errCrash })
	armed.Enable(checkpoint.AfterWait, func() error { return nil })
	base := checkpoint.With(context.Background(), armed)
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		point  string
		crash  bool
		reason string
	}{
		{"no set", context.Background(), checkpoint.AfterCall, false, "a context without failpoints, as in production, never interrupts"},
		{"armed point", base, checkpoint.AfterCall, true, "the failpoint's error stops the operation"},
		{"other point", base, checkpoint.AfterIntent, false, "only the points a test enabled fire"},
		{"enabled, nil result", base, checkpoint.AfterWait, false, "a failpoint that only counts or blocks lets the operation go on"},
		{"derived context", context.WithoutCancel(base), checkpoint.AfterCall, true, "the engine's own contexts, derived from the caller's, keep the set"},
		{"removed", checkpoint.With(base, nil), checkpoint.AfterCall, false, "With(ctx, nil) disarms everything ctx carried"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkpoint.Reach(tc.ctx, tc.point)
			if !tc.crash {
				if err != nil {
					t.Fatalf("Reach = %v, want nil: %s", err, tc.reason)
				}
				return
			}
			if !errors.Is(err, checkpoint.ErrInterrupted) || !errors.Is(err, errCrash) {
				t.Fatalf("Reach = %v, want ErrInterrupted and the failpoint's error: %s", err, tc.reason)
			}
			if !strings.Contains(err.Error(), tc.point) {
				t.Errorf("%q does not name the point %s", err, tc.point)
			}
		})
	}
}

// The names are the engine's six steps, in order, each once; the crash
// tests loop over them, so a name missing here is a step never tested.
func TestNames(t *testing.T) {
	want := []string{"op/before-intent", "op/after-intent", "op/after-call", "op/after-task-record", "op/after-wait", "op/after-outcome"}
	got := checkpoint.Names()
	if !slices.Equal(got, want) {
		t.Fatalf("Names() = %q, want %q", got, want)
	}
	got[0] = "changed"
	if checkpoint.Names()[0] != checkpoint.BeforeIntent {
		t.Error("Names returns a slice a caller can change for everyone")
	}
}

func ExampleReach() {
	fp := new(failpoint.Set)
	fp.Enable(checkpoint.AfterIntent, func() error { return errors.New("simulated crash") })
	ctx := checkpoint.With(context.Background(), fp)
	for _, p := range checkpoint.Names()[:3] {
		fmt.Printf("%s: %v\n", p, checkpoint.Reach(ctx, p))
	}
	// Output:
	// op/before-intent: <nil>
	// op/after-intent: reconcile: operation interrupted at op/after-intent: simulated crash
	// op/after-call: <nil>
}
