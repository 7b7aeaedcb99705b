package main

import (
	"strings"
	"testing"

	"github.com/guestward/guestward/examples/internal/cli"
)

// The hub's demo against the demo fleet: every step goes as the command's
// documentation says. Step 3 relies on Engine.Apply's reversibility gate
// refusing an unapproved cipassword.
func TestDemo(t *testing.T) {
	a := newAgent(t)
	code, out, errOut := hubRun(a.env, "-demo")
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"-> 200 succeeded (op ",
		"-> 200 succeeded, replayed from the journal",
		"-> 403 irreversible",
		"-> 403 audience",
		"-> 401 unknown_key",
		"-> 409 key_conflict",
		"Done:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	g, _ := a.fleet.Server.Guest(demoGuest)
	if _, ok := g.Config["cipassword"]; !ok {
		t.Error("the approved cipassword was not set")
	}
}
