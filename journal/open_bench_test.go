package journal

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/guestward/guestward/internal/fsx"
)

// BenchmarkOpenClose opens and closes a journal of a few records: the cost
// of claiming it (resolving the path, checking its directories, the two
// locks) against that of replaying it. BenchmarkResolve is the first part
// alone.
func BenchmarkOpenClose(b *testing.B) {
	path := filepath.Join(b.TempDir(), "ops.journal")
	j, err := OpenFile(path, WithNoSync())
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10 {
		if err := j.Append(context.Background(), Entry{OpID: string(rune('a' + i)), VMID: 100, Kind: "start", State: Started}); err != nil {
			b.Fatal(err)
		}
	}
	j.Close()
	b.ReportAllocs()
	for b.Loop() {
		j, err := OpenFile(path)
		if err != nil {
			b.Fatal(err)
		}
		j.Close()
	}
}

func BenchmarkResolve(b *testing.B) {
	path := filepath.Join(b.TempDir(), "ops.journal")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := (fsx.OS{}).Resolve(path); err != nil {
			b.Fatal(err)
		}
	}
}
