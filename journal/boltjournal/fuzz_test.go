package boltjournal

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/guestward/guestward/journal"
)

// FuzzOpen opens arbitrary file contents as a journal. Open and ScanFile
// must either accept the file or refuse it with ErrCorrupt, never panic,
// fault or hang, and a file they refuse must be left exactly as it was. A
// file Open accepts must then work: read, append, verify, compact, close.
//
// When fix is set, the meta pages' checksums are recomputed after the
// fuzzer's changes, as a writer of them would, so that inputs get past the
// checksum into the pages bbolt would otherwise map.
func FuzzOpen(f *testing.F) {
	path := filepath.Join(f.TempDir(), "seed.db")
	buildJournal(f, path, 30)
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	ps := int(fileMeta(f, path).pageSize)
	f.Add(seed, false)
	f.Add(seed, true)
	f.Add(seed[:len(seed)/2], true)
	f.Add(seed[:ps+ps/2], false)
	f.Add([]byte{}, false)
	f.Add(make([]byte, 2*ps), false)
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		data = bytes.Clone(data)
		if fix {
			fixMetas(data)
		}
		path := filepath.Join(t.TempDir(), "j.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		unchanged := func(what string) {
			if now, err := os.ReadFile(path); err != nil || !bytes.Equal(now, data) {
				t.Fatalf("%s changed the file it refused (%v)", what, err)
			}
		}
		if _, err := ScanFile(ctx, path, nil); err != nil {
			if !errors.Is(err, journal.ErrCorrupt) {
				t.Fatalf("ScanFile = %v, want nil or ErrCorrupt", err)
			}
			unchanged("ScanFile")
		}
		j, err := Open(path, WithNoSync())
		if err != nil {
			if !errors.Is(err, journal.ErrCorrupt) {
				t.Fatalf("Open = %v, want nil or ErrCorrupt", err)
			}
			unchanged("Open")
			return
		}
		defer j.Close()
		if _, err := j.Ops(ctx); err != nil {
			t.Fatalf("Ops of a journal Open accepted: %v", err)
		}
		if _, err := j.Verify(ctx); err != nil {
			t.Fatalf("Verify of a journal Open accepted: %v", err)
		}
		if err := j.Append(ctx, started("fuzz-op", "fuzz-key")); err != nil && !errors.Is(err, journal.ErrKeyConflict) && !errors.Is(err, journal.ErrTerminal) && !errors.Is(err, journal.ErrInvalidTransition) {
			t.Fatalf("Append to a journal Open accepted: %v", err)
		}
		if err := j.Compact(ctx); err != nil {
			t.Fatalf("Compact of a journal Open accepted: %v", err)
		}
	})
}

// fixMetas recomputes the checksums of the meta pages at the page size the
// first one names (or the smallest), where they carry bbolt's magic number.
func fixMetas(b []byte) {
	ps := minPageSize
	if len(b) >= pageHeaderSize+metaSize {
		if s := int(ne.Uint32(b[pageHeaderSize+8:])); s >= minPageSize && s <= maxPageSize {
			ps = s
		}
	}
	for _, off := range []int{0, ps} {
		if len(b) < off+pageHeaderSize+metaSize {
			return
		}
		m := b[off+pageHeaderSize : off+pageHeaderSize+metaSize]
		if ne.Uint32(m) == boltMagic {
			fixMetaSum(m)
		}
	}
}
