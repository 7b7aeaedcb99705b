//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package gauntlet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/boltjournal"
)

const boltVictimText = "precious: not a bbolt journal"

// boltWorld is a bbolt journal as someone else on the machine, or a damaged
// disk, finds it: base/state/ops.db, 0700 directories, a victim file the
// attacks aim at, and a copy of the journal's bytes as the owner left it,
// with op-1 acknowledged and its key ticket-1 spent.
type boltWorld struct {
	base, dir, path, victim string
	good                    []byte
}

func newBoltWorld(t *testing.T) *boltWorld {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := &boltWorld{base: base, dir: filepath.Join(base, "state"), victim: filepath.Join(base, "victim")}
	w.path = filepath.Join(w.dir, "ops.db")
	if err := os.Mkdir(w.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.victim, []byte(boltVictimText), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err := boltjournal.Open(w.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 120 {
		op := fmt.Sprintf("op-%d", i+1)
		for _, e := range []journal.Entry{
			{OpID: op, VMID: 100, Kind: "start", State: journal.Started, IdempKey: fmt.Sprintf("ticket-%d", i+1)},
			{OpID: op, State: journal.Succeeded},
		} {
			if err := j.Append(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if w.good, err = os.ReadFile(w.path); err != nil {
		t.Fatal(err)
	}
	return w
}

// write puts b at the journal's path, as damage would leave it.
func (w *boltWorld) write(t *testing.T, b []byte) {
	t.Helper()
	if err := os.WriteFile(w.path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// refused opens the journal, expecting an error matching want, and checks
// that the refused file was left exactly as it was.
func (w *boltWorld) refused(t *testing.T, want error, why string) {
	t.Helper()
	before, berr := os.Lstat(w.path)
	data, _ := os.ReadFile(w.path)
	j, err := boltjournal.Open(w.path)
	if err == nil {
		j.Close()
	}
	if !errors.Is(err, want) {
		t.Errorf("Open = %v, want %v (%s)", err, want, why)
	}
	if _, err := boltjournal.ScanFile(context.Background(), w.path, nil); !errors.Is(err, want) {
		t.Errorf("ScanFile = %v, want %v (%s)", err, want, why)
	}
	after, aerr := os.Lstat(w.path)
	now, _ := os.ReadFile(w.path)
	if berr != nil || aerr != nil || !bytes.Equal(data, now) || !before.ModTime().Equal(after.ModTime()) || before.Mode() != after.Mode() {
		t.Errorf("the refused file changed (%s)", why)
	}
	if b, err := os.ReadFile(w.victim); err != nil || string(b) != boltVictimText {
		t.Errorf("the victim file was changed: %q %v", b, err)
	}
}

// pageSize reads the page size from the first meta page: the 16-byte page
// header, then magic, version and page size, 32-bit each, in the byte order
// of the machine that wrote it (this one).
func (w *boltWorld) pageSize() int {
	return int(binary.NativeEndian.Uint32(w.good[16+8:]))
}

// inUse returns the bytes of the pages the database uses: its high-water
// page number, from the meta page with the higher transaction ID (a meta
// holds, after its 16-byte page header, the high-water mark at byte 40 and
// the transaction ID at 48), times the page size. bbolt grows the file
// ahead of use, so the file may be longer.
func (w *boltWorld) inUse() int {
	ps, ne := w.pageSize(), binary.NativeEndian
	m0, m1 := w.good[16:], w.good[ps+16:]
	m := m0
	if ne.Uint64(m1[48:]) > ne.Uint64(m0[48:]) {
		m = m1
	}
	return int(ne.Uint64(m[40:])) * ps
}

// TestHostileJournalBolt attacks the bbolt journal with damaged and
// foreign files at its path, seeded random damage, and the file-system
// tricks the file journal is tested against. Every damaged or foreign file
// must be refused with ErrCorrupt (a refusal of the path with ErrUnsafePath
// or ErrLocked), never crash, fault or hang the process, and never be
// written to; random damage Open cannot see must leave a journal that
// works.
func TestHostileJournalBolt(t *testing.T) {
	fig := newFigures(t)
	damaged := []struct {
		name, why string
		make      func(w *boltWorld) []byte
	}{
		{"empty", "the journal never leaves an empty file; starting afresh would forget ticket-1",
			func(*boltWorld) []byte { return nil }},
		{"zeros", "a file system that lost the data", func(w *boltWorld) []byte { return make([]byte, len(w.good)) }},
		{"text", "a configuration file at the wrong path", func(*boltWorld) []byte { return []byte("journal: /var/lib/x\n") }},
		{"6 KiB of text", "bbolt failed with a plain error on files of 4 to 8 KiB",
			func(*boltWorld) []byte { return bytes.Repeat([]byte("not a journal "), 440) }},
		{"cut to 6 KiB", "a copy cut short inside the second meta page", func(w *boltWorld) []byte { return w.good[:6<<10] }},
		{"cut mid-page", "a copy cut short inside a page in use",
			func(w *boltWorld) []byte { return w.good[:w.inUse()-w.pageSize()/2] }},
		{"both metas torn", "both meta pages' checksums fail", func(w *boltWorld) []byte {
			b := bytes.Clone(w.good)
			b[16+50] ^= 1
			b[w.pageSize()+16+50] ^= 1
			return b
		}},
		{"pages scribbled", "every page past the metas overwritten", func(w *boltWorld) []byte {
			b := bytes.Clone(w.good)
			for i := 2 * w.pageSize(); i < len(b); i++ {
				b[i] = 0xff
			}
			return b
		}},
		{"other format", "a journal of a version this one cannot read", func(w *boltWorld) []byte {
			return bytes.ReplaceAll(w.good, []byte("guestward-journal-bolt/1"), []byte("guestward-journal-bolt/9"))
		}},
	}
	for _, c := range damaged {
		t.Run("damage/"+c.name, func(t *testing.T) {
			fig.add("bolt_damage_cases", 1)
			w := newBoltWorld(t)
			w.write(t, c.make(w))
			w.refused(t, journal.ErrCorrupt, c.why)
		})
	}

	// Seeded random damage: a few bytes flipped in a random page. Open
	// sees it and refuses the file unchanged, or does not (the bytes were
	// in free space, or in a value that still decodes), and then the
	// journal must work.
	t.Run("random damage", func(t *testing.T) {
		rng := newRand(t)
		w := newBoltWorld(t)
		ps := w.pageSize()
		ctx := context.Background()
		for range sized(150, 3000) {
			b := bytes.Clone(w.good)
			page := rng.IntN(len(b) / ps)
			for range 1 + rng.IntN(4) {
				b[page*ps+rng.IntN(ps)] ^= byte(1 + rng.IntN(255))
			}
			w.write(t, b)
			j, err := boltjournal.Open(w.path)
			if err != nil {
				if !errors.Is(err, journal.ErrCorrupt) {
					t.Fatalf("damage in page %d: Open = %v, want ErrCorrupt", page, err)
				}
				if now, _ := os.ReadFile(w.path); !bytes.Equal(now, b) {
					t.Fatalf("damage in page %d: Open changed the file it refused", page)
				}
				fig.add("bolt_random_refused", 1)
				continue
			}
			fig.add("bolt_random_accepted", 1)
			if _, err := j.Verify(ctx); err != nil {
				t.Errorf("damage in page %d: Open accepted it, Verify = %v", page, err)
			}
			if err := j.Append(ctx, journal.Entry{OpID: "op-new", VMID: 100, Kind: "start", State: journal.Started}); err != nil {
				t.Errorf("damage in page %d: Open accepted it, Append = %v", page, err)
			}
			if err := j.Compact(ctx); err != nil {
				t.Errorf("damage in page %d: Open accepted it, Compact = %v", page, err)
			}
			j.Close()
		}
	})

	// The file system.
	t.Run("second owner by every path", func(t *testing.T) {
		w := newBoltWorld(t)
		link := filepath.Join(w.base, "link.db")
		if err := os.Symlink(w.path, link); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("state", filepath.Join(w.base, "linkdir")); err != nil {
			t.Fatal(err)
		}
		owner, err := boltjournal.Open(link)
		if err != nil {
			t.Fatal(err)
		}
		defer owner.Close()
		hard := filepath.Join(w.dir, "hard.db")
		if err := os.Link(w.path, hard); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{w.path, link, filepath.Join(w.base, "linkdir", "ops.db"), filepath.Join(w.dir, "..", "state", "ops.db"), hard} {
			fig.add("bolt_second_owners", 1)
			if j, err := boltjournal.Open(p); !errors.Is(err, journal.ErrLocked) {
				if err == nil {
					j.Close()
				}
				t.Errorf("a second Open through %s = %v, want ErrLocked", p, err)
			}
			if _, err := boltjournal.RepairFile(context.Background(), p); !errors.Is(err, journal.ErrLocked) {
				t.Errorf("Repair through %s = %v, want ErrLocked", p, err)
			}
		}
		if err := owner.Compact(context.Background()); !errors.Is(err, journal.ErrUnsafePath) {
			t.Errorf("Compact with a hard link = %v, want ErrUnsafePath: the link would keep a stale copy", err)
		}
		owner.Close()
		if j, err := boltjournal.Open(w.path); !errors.Is(err, journal.ErrUnsafePath) {
			if err == nil {
				j.Close()
			}
			t.Errorf("Open of a database with two names = %v, want ErrUnsafePath", err)
		}
		os.Remove(hard)
	})
	t.Run("links planted at the names it creates", func(t *testing.T) {
		w := newBoltWorld(t)
		owner, err := boltjournal.Open(w.path)
		if err != nil {
			t.Fatal(err)
		}
		defer owner.Close()
		for _, suffix := range []string{".compact", ".create"} {
			if err := os.Symlink(w.victim, w.path+suffix); err != nil {
				t.Fatal(err)
			}
		}
		if err := owner.Compact(context.Background()); err != nil {
			t.Errorf("Compact with links planted: %v", err)
		}
		if b, _ := os.ReadFile(w.victim); string(b) != boltVictimText {
			t.Errorf("compaction wrote through a planted link")
		}
	})
	for _, c := range []struct {
		name, why string
		do        func(t *testing.T, w *boltWorld)
		want      error
	}{
		{"fifo at its path", "opening it could wait forever for a writer", func(t *testing.T, w *boltWorld) {
			os.Remove(w.path)
			if err := syscall.Mkfifo(w.path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, journal.ErrUnsafePath},
		{"directory at its path", "no database at all", func(t *testing.T, w *boltWorld) {
			os.Remove(w.path)
			if err := os.Mkdir(w.path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, journal.ErrUnsafePath},
		{"world-writable directory", "anyone could rename the journal away", func(t *testing.T, w *boltWorld) {
			if err := os.Chmod(w.dir, 0o777); err != nil {
				t.Fatal(err)
			}
		}, journal.ErrUnsafePath},
		{"journal writable by others", "anyone could write records", func(t *testing.T, w *boltWorld) {
			if err := os.Chmod(w.path, 0o666); err != nil {
				t.Fatal(err)
			}
		}, journal.ErrUnsafePath},
	} {
		t.Run(c.name, func(t *testing.T) {
			fig.add("bolt_path_attacks", 1)
			w := newBoltWorld(t)
			c.do(t, w)
			j, err := boltjournal.Open(w.path)
			if err == nil {
				j.Close()
			}
			if !errors.Is(err, c.want) {
				t.Errorf("Open = %v, want %v (%s)", err, c.want, c.why)
			}
		})
	}
}
