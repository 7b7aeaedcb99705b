package normalize

import (
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"strconv"
)

// ParseSize parses a Proxmox disk size ("32G", "1.5G", "8192M", "32GiB",
// "34359738368") into bytes.
//
// The grammar is Proxmox's parse_size: digits with an optional decimal
// fraction, then an optional binary unit K, M, G or T (case-sensitive), which
// may also be written KiB, MiB, GiB or TiB. A fractional result is truncated
// to whole bytes, as Proxmox does. Decimal units (GB, TB) are not sizes in
// Proxmox and are rejected.
//
// ParseSize returns an error wrapping [ErrSyntax] for anything else,
// including values that do not fit in an int64.
func ParseSize(s string) (int64, error) {
	n, ok := parseSize(s)
	if !ok {
		return 0, fmt.Errorf("normalize: size %q: %w", s, ErrSyntax)
	}
	return n, nil
}

// FormatSize prints a byte count the way Proxmox's format_size does: in the
// largest binary unit (K, M, G, T) that divides it exactly, or as plain bytes
// when it is not a multiple of 1024. Negative values, which are never sizes,
// are printed as plain integers.
func FormatSize(n int64) string {
	if n <= 0 {
		return strconv.FormatInt(n, 10)
	}
	units := [...]string{"", "K", "M", "G", "T"}
	u := 0
	for u < len(units)-1 && n%1024 == 0 {
		n /= 1024
		u++
	}
	return strconv.FormatInt(n, 10) + units[u]
}

// parseSize is the allocation-free core of [ParseSize].
func parseSize(s string) (int64, bool) {
	i := 0
	for i < len(s) && (isDigit(s[i]) || s[i] == '.') {
		i++
	}
	var mult uint64 = 1
	switch s[i:] {
	case "":
	case "K", "KiB":
		mult = 1 << 10
	case "M", "MiB":
		mult = 1 << 20
	case "G", "GiB":
		mult = 1 << 30
	case "T", "TiB":
		mult = 1 << 40
	default:
		return 0, false
	}
	return scaledSize(s[:i], mult)
}

// scaledSize returns num*mult truncated to whole bytes, where num is
// \d+(\.\d+)?. It reports false for any other num and on overflow.
func scaledSize(num string, mult uint64) (int64, bool) {
	i := 0
	for i < len(num) && isDigit(num[i]) {
		i++
	}
	if i == 0 {
		return 0, false
	}
	intPart, frac := num[:i], ""
	if i < len(num) {
		if num[i] != '.' || i+1 == len(num) {
			return 0, false
		}
		frac = num[i+1:]
		for k := 0; k < len(frac); k++ {
			if !isDigit(frac[k]) {
				return 0, false
			}
		}
	}

	var whole uint64
	for k := 0; k < len(intPart); k++ {
		hi, lo := bits.Mul64(whole, 10)
		if hi != 0 {
			return 0, false
		}
		var c uint64
		whole, c = bits.Add64(lo, uint64(intPart[k]-'0'), 0)
		if c != 0 {
			return 0, false
		}
	}
	hi, total := bits.Mul64(whole, mult)
	if hi != 0 {
		return 0, false
	}

	// The fraction adds floor(frac * mult / 10^len(frac)) bytes, exactly.
	// Up to 19 digits fit in a uint64; longer fractions (never written in
	// practice) take the slow exact path.
	if len(frac) > 19 {
		return scaledSizeBig(whole, frac, mult)
	}
	if frac != "" {
		var num, den uint64 = 0, 1
		for k := 0; k < len(frac); k++ {
			num = num*10 + uint64(frac[k]-'0')
			den *= 10
		}
		fh, fl := bits.Mul64(num, mult)
		q, _ := bits.Div64(fh, fl, den) // fh < den because num < den
		var c uint64
		total, c = bits.Add64(total, q, 0)
		if c != 0 {
			return 0, false
		}
	}
	if total > math.MaxInt64 {
		return 0, false
	}
	return int64(total), true
}

// allocBytes returns the size Proxmox records for a volume allocated with
// the allocation syntax "<storage>:<gib>", where gib is \d+(\.\d+)?. The
// two guest types round a fractional size differently, and both compute in
// floating point, which this function repeats:
//
//   - qemu-server's create_disks converts the GiB to KiB with convert_size,
//     which rounds any fraction up, and records KiB * 1024 bytes: 0.1 GiB is
//     104858K.
//   - pve-container's create_disks takes int(GiB * 1024) MiB, truncating,
//     and records that many MiB: 0.1 GiB is 102M.
//
// ok is false when gib is not a decimal number or the size does not fit in
// an int64.
func allocBytes(gib string, container bool) (int64, bool) {
	if _, ok := scaledSize(gib, 1<<30); !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(gib, 64)
	if err != nil {
		return 0, false
	}
	if container {
		mib := math.Trunc(f * (1 << 10))
		if mib > float64(math.MaxInt64>>20) {
			return 0, false
		}
		return int64(mib) << 20, true
	}
	kib := f * (1 << 20)
	if t := math.Trunc(kib); kib-t > 0 {
		kib = t + 1
	}
	if kib > float64(math.MaxInt64>>10) {
		return 0, false
	}
	return int64(kib) << 10, true
}

func scaledSizeBig(whole uint64, frac string, mult uint64) (int64, bool) {
	num, ok := new(big.Int).SetString(frac, 10)
	if !ok {
		return 0, false
	}
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
	m := new(big.Int).SetUint64(mult)
	num.Mul(num, m).Quo(num, den)
	num.Add(num, new(big.Int).Mul(new(big.Int).SetUint64(whole), m))
	if !num.IsInt64() {
		return 0, false
	}
	return num.Int64(), true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
