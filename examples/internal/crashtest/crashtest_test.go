package crashtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/guestward/guestward/internal/checkpoint"
)

// TestMain makes this test binary its own crash-test child: the program
// reaches every point three times, in order, and prints each arrival.
func TestMain(m *testing.M) {
	RunChild(func(ctx context.Context) int {
		for range 3 {
			for _, p := range checkpoint.Names() {
				if err := checkpoint.Reach(ctx, p); err != nil {
					return 1
				}
				os.Stdout.WriteString(p + "\n")
			}
		}
		return 0
	})
	os.Exit(m.Run())
}

func TestFailpointsParse(t *testing.T) {
	for _, tc := range []struct {
		name, spec, reason string
	}{
		{"unknown point", "op/nope", "a misspelt point would never fire and the crash test would pass without a crash"},
		{"zero count", "op/after-call:0", "arrivals count from 1"},
		{"non-numeric count", "op/after-call:x", "the count is a number"},
		{"negative count", "op/after-call:-1", "arrivals count from 1"},
		{"one bad item among good", "op/after-call,bogus", "every item is checked"},
		{"case variant", "OP/AFTER-CALL", "point names are exact"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Failpoints(tc.spec, new(bytes.Buffer)); err == nil {
				t.Errorf("Failpoints(%q) accepted: %s", tc.spec, tc.reason)
			}
		})
	}
	for _, spec := range append([]string{"", " ", ","}, checkpoint.Names()...) {
		if _, err := Failpoints(spec, new(bytes.Buffer)); err != nil {
			t.Errorf("Failpoints(%q): %v", spec, err)
		}
	}
	var w bytes.Buffer
	fp, err := Failpoints("op/after-call:3, op/after-intent:2", &w)
	if err != nil {
		t.Fatal(err)
	}
	ctx := checkpoint.With(context.Background(), fp)
	// Points that are not armed, and arrivals before the armed one, pass.
	for _, p := range []string{"op/after-call", "op/after-call", "op/after-intent", "op/before-intent", "op/after-outcome"} {
		if err := checkpoint.Reach(ctx, p); err != nil {
			t.Errorf("point %s: %v", p, err)
		}
	}
	if w.Len() != 0 {
		t.Errorf("wrote %q before any armed arrival", w.String())
	}
}

// child runs this test binary as the program with spec armed.
func child(t *testing.T, spec string) (stdout, stderr string, err error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), EnvFailpoints+"="+spec)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// The child dies at the armed arrival, and not before: what it printed
// stops just short of that arrival.
func TestRunChildKillsAtTheArmedArrival(t *testing.T) {
	out, errOut, err := child(t, "op/after-call:2")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("the child was not killed: %v\n%s", err, errOut)
	}
	lines := strings.Fields(out)
	if len(lines) != 8 || lines[7] != checkpoint.AfterIntent {
		t.Errorf("the child got past %d points, ending at %q; want 8, the last the second after-intent", len(lines), lines)
	}
	if !strings.Contains(errOut, "failpoint op/after-call reached (arrival 2)") {
		t.Errorf("stderr does not name the point: %q", errOut)
	}
}

// Nothing armed: the child runs to its end; a bad spec: it refuses to run.
func TestRunChildUnarmedAndBadSpec(t *testing.T) {
	out, errOut, err := child(t, "")
	if err != nil || len(strings.Fields(out)) != 18 {
		t.Fatalf("unarmed child: %v, %d points\n%s", err, len(strings.Fields(out)), errOut)
	}
	out, _, err = child(t, "op/after-lunch")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitBadSpec || out != "" {
		t.Fatalf("child with a bad spec: %v, output %q", err, out)
	}
}
