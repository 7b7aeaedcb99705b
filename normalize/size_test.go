package normalize_test

import (
	"errors"
	"math/big"
	"regexp"
	"testing"

	"github.com/guestward/guestward/normalize"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"34359738368", 34359738368},
		{"32G", 32 << 30},
		{"32GiB", 32 << 30},
		{"1.5G", 1536 << 20},
		{"8192M", 8 << 30},
		{"1024G", 1 << 40},
		{"4M", 4 << 20},
		{"528K", 528 << 10},
		{"0.5", 0},
		{"0.1K", 102},
		{"2.5TiB", 5 << 39},
		{"0.0000000000000000000009T", 0},
		{"8388607T", 8388607 << 40},
	} {
		got, err := normalize.ParseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "G", "1.G", ".5G", "1g", "1GB", "1TB", "1 G", "-1", "1e3", "1KiBB", "8388608T", "99999999999999999999"} {
		if _, err := normalize.ParseSize(in); !errors.Is(err, normalize.ErrSyntax) {
			t.Errorf("ParseSize(%q) error = %v, want ErrSyntax", in, err)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for _, c := range []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1000, "1000"},
		{1024, "1K"},
		{1536 << 20, "1536M"},
		{32 << 30, "32G"},
		{1 << 40, "1T"},
		{1 << 50, "1024T"},
		{-2048, "-2048"},
	} {
		if got := normalize.FormatSize(c.in); got != c.want {
			t.Errorf("FormatSize(%d) = %q, want %q", c.in, got, c.want)
		}
	}
}

var sizeRE = regexp.MustCompile(`^(\d+(?:\.\d+)?)(K|M|G|T|KiB|MiB|GiB|TiB)?$`)

// referenceSize is parse_size written the obvious way, with exact
// rationals.
func referenceSize(s string) (int64, bool) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	r, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return 0, false
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), shift)))
	q := new(big.Int).Quo(r.Num(), r.Denom())
	if !q.IsInt64() {
		return 0, false
	}
	return q.Int64(), true
}

// FuzzParseSize checks ParseSize against the exact reference and that
// FormatSize round-trips.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"32G", "1.5G", "34359738368", "32GiB", "0.1K", "1.", "9223372036854775807", "9223372036854775808", "0.99999999999999999999999T", "8388607.99999999999999999999T"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := normalize.ParseSize(s)
		want, ok := referenceSize(s)
		if ok != (err == nil) {
			t.Fatalf("ParseSize(%q) error = %v, reference ok = %v", s, err, ok)
		}
		if !ok {
			return
		}
		if got != want {
			t.Fatalf("ParseSize(%q) = %d, reference %d", s, got, want)
		}
		back, err := normalize.ParseSize(normalize.FormatSize(got))
		if err != nil || back != got {
			t.Fatalf("FormatSize(%d) = %q parses as %d, %v", got, normalize.FormatSize(got), back, err)
		}
	})
}
