package cli

import (
	"flag"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	v := RegisterVersion(fs)
	if err := fs.Parse([]string{"-version"}); err != nil || !*v {
		t.Fatalf("-version not registered: %v", err)
	}
	got := Version("agent")
	if !strings.HasPrefix(got, "agent guestward ") || !strings.Contains(got, "go1.") || strings.Contains(got, "\n") {
		t.Errorf("Version = %q, want one line naming the program, guestward's version and Go's", got)
	}
}
