//go:build unix

package fsx_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/guestward/guestward/internal/fsx"
	"github.com/guestward/guestward/internal/fsx/fsxtest"
)

func TestResolve(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(base, "real")
	mkdir(t, real, 0o700)
	mkdir(t, filepath.Join(real, "sub"), 0o700)
	symlink(t, "real", filepath.Join(base, "linkdir"))
	symlink(t, filepath.Join("real", "sub"), filepath.Join(base, "deep"))
	symlink(t, "nowhere", filepath.Join(real, "dangling"))
	if err := os.WriteFile(filepath.Join(real, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	symlink(t, filepath.Join("real", "f"), filepath.Join(base, "flink"))
	var fs fsx.OS
	cases := []struct {
		name, in, want string
	}{
		{"plain", filepath.Join(real, "f"), filepath.Join(real, "f")},
		{"missing file", filepath.Join(real, "new"), filepath.Join(real, "new")},
		{"link to the file", filepath.Join(base, "flink"), filepath.Join(real, "f")},
		{"linked directory, missing file", filepath.Join(base, "linkdir", "new"), filepath.Join(real, "new")},
		{"dot-dot after a link goes up from where it leads", filepath.Join(base, "deep") + "/../new", filepath.Join(real, "new")},
	}
	for _, c := range cases {
		got, err := fs.Resolve(c.in)
		if err != nil || got != c.want {
			t.Errorf("%s: Resolve(%s) = %q, %v; want %q", c.name, c.in, got, err, c.want)
		}
	}
	if _, err := fs.Resolve(filepath.Join(real, "dangling")); !errors.Is(err, fsx.ErrUnsafe) {
		t.Errorf("Resolve of a link to nowhere = %v, want ErrUnsafe", err)
	}
	if _, err := fs.Resolve(filepath.Join(base, "missing", "f")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Resolve in a missing directory = %v, want ErrNotExist", err)
	}

	chmod(t, real, 0o777)
	if _, err := fs.Resolve(filepath.Join(base, "flink")); !errors.Is(err, fsx.ErrUnsafe) {
		t.Errorf("Resolve into a world-writable directory = %v, want ErrUnsafe", err)
	}
	chmod(t, real, 0o777|os.ModeSticky)
	if _, err := fs.Resolve(filepath.Join(base, "flink")); err != nil {
		t.Errorf("Resolve into a sticky directory = %v", err)
	}
	chmod(t, real, 0o700)
	chmod(t, base, 0o770)
	if os.Geteuid() == 0 {
		// Root's own group, named as root is: a private group.
		if _, err := fs.Resolve(filepath.Join(real, "f")); err != nil {
			t.Errorf("Resolve below a directory writable by the user's private group = %v", err)
		}
	}
	if fsxtest.ForeignGroup(t, base) {
		if _, err := fs.Resolve(filepath.Join(real, "f")); !errors.Is(err, fsx.ErrUnsafe) {
			t.Errorf("Resolve below a directory writable by another group = %v, want ErrUnsafe", err)
		}
	}
	chmod(t, base, 0o700)
	if os.Geteuid() == 0 {
		if err := os.Chown(real, 65534, -1); err != nil {
			t.Fatal(err)
		}
		if _, err := fs.Resolve(filepath.Join(real, "f")); !errors.Is(err, fsx.ErrUnsafe) {
			t.Errorf("Resolve into another user's directory = %v, want ErrUnsafe", err)
		}
	}
}

func TestCheckFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f")
	if err := os.WriteFile(name, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	check := func() error {
		fi, err := os.Lstat(name)
		if err != nil {
			t.Fatal(err)
		}
		return fsx.CheckFile(name, fi)
	}
	if err := check(); err != nil {
		t.Fatalf("private file: %v", err)
	}
	chmod(t, name, 0o640)
	if err := check(); err != nil {
		t.Fatalf("group-readable file: %v", err)
	}
	for _, m := range []os.FileMode{0o660, 0o606} {
		chmod(t, name, m)
		if err := check(); !errors.Is(err, fsx.ErrUnsafe) {
			t.Errorf("mode %v: %v, want ErrUnsafe", m, err)
		}
	}
	chmod(t, name, 0o600)
	if os.Geteuid() == 0 {
		if err := os.Chown(name, 65534, -1); err != nil {
			t.Fatal(err)
		}
		if err := check(); !errors.Is(err, fsx.ErrUnsafe) {
			t.Errorf("another user's file: %v, want ErrUnsafe", err)
		}
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := fsx.CheckFile(dir, fi); !errors.Is(err, fsx.ErrUnsafe) {
		t.Errorf("directory: %v, want ErrUnsafe", err)
	}
}

// A link planted at a lock file's name is neither created through nor
// locked.
func TestOSLockRefusesLink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	symlink(t, target, filepath.Join(dir, "l"))
	if _, err := (fsx.OS{}).Lock(filepath.Join(dir, "l")); !errors.Is(err, fsx.ErrUnsafe) {
		t.Fatalf("Lock through a link = %v, want ErrUnsafe", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Lock created the link's target: %v", err)
	}
}

// TryLock locks the file, not the name: a second open of it by another name
// is refused, and closing the holder releases it.
func TestOSTryLockByAnyName(t *testing.T) {
	if runtime.GOOS == "solaris" || runtime.GOOS == "aix" || runtime.GOOS == "illumos" {
		t.Skip("no flock")
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	var fs fsx.OS
	f, err := fs.OpenFile(a, os.O_RDWR|os.O_CREATE|os.O_EXCL|fsx.NoFollow, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.TryLock(); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(a, b); err != nil {
		t.Fatal(err)
	}
	g, err := fs.OpenFile(b, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.TryLock(); !errors.Is(err, fsx.ErrLocked) {
		t.Fatalf("TryLock through a hard link = %v, want ErrLocked", err)
	}
	fa, _ := f.Stat()
	fb, _ := g.Stat()
	if !fsx.SameFile(fa, fb) {
		t.Error("SameFile says two names of one file are different files")
	}
	if n, ok := fsx.Links(fb); !ok || n != 2 {
		t.Errorf("Links = %d, %v; want 2", n, ok)
	}
	f.Close()
	if err := g.TryLock(); err != nil {
		t.Fatalf("TryLock after the holder closed: %v", err)
	}
}

func TestNoFollowRefusesLink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	symlink(t, target, filepath.Join(dir, "l"))
	if f, err := (fsx.OS{}).OpenFile(filepath.Join(dir, "l"), os.O_RDWR|fsx.NoFollow, 0); err == nil {
		f.Close()
		t.Fatal("NoFollow opened a link")
	}
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
	chmod(t, dir, mode)
}

func chmod(t *testing.T, name string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}
