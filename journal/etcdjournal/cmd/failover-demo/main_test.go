package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// The demonstration runs to its end: the second replica finishes the work
// and the fake's task list shows nothing done twice.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"replica-a dies", "replica-b leads now", "nothing done twice"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
