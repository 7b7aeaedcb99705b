package normalize_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/guestward/guestward/normalize"
)

// vector is one entry of testdata/normalize-vectors.json: a declared value,
// the value Proxmox reported, and whether they are the same.
type vector struct {
	ID      string `json:"id"`
	Guest   string `json:"guest"`
	Field   string `json:"field"`
	Desired string `json:"desired"`
	Actual  string `json:"actual"`
	Equal   bool   `json:"equal"`
	Why     string `json:"why"`
	Source  string `json:"source"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "normalize-vectors.json"))
	if err != nil {
		t.Fatalf("read vectors: %v", err)
	}
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatalf("decode vectors: %v", err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

func setFor(t testing.TB, guest string) *normalize.Set {
	t.Helper()
	switch guest {
	case "qemu":
		return normalize.QEMU()
	case "lxc":
		return normalize.LXC()
	}
	t.Fatalf("unknown guest type %q", guest)
	return nil
}

// TestVectors runs every shared vector: Equal must give the recorded answer,
// Explain must agree with Equal, and the vector's values must satisfy the
// round-trip properties.
func TestVectors(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range loadVectors(t) {
		t.Run(v.ID, func(t *testing.T) {
			if seen[v.ID] {
				t.Fatalf("duplicate vector id %q", v.ID)
			}
			seen[v.ID] = true
			s := setFor(t, v.Guest)
			if got := s.Equal(v.Field, v.Desired, v.Actual); got != v.Equal {
				t.Fatalf("Equal(%q, %q, %q) = %v, want %v\nwhy: %s", v.Field, v.Desired, v.Actual, got, v.Equal, v.Why)
			}
			diffs := s.Explain(v.Field, v.Desired, v.Actual)
			if v.Equal != (len(diffs) == 0) {
				t.Fatalf("Explain = %v, but Equal = %v", diffs, v.Equal)
			}
			for _, d := range diffs {
				if d.Field != v.Field {
					t.Errorf("diff %v: Field = %q, want %q", d, d.Field, v.Field)
				}
			}
			for _, x := range []string{v.Desired, v.Actual} {
				n := s.Normalize(v.Field, x)
				if nn := s.Normalize(v.Field, n); nn != n {
					t.Errorf("Normalize not idempotent on %q: %q then %q", x, n, nn)
				}
				if !s.Equal(v.Field, n, x) {
					t.Errorf("Equal(Normalize(%q) = %q, %q) = false", x, n, x)
				}
			}
		})
	}
}
