package normalize_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/guestward/guestward/normalize"
)

// vectorFiles are the vector files in testdata: normalize-vectors.json, the
// shared set, and proxmox-rules.json, this package's own vectors for rules
// read from Proxmox's sources (each names the repository, file and function
// it follows).
var vectorFiles = []string{"normalize-vectors.json", "proxmox-rules.json"}

// vector is one entry of a vector file: a declared value, the value Proxmox
// reported, and whether they are the same.
type vector struct {
	ID      string `json:"id"`
	Guest   string `json:"guest"`
	Field   string `json:"field"`
	Desired string `json:"desired"`
	Actual  string `json:"actual"`
	Equal   bool   `json:"equal"`
	Why     string `json:"why"`
	Source  string `json:"source"`
	// Options names Set options the vector needs ("case-sensitive-tags").
	Options []string `json:"options,omitempty"`
	// Normalized, when present, is what Normalize must return for Desired.
	Normalized *string `json:"normalized,omitempty"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	var all []vector
	for _, name := range vectorFiles {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatalf("read vectors: %v", err)
		}
		var vs []vector
		if err := json.Unmarshal(data, &vs); err != nil {
			t.Fatalf("decode %s: %v", name, err)
		}
		if len(vs) == 0 {
			t.Fatalf("%s: no vectors", name)
		}
		all = append(all, vs...)
	}
	return all
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

// vectorSet is the Set a vector runs against: its guest's, with its options.
func vectorSet(t testing.TB, v vector) *normalize.Set {
	t.Helper()
	s := setFor(t, v.Guest)
	for _, o := range v.Options {
		var err error
		switch o {
		case "case-sensitive-tags":
			s, err = s.With(normalize.WithCaseSensitiveTags())
		case "cgroup-v2":
			s, err = s.With(normalize.WithCgroupV2())
		default:
			t.Fatalf("vector %s: unknown option %q", v.ID, o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// TestVectors runs every vector: Equal must give the recorded answer,
// Explain must agree with Equal, Normalize must give the recorded form where
// one is recorded, and the vector's values must satisfy the round-trip
// properties.
func TestVectors(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range loadVectors(t) {
		t.Run(v.ID, func(t *testing.T) {
			if seen[v.ID] {
				t.Fatalf("duplicate vector id %q", v.ID)
			}
			seen[v.ID] = true
			if v.Source == "" {
				t.Fatal("the vector names no source")
			}
			s := vectorSet(t, v)
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
			if v.Normalized != nil {
				if got := s.Normalize(v.Field, v.Desired); got != *v.Normalized {
					t.Errorf("Normalize(%q, %q) = %q, want %q\nwhy: %s", v.Field, v.Desired, got, *v.Normalized, v.Why)
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
