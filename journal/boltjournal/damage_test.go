package boltjournal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/guestward/guestward/journal"
)

// buildJournal writes a closed journal at path with n ops, some ended and
// some rewritten, so that it has branch pages, overflow pages and free
// pages.
func buildJournal(t testing.TB, path string, n int) {
	t.Helper()
	j, err := Open(path, WithNoSync(), WithRetention(-1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range n {
		id := fmt.Sprintf("op%04d", i)
		e := started(id, "key-"+id)
		if i%50 == 7 {
			e.Params = map[string]string{"big": string(bytes.Repeat([]byte("x"), 9000))}
		}
		if err := j.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if err := j.Append(ctx, journal.Entry{OpID: id, State: journal.Succeeded}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

// fileMeta decodes the meta page bbolt uses in the file at path.
func fileMeta(t testing.TB, path string) boltMeta {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	m, d := readMeta(f, fi.Size())
	if d != nil {
		t.Fatal(d)
	}
	return m
}

// editMetas applies edit to the meta fields of both meta pages and
// recomputes their checksums, as a writer of the change would.
func editMetas(b []byte, psize int, edit func(m []byte)) {
	for _, off := range []int{0, psize} {
		m := b[off+pageHeaderSize : off+pageHeaderSize+metaSize]
		edit(m)
		fixMetaSum(m)
	}
}

func fixMetaSum(m []byte) {
	h := fnv.New64a()
	h.Write(m[:metaSumOffset])
	ne.PutUint64(m[metaSumOffset:], h.Sum64())
}

// editPages applies edit to the first page in use (from the top when
// last) that match reports.
func editPages(t testing.TB, b []byte, m boltMeta, last bool, match func(p []byte) bool, edit func(p []byte)) {
	t.Helper()
	ps := int(m.pageSize)
	c := &checker{r: bytes.NewReader(b), m: m, psize: int64(ps), state: make([]byte, m.hwm)}
	if err := c.freelist(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.walkJournal(func(k, v []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for i := range int(m.hwm) - 2 {
		id := 2 + i
		if last {
			id = int(m.hwm) - 1 - i
		}
		p := b[id*ps:]
		if c.state[id] == pageUsed && ne.Uint64(p) == uint64(id) && match(p) {
			edit(p)
			return
		}
	}
	t.Fatal("no page matches")
}

func flagsOf(p []byte) uint16 { return ne.Uint16(p[8:]) }
func countOf(p []byte) uint16 { return ne.Uint16(p[10:]) }

// snapshot is what must not change about a file a refused open saw.
type snapshot struct {
	data  []byte
	mode  fs.FileMode
	mtime time.Time
	size  int64
}

func snap(t testing.TB, path string) snapshot {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	s := snapshot{mode: fi.Mode(), mtime: fi.ModTime(), size: fi.Size()}
	if fi.Mode().IsRegular() {
		if s.data, err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s snapshot) same(o snapshot) bool {
	return bytes.Equal(s.data, o.data) && s.mode == o.mode && s.mtime.Equal(o.mtime) && s.size == o.size
}

// TestOpenRefusesDamage opens every kind of damaged or foreign file the
// journal may find at its path. Each must be refused with an error
// matching journal.ErrCorrupt (and the bbolt error that says the same,
// where there is one) that keeps the reason, by Open and ScanFile alike,
// and must be left exactly as it was: same bytes, same modification time.
func TestOpenRefusesDamage(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src.db")
	buildJournal(t, src, 400)
	good, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	m := fileMeta(t, src)
	ps := int(m.pageSize)

	// Variants of the good journal.
	edited := func(edit func(b []byte)) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			b := bytes.Clone(good)
			edit(b)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Databases written through bbolt, not through the journal.
	viaBolt := func(opts *bolt.Options, fn func(tx *bolt.Tx) error) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			if err := os.WriteFile(path, good, 0o600); err != nil {
				t.Fatal(err)
			}
			if fn == nil {
				os.Remove(path)
			}
			db, err := bolt.Open(path, 0o600, opts)
			if err != nil {
				t.Fatal(err)
			}
			if fn != nil {
				err = db.Update(fn)
			} else {
				err = db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("stuff")); return err })
			}
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	isLeaf := func(p []byte) bool { return flagsOf(p) == leafPageFlag && countOf(p) > 0 }
	isBranch := func(p []byte) bool { return flagsOf(p) == branchPageFlag && countOf(p) > 0 }
	isFreelist := func(p []byte) bool { return flagsOf(p) == freelistPageFlag }

	cases := []struct {
		name, reason string
		make         func(t *testing.T, path string)
		cause        error  // a bbolt error it must also match, if any
		says         string // what the reason must mention
	}{
		{"empty", "a journal is never left empty, so an empty file lost its contents; starting afresh would forget applied keys",
			func(t *testing.T, path string) { os.WriteFile(path, nil, 0o600) }, nil, "empty"},
		{"text", "a file far too small for a database",
			func(t *testing.T, path string) { os.WriteFile(path, []byte("not a database at all, just text"), 0o600) }, berrors.ErrInvalid, "too small"},
		{"foreign 6 KiB", "a foreign file of 4 to 8 KiB made bbolt fail with a plain error",
			func(t *testing.T, path string) { os.WriteFile(path, bytes.Repeat([]byte("hello world "), 500), 0o600) }, berrors.ErrInvalid, "magic"},
		{"zeros", "a file full of zeros (a crash on a file system that lost the data)",
			func(t *testing.T, path string) { os.WriteFile(path, make([]byte, 64<<10), 0o600) }, berrors.ErrInvalid, "magic"},
		{"cut to 6 KiB", "a journal cut short inside its second meta page made bbolt fail with a plain error",
			func(t *testing.T, path string) { os.WriteFile(path, good[:6<<10], 0o600) }, berrors.ErrInvalid, "too small"},
		{"cut mid-page", "a journal cut short inside a page in use",
			func(t *testing.T, path string) { os.WriteFile(path, good[:int(m.hwm)*ps-ps/2], 0o600) }, nil, "cut short"},
		{"cut pages", "a journal cut short by whole pages in use",
			func(t *testing.T, path string) { os.WriteFile(path, good[:int(m.hwm-3)*ps], 0o600) }, nil, "cut short"},
		{"both magics", "both meta pages overwritten",
			edited(func(b []byte) { b[pageHeaderSize] ^= 0xff; b[ps+pageHeaderSize] ^= 0xff }), berrors.ErrInvalid, "magic"},
		{"both checksums", "both meta pages torn",
			edited(func(b []byte) { b[pageHeaderSize+50] ^= 1; b[ps+pageHeaderSize+50] ^= 1 }), berrors.ErrChecksum, "checksum"},
		{"meta page id", "a meta page whose checksum holds but whose page header names another page: not a torn write, and bbolt's own check asserts on it later",
			edited(func(b []byte) { ne.PutUint64(b[ps:], 1<<60) }), nil, "page header"},
		{"meta page flags", "a meta page whose page header is not a meta page's",
			edited(func(b []byte) { ne.PutUint16(b[8:], leafPageFlag) }), nil, "page header"},
		{"version", "a bbolt file format this bbolt does not read",
			edited(func(b []byte) { editMetas(b, ps, func(m []byte) { ne.PutUint32(m[4:], 3) }) }), berrors.ErrVersionMismatch, "version"},
		{"page size", "a page size no machine uses",
			edited(func(b []byte) { editMetas(b, ps, func(m []byte) { ne.PutUint32(m[8:], 3000) }) }), nil, "page size"},
		{"root past end", "the root page lies past the end of the database",
			edited(func(b []byte) { editMetas(b, ps, func(m []byte) { ne.PutUint64(m[16:], m0(m).hwm+5) }) }), nil, "root page"},
		{"high-water past file", "the database claims more pages than the file holds",
			edited(func(b []byte) { editMetas(b, ps, func(m []byte) { ne.PutUint64(m[40:], uint64(len(good)/ps)+1) }) }), nil, "cut short"},
		{"freelist past end", "the freelist page lies past the end",
			edited(func(b []byte) { editMetas(b, ps, func(m []byte) { ne.PutUint64(m[32:], 1<<40) }) }), nil, "freelist"},
		{"branch child past end", "a branch points past the end of the database",
			edited(func(b []byte) {
				editPages(t, b, m, false, isBranch, func(p []byte) { ne.PutUint64(p[pageHeaderSize+8:], 1<<40) })
			}), nil, "outside pages"},
		{"branch child loops", "a branch points back to itself",
			edited(func(b []byte) {
				editPages(t, b, m, false, isBranch, func(p []byte) { ne.PutUint64(p[pageHeaderSize+8:], ne.Uint64(p)) })
			}), nil, "twice"},
		{"leaf key past page", "a leaf element's key lies past the end of its page",
			edited(func(b []byte) {
				editPages(t, b, m, true, isLeaf, func(p []byte) { ne.PutUint32(p[pageHeaderSize+4:], 1<<30) })
			}), nil, "past the end of its page"},
		{"leaf count", "a leaf claims more elements than fit in it",
			edited(func(b []byte) {
				editPages(t, b, m, true, isLeaf, func(p []byte) { ne.PutUint16(p[10:], 0xfff0) })
			}), nil, "more than fit"},
		{"page type", "a page in use of no known type",
			edited(func(b []byte) {
				editPages(t, b, m, true, isLeaf, func(p []byte) { ne.PutUint16(p[8:], 0x80) })
			}), nil, "type"},
		{"page id", "a page that names another page",
			edited(func(b []byte) {
				editPages(t, b, m, true, isLeaf, func(p []byte) { ne.PutUint64(p, ne.Uint64(p)+1) })
			}), nil, "calls itself"},
		{"overflow past end", "a page whose overflow runs past the end",
			edited(func(b []byte) {
				editPages(t, b, m, true, isLeaf, func(p []byte) { ne.PutUint32(p[12:], 1<<20) })
			}), nil, "past the end"},
		{"keys out of order", "a leaf whose keys are out of order",
			edited(func(b []byte) {
				editPages(t, b, m, true, func(p []byte) bool { return isLeaf(p) && countOf(p) > 1 }, func(p []byte) {
					e0, e1 := p[pageHeaderSize:pageHeaderSize+elementSize], p[pageHeaderSize+elementSize:pageHeaderSize+2*elementSize]
					// Point element 1 at element 0's key.
					ne.PutUint32(e1[4:], ne.Uint32(e0[4:])+elementSize)
					ne.PutUint32(e1[8:], ne.Uint32(e0[8:]))
					ne.PutUint32(e1[12:], ne.Uint32(e0[12:]))
				})
			}), nil, "order"},
		{"freelist lists page in use", "the freelist names the root page as free",
			edited(func(b []byte) {
				editPages(t, b, m, false, isFreelist, func(p []byte) {
					if countOf(p) == 0 || countOf(p) == 0xffff {
						t.Fatalf("fixture freelist has %d entries", countOf(p))
					}
					ne.PutUint64(p[pageHeaderSize:], m.root)
				})
			}), nil, "in use and free"},
		{"freelist forgets pages", "free pages neither in use nor listed as free",
			edited(func(b []byte) {
				editPages(t, b, m, false, isFreelist, func(p []byte) { ne.PutUint16(p[10:], 0) })
			}), nil, "neither in use nor free"},
		{"freelist not a freelist", "the freelist page is a leaf",
			edited(func(b []byte) {
				editPages(t, b, m, false, isFreelist, func(p []byte) { ne.PutUint16(p[8:], leafPageFlag) })
			}), nil, "freelist"},
		{"foreign bbolt", "a bbolt database of another program",
			viaBolt(nil, nil), nil, "not a guestward journal"},
		{"other format", "a journal of another schema version",
			viaBolt(nil, func(tx *bolt.Tx) error {
				return tx.Bucket(bucketMeta).Put(keyFormat, []byte("guestward-journal-bolt/2"))
			}), nil, "format"},
		{"no format", "a journal without its format key",
			viaBolt(nil, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyFormat) }), nil, "format"},
		{"extra bucket", "a journal with a bucket of something else",
			viaBolt(nil, func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("zzz")); return err }), nil, "not a guestward journal"},
		{"no ops bucket", "a journal without its ops",
			viaBolt(nil, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketOps) }), nil, "ops"},
		{"nested bucket in ops", "a bucket where an op belongs",
			viaBolt(nil, func(tx *bolt.Tx) error { _, err := tx.Bucket(bucketOps).CreateBucket([]byte("zz")); return err }), nil, "inside the ops bucket"},
		{"sequence behind ops", "the ops bucket's sequence is behind its ops, so a new op would reuse a number",
			viaBolt(nil, func(tx *bolt.Tx) error { return tx.Bucket(bucketOps).SetSequence(3) }), nil, "sequence"},
		{"no freelist", "a database written with NoFreelistSync, which bbolt would rewrite on opening",
			viaBolt(&bolt.Options{NoFreelistSync: true}, func(tx *bolt.Tx) error { return tx.Bucket(bucketOps).Put([]byte("x"), nil) }), nil, "freelist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j.db")
			c.make(t, path)
			before := snap(t, path)
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, journal.ErrCorrupt) {
					t.Fatalf("%s = %v, want ErrCorrupt (%s)", what, err, c.reason)
				}
				var ce *journal.CorruptError
				if !errors.As(err, &ce) || ce.Reason == "" {
					t.Fatalf("%s = %v: no *journal.CorruptError with a reason", what, err)
				}
				if !bytes.Contains([]byte(err.Error()), []byte(c.says)) {
					t.Errorf("%s = %v; want the reason to mention %q", what, err, c.says)
				}
				if c.cause != nil && !errors.Is(err, c.cause) {
					t.Errorf("%s = %v; want it to match %v as well", what, err, c.cause)
				}
				if after := snap(t, path); !before.same(after) {
					t.Fatalf("%s changed the file", what)
				}
			}
			j, err := Open(path)
			if err == nil {
				j.Close()
			}
			check("Open", err)
			_, err = ScanFile(context.Background(), path, nil)
			check("ScanFile", err)
		})
	}
}

func m0(m []byte) boltMeta { return boltMeta{hwm: ne.Uint64(m[40:])} }

// A crash while bbolt writes a meta page leaves that page torn and the
// other one whole; bbolt then uses the other, and so must the journal's
// check: either meta page torn alone is not damage.
func TestOpenToleratesOneTornMeta(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src.db")
	buildJournal(t, src, 60)
	good, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	ps := int(fileMeta(t, src).pageSize)
	for _, page := range []int{0, 1} {
		t.Run(fmt.Sprint("meta ", page), func(t *testing.T) {
			b := bytes.Clone(good)
			b[page*ps+pageHeaderSize+50] ^= 0xff // torn: the checksum fails
			path := filepath.Join(t.TempDir(), "j.db")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := ScanFile(context.Background(), path, nil)
			if err != nil {
				t.Fatalf("ScanFile: %v", err)
			}
			j, err := Open(path)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer j.Close()
			ops, err := j.Ops(context.Background())
			if err != nil || len(ops) != st.Ops || len(ops) == 0 {
				t.Fatalf("Ops = %d ops, %v; ScanFile saw %d", len(ops), err, st.Ops)
			}
		})
	}
}

// A directory or a named pipe at the journal's path is not a database
// file: Open and ScanFile refuse it, as the file journal does, with
// ErrUnsafePath, without waiting for a writer of the pipe.
func TestOpenRefusesNonFiles(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(path string) error
	}{
		{"directory", func(path string) error { return os.Mkdir(path, 0o700) }},
		{"fifo", mkfifo},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j.db")
			if err := c.make(path); errors.Is(err, errors.ErrUnsupported) {
				t.Skip("not here")
			} else if err != nil {
				t.Fatal(err)
			}
			before := snap(t, path)
			if j, err := Open(path); !errors.Is(err, journal.ErrUnsafePath) {
				if err == nil {
					j.Close()
				}
				t.Errorf("Open = %v, want ErrUnsafePath", err)
			}
			if _, err := ScanFile(context.Background(), path, nil); !errors.Is(err, journal.ErrUnsafePath) {
				t.Errorf("ScanFile = %v, want ErrUnsafePath", err)
			}
			if _, err := RepairFile(context.Background(), path); !errors.Is(err, journal.ErrUnsafePath) {
				t.Errorf("Repair = %v, want ErrUnsafePath", err)
			}
			if !before.same(snap(t, path)) {
				t.Error("changed")
			}
		})
	}
}
