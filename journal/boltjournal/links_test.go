package boltjournal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/guestward/guestward/journal"
)

// links returns the names a test reaches the journal at path by: the path
// itself, symbolic links to it and to its directory, a relative link. A
// hard link is made by the tests themselves: a database with two names is
// refused.
func links(t *testing.T, path string) map[string]string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("links need privileges on windows")
	}
	other := t.TempDir()
	names := map[string]string{
		"path":         path,
		"symlink":      filepath.Join(other, "sym.db"),
		"dir symlink":  filepath.Join(other, "dir", filepath.Base(path)),
		"relative sym": filepath.Join(other, "rel.db"),
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(path, names["symlink"]))
	must(os.Symlink(filepath.Dir(path), filepath.Join(other, "dir")))
	rel, err := filepath.Rel(other, path)
	must(err)
	must(os.Symlink(rel, names["relative sym"]))
	return names
}

// hardLink gives the database at path a second name while it is open, as
// someone else might, and returns the name; the test's cleanup removes it.
func hardLink(t *testing.T, path string) string {
	t.Helper()
	name := filepath.Join(filepath.Dir(path), "hard.db")
	if err := os.Link(path, name); err != nil {
		t.Skip(err)
	}
	return name
}

// One journal owns a database, whatever name reaches it: while it is open,
// opening it again by any name, in this process, fails with ErrLocked, and
// so do ScanFile and Repair; a hard link made while it is open included.
func TestOneOwnerWhateverTheName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	buildJournal(t, path, 3)
	names := links(t, path)
	ctx := context.Background()
	for first, p1 := range names {
		j, err := Open(p1)
		if err != nil {
			t.Fatalf("Open(%s): %v", first, err)
		}
		names["hard link"] = hardLink(t, path)
		for second, p2 := range names {
			if j2, err := Open(p2); !errors.Is(err, journal.ErrLocked) {
				if err == nil {
					j2.Close()
				}
				t.Errorf("opened by %s, Open by %s = %v, want ErrLocked", first, second, err)
			}
			if _, err := ScanFile(ctx, p2, nil); !errors.Is(err, journal.ErrLocked) {
				t.Errorf("opened by %s, ScanFile by %s = %v, want ErrLocked", first, second, err)
			}
			if _, err := RepairFile(ctx, p2); !errors.Is(err, journal.ErrLocked) {
				t.Errorf("opened by %s, Repair by %s = %v, want ErrLocked", first, second, err)
			}
		}
		os.Remove(names["hard link"])
		delete(names, "hard link")
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// The same across processes: a child process opens the journal by each
// name while this one holds it.
func TestOneOwnerAcrossProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	buildJournal(t, path, 3)
	names := links(t, path)
	for first, p1 := range names {
		j, err := Open(p1)
		if err != nil {
			t.Fatalf("Open(%s): %v", first, err)
		}
		names["hard link"] = hardLink(t, path)
		for second, p2 := range names {
			cmd := exec.Command(os.Args[0], "-test.run=^TestOneOwnerChild$")
			cmd.Env = append(os.Environ(), "BOLTJOURNAL_CHILD_OPEN="+p2)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			if got := lastLine(out); got != "locked" {
				t.Errorf("opened by %s here, Open by %s in another process: %s", first, second, out)
			}
		}
		os.Remove(names["hard link"])
		delete(names, "hard link")
		j.Close()
	}
}

// TestOneOwnerChild is the child process of TestOneOwnerAcrossProcesses;
// run directly, it skips.
func TestOneOwnerChild(t *testing.T) {
	path := os.Getenv("BOLTJOURNAL_CHILD_OPEN")
	if path == "" {
		t.Skip("child of TestOneOwnerAcrossProcesses")
	}
	j, err := Open(path)
	switch {
	case errors.Is(err, journal.ErrLocked):
		fmt.Println("locked")
	case err != nil:
		fmt.Println("error:", err)
	default:
		j.Close()
		fmt.Println("opened")
	}
}

// lastLine returns the child's verdict, the last line it printed.
func lastLine(out []byte) string {
	lines := strings.Fields(strings.TrimSpace(string(out)))
	for i := len(lines) - 1; i >= 0; i-- {
		if l := lines[i]; l == "locked" || l == "opened" || l == "error:" {
			return l
		}
	}
	return ""
}

// Compaction through a symbolic link replaces the file the link leads to,
// not the link: afterwards the link and the file still name one journal.
func TestCompactThroughSymlink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	buildJournal(t, path, 40)
	link := filepath.Join(t.TempDir(), "link.db")
	if err := os.Symlink(path, link); err != nil {
		t.Skip(err)
	}
	ctx := context.Background()
	j, err := Open(link)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Append(ctx, started("after", "")); err != nil {
		t.Fatal(err)
	}
	if err := j.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(ctx, started("after-compact", "")); err != nil {
		t.Fatal(err)
	}
	j.Close()
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link is no longer a link: %v %v", fi.Mode(), err)
	}
	st, err := ScanFile(ctx, path, nil)
	if err != nil || st.Ops != 42 {
		t.Fatalf("the file the link leads to: %+v, %v; want 42 ops", st, err)
	}
}

// A database with another name (a hard link) is refused, and one that
// gains one while open is not compacted or repaired: renaming a new file
// over one name would leave the other naming the old file, and the journal
// would split in two.
func TestHardLinkedDatabaseRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	buildJournal(t, path, 10)
	other := hardLink(t, path)
	ctx := context.Background()
	if j, err := Open(path); !errors.Is(err, journal.ErrUnsafePath) {
		if err == nil {
			j.Close()
		}
		t.Fatalf("Open of a hard-linked database = %v, want ErrUnsafePath", err)
	}
	os.Remove(other)
	j, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	hardLink(t, path)
	if err := j.Compact(ctx); !errors.Is(err, journal.ErrUnsafePath) {
		t.Fatalf("Compact = %v, want ErrUnsafePath", err)
	}
	// The journal is still usable, and both names still name it.
	if err := j.Append(ctx, started("after", "")); err != nil {
		t.Fatal(err)
	}
	j.Close()
	st, err := ScanFile(ctx, other, nil)
	if err != nil || st.Ops != 11 {
		t.Fatalf("by the other name: %+v, %v; want 11 ops", st, err)
	}
	// Damage it: Repair refuses too, and leaves both names alone.
	b, _ := os.ReadFile(path)
	editPages(t, b, fileMeta(t, path), true, func(p []byte) bool { return flagsOf(p) == leafPageFlag && countOf(p) > 0 },
		func(p []byte) { ne.PutUint32(p[pageHeaderSize+4:], 1<<30) })
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := RepairFile(ctx, other); !errors.Is(err, journal.ErrUnsafePath) {
		t.Fatalf("Repair = %v, want ErrUnsafePath", err)
	}
	if now, _ := os.ReadFile(other); !bytes.Equal(now, b) {
		t.Fatal("Repair changed the database it refused")
	}
}

// A journal is not opened where others could rename its files, and a link
// planted at one of its temporary names is never written through.
func TestUnsafePlaces(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no permission checks on windows")
	}
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if j, err := Open(filepath.Join(open, "j.db")); !errors.Is(err, journal.ErrUnsafePath) {
		if err == nil {
			j.Close()
		}
		t.Fatalf("Open in a world-writable directory = %v, want ErrUnsafePath", err)
	}
	if _, err := os.Stat(filepath.Join(open, "j.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open refused the directory but created the journal: %v", err)
	}

	path := filepath.Join(t.TempDir(), "j.db")
	buildJournal(t, path, 20)
	if err := os.Chmod(path, 0o640|0o002); err != nil {
		t.Fatal(err)
	}
	if j, err := Open(path); !errors.Is(err, journal.ErrUnsafePath) {
		if err == nil {
			j.Close()
		}
		t.Fatalf("Open of a world-writable database = %v, want ErrUnsafePath", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, suffix := range []string{compactSuffix, createSuffix} {
		if err := os.Symlink(victim, path+suffix); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Fatalf("a planted link was written through: %q", b)
	}
}
