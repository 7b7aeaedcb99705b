package journal

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// AppendBinary checks and encodes entries with a handful of params in one
// pass over them; it must give the same bytes as the general path
// (Validate, then appendEncoding), and refuse exactly what Validate
// refuses, with the same error.
func TestAppendBinaryMatchesValidateAndEncode(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	base := Entry{OpID: "op-1", VMID: 100, Kind: "set_config", State: Started, IdempKey: "req-1", At: at}
	withParams := func(n int, f func(i int) (string, string)) Entry {
		e := base
		e.Params = map[string]string{}
		for i := range n {
			k, v := f(i)
			e.Params[k] = v
		}
		return e
	}
	plain := func(i int) (string, string) { return fmt.Sprintf("p%02d", (i*7)%31), fmt.Sprint(i) }
	// The size of base with one param named "big" of length n, as
	// Validate counts it.
	sizeWith := func(n int) int { e := base; return e.encodedSize() + paramSize("big", strings.Repeat("x", n)) }
	fits := MaxEntrySize - sizeWith(0)
	for fits > 0 && sizeWith(fits) > MaxEntrySize {
		fits--
	}
	cases := map[string]Entry{
		"no params":     base,
		"one":           withParams(1, plain),
		"eight":         withParams(8, plain),
		"nine":          withParams(9, plain),
		"twenty":        withParams(20, plain),
		"empty name":    withParams(3, func(i int) (string, string) { return []string{"a", "", "b"}[i], "v" }),
		"bad utf-8":     withParams(2, func(i int) (string, string) { return []string{"a", "b"}[i], []string{"ok", "\xff"}[i] }),
		"at the limit":  withParams(1, func(int) (string, string) { return "big", strings.Repeat("x", fits) }),
		"over by one":   withParams(1, func(int) (string, string) { return "big", strings.Repeat("x", fits+1) }),
		"bad state":     func() Entry { e := base; e.State = "nope"; return e }(),
		"invalid op ID": func() Entry { e := base; e.OpID = ""; return e }(),
	}
	refused := map[string]bool{"empty name": true, "bad utf-8": true, "over by one": true, "bad state": true, "invalid op ID": true}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := e.AppendBinary([]byte("prefix"))
			if (err != nil) != refused[name] {
				t.Fatalf("AppendBinary error %v; want refused %v", err, refused[name])
			}
			verr := e.Validate()
			if (err == nil) != (verr == nil) || err != nil && err.Error() != verr.Error() {
				t.Fatalf("AppendBinary error %v, Validate error %v", err, verr)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidEntry) || string(got) != "prefix" {
					t.Fatalf("refused entry: error %v, buffer %q", err, got)
				}
				return
			}
			want := e.appendEncoding([]byte("prefix"))
			if !bytes.Equal(got, want) {
				t.Fatalf("encodings differ:\n got  %x\n want %x", got, want)
			}
			var back Entry
			if err := back.UnmarshalBinary(got[len("prefix"):]); err != nil {
				t.Fatal(err)
			}
		})
	}
}
