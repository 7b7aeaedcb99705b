package proxmox

import (
	"math/big"
	"testing"
)

// FuzzSizeParam: every positive size is sent in a form Proxmox's size
// pattern accepts and that Proxmox reads back as exactly that many bytes.
func FuzzSizeParam(f *testing.F) {
	for _, n := range []int64{1, 1023, 1024, 1536, 32 << 30, 32<<30 + 1, 1 << 40, 1 << 62, 1<<63 - 1} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, n int64) {
		if n <= 0 {
			if err := (DiskResize{Disk: "scsi0", Size: n}).Validate(QEMU); err == nil {
				t.Fatalf("size %d accepted", n)
			}
			return
		}
		s := sizeParam(n)
		if !perlSizePattern.MatchString(s) {
			t.Fatalf("sizeParam(%d) = %q does not match the pattern", n, s)
		}
		if got := perlSize(t, s); got.Cmp(big.NewInt(n)) != 0 {
			t.Fatalf("sizeParam(%d) = %q reads as %s", n, s, got)
		}
	})
}
