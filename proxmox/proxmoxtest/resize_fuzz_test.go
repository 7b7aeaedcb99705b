package proxmoxtest

import (
	"testing"
)

// FuzzResizeNewSize: any size the schema pattern lets through is computed
// without panicking, never below zero, and exactly for whole numbers that
// fit.
func FuzzResizeNewSize(f *testing.F) {
	for _, s := range []string{"1", "+1", "10G", "+0.5T", "1.5K", "9223372036854775807", "8388608T", "99999999999999999999G", "0"} {
		f.Add(s, int64(32<<30))
	}
	f.Fuzz(func(t *testing.T, size string, current int64) {
		if checkResizeSize(size) != "" || current < 0 {
			return
		}
		r := resizeReq{sizeStr: size, ext: len(size) > 0 && size[0] == '+'}
		n, err := r.newSize(current)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("newSize(%q, %d) = %d", size, current, n)
		}
		if r.ext && n < current {
			t.Fatalf("newSize(%q, %d) = %d shrinks", size, current, n)
		}
	})
}
