package fsxtest_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/guestward/guestward/internal/fsx"
	"github.com/guestward/guestward/internal/fsx/fsxtest"
)

func write(t *testing.T, f fsx.File, s string) {
	t.Helper()
	if _, err := f.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func content(t *testing.T, s *fsxtest.FS, name string) (string, bool) {
	t.Helper()
	b, err := s.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

func TestUnsyncedDataIsLost(t *testing.T) {
	s := fsxtest.New()
	f, err := s.OpenFile("/d/a", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, "hello ")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	write(t, f, "world")

	// The creation was never made durable by a directory sync.
	if _, ok := content(t, s.Recover(fsxtest.Crash{}), "/d/a"); ok {
		t.Fatal("file survived although its directory entry was never synced")
	}
	if err := s.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		c    fsxtest.Crash
		want string
	}{
		{"only synced", fsxtest.Crash{}, "hello "},
		{"everything", fsxtest.Crash{DirOps: -1, FileOps: -1}, "hello world"},
		{"torn prefix", fsxtest.Crash{DirOps: -1, FileOps: -1, Tear: fsxtest.TearPrefix(2)}, "hello wo"},
	}
	for _, tc := range cases {
		got, ok := content(t, s.Recover(tc.c), "/d/a")
		if !ok || got != tc.want {
			t.Errorf("%s: recovered %q (present %v), want %q", tc.name, got, ok, tc.want)
		}
	}
	// The running view is unaffected by Recover.
	if got, _ := content(t, s, "/d/a"); got != "hello world" {
		t.Errorf("live view = %q", got)
	}
}

func TestTearSectorsZeroesLostSectors(t *testing.T) {
	s := fsxtest.New()
	s.WriteFile("/d/a", nil, 0o600)
	f, err := s.OpenFile("/d/a", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{'x'}, 3*fsxtest.SectorSize)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	r := s.Recover(fsxtest.Crash{DirOps: -1, FileOps: -1, Tear: fsxtest.TearSectors(func(i int) bool { return i == 1 })})
	got, _ := r.ReadFile("/d/a")
	if len(got) != len(data) {
		t.Fatalf("len = %d, want %d", len(got), len(data))
	}
	for i, b := range got {
		lost := i >= fsxtest.SectorSize && i < 2*fsxtest.SectorSize
		if lost && b != 0 || !lost && b != 'x' {
			t.Fatalf("byte %d = %q (lost sector %v)", i, b, lost)
		}
	}
}

func TestRenameDurableOnlyAfterDirSync(t *testing.T) {
	s := fsxtest.New()
	s.WriteFile("/d/log", []byte("old"), 0o600)
	f, err := s.OpenFile("/d/tmp", os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, "new")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Rename("/d/tmp", "/d/log"); err != nil {
		t.Fatal(err)
	}
	for dirOps, want := range []string{"old", "old", "new"} {
		got, _ := content(t, s.Recover(fsxtest.Crash{DirOps: dirOps}), "/d/log")
		if got != want {
			t.Errorf("with %d name changes surviving, log = %q, want %q", dirOps, got, want)
		}
	}
	if err := s.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	r := s.Recover(fsxtest.Crash{})
	if got, _ := content(t, r, "/d/log"); got != "new" {
		t.Errorf("after dir sync, log = %q, want new", got)
	}
	if _, ok := content(t, r, "/d/tmp"); ok {
		t.Error("tmp still present after rename and dir sync")
	}
}

func TestCrashAfterStopsEverything(t *testing.T) {
	s := fsxtest.New()
	s.CrashAfter(2)
	f, err := s.OpenFile("/d/a", os.O_CREATE|os.O_RDWR, 0o600) // op 1
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, "a") // op 2
	if s.Crashed() {
		t.Fatal("crashed too early")
	}
	if _, err := f.Write([]byte("b")); !errors.Is(err, fsxtest.ErrCrashed) {
		t.Fatalf("third operation: err = %v, want ErrCrashed", err)
	}
	if err := f.Sync(); !errors.Is(err, fsxtest.ErrCrashed) {
		t.Fatalf("sync after crash: err = %v, want ErrCrashed", err)
	}
	if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, fsxtest.ErrCrashed) {
		t.Fatalf("read after crash: err = %v, want ErrCrashed", err)
	}
	if got := s.Ops(); got != 2 {
		t.Fatalf("Ops = %d, want 2", got)
	}
	if len(s.Trace()) != 2 {
		t.Fatalf("Trace = %v", s.Trace())
	}
}

func TestTruncateAndReads(t *testing.T) {
	s := fsxtest.New()
	s.WriteFile("/d/a", []byte("abcdef"), 0o600)
	f, err := s.OpenFile("/d/a", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	write(t, f, "XY")
	got, err := io.ReadAll(io.NewSectionReader(f, 0, 100))
	if err != nil || string(got) != "abcXY" {
		t.Fatalf("contents = %q, %v", got, err)
	}
	// Truncation survives only with its pending op.
	if got, _ := content(t, s.Recover(fsxtest.Crash{FileOps: 0}), "/d/a"); got != "abcdef" {
		t.Errorf("nothing pending survives: %q", got)
	}
	if got, _ := content(t, s.Recover(fsxtest.Crash{FileOps: 1}), "/d/a"); got != "abc" {
		t.Errorf("truncate survives: %q", got)
	}
	fi, err := s.Stat("/d/a")
	if err != nil || fi.Size() != 5 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("Stat = %v, %v", fi, err)
	}
}

func TestWriteAtOverwritesInPlace(t *testing.T) {
	s := fsxtest.New()
	s.WriteFile("/d/a", []byte("0000000000"), 0o600)
	f, err := s.OpenFile("/d/a", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("ab"), 3); err != nil {
		t.Fatal(err)
	}
	if got, _ := content(t, s, "/d/a"); got != "000ab00000" {
		t.Fatalf("live = %q", got)
	}
	if got, _ := content(t, s.Recover(fsxtest.Crash{}), "/d/a"); got != "0000000000" {
		t.Fatalf("unsynced overwrite survived: %q", got)
	}
	if got, _ := content(t, s.Recover(fsxtest.Crash{DirOps: -1, FileOps: -1, Tear: fsxtest.TearPrefix(1)}), "/d/a"); got != "000a000000" {
		t.Fatalf("torn overwrite = %q", got)
	}
}

func TestLock(t *testing.T) {
	s := fsxtest.New()
	l, err := s.Lock("/d/a.lock")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock("/d/a.lock"); !errors.Is(err, fsx.ErrLocked) {
		t.Fatalf("second lock: %v, want ErrLocked", err)
	}
	l.Close()
	l2, err := s.Lock("/d/a.lock")
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.Close()
}

// TryLock locks the inode: another handle on the same file is refused, by
// whatever name it was opened, until the holder closes.
func TestTryLock(t *testing.T) {
	s := fsxtest.New()
	f, err := s.OpenFile("/d/a", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.TryLock(); err != nil {
		t.Fatal(err)
	}
	if err := f.TryLock(); err != nil {
		t.Fatalf("holder locking again: %v", err)
	}
	if err := s.Rename("/d/a", "/d/b"); err != nil {
		t.Fatal(err)
	}
	g, err := s.OpenFile("/d/b", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.TryLock(); !errors.Is(err, fsx.ErrLocked) {
		t.Fatalf("second handle: %v, want ErrLocked", err)
	}
	fi, _ := f.Stat()
	gi, _ := g.Stat()
	if !fsx.SameFile(fi, gi) {
		t.Error("SameFile: two handles on one file differ")
	}
	f.Close()
	if err := g.TryLock(); err != nil {
		t.Fatalf("after the holder closed: %v", err)
	}
	g.Close()
}
