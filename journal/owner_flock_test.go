//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package journal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/internal/fsx/fsxtest"
)

// ownerLayout is a journal and the other paths that reach it:
//
//	base/real/ops.journal       the journal
//	base/real/sub/              an empty directory
//	base/linkdir -> real
//	base/deep    -> real/sub
//	base/link.journal -> real/ops.journal
type ownerLayout struct {
	base, path string
	aliases    []ownerAlias
}

type ownerAlias struct {
	name, path, why string
}

func newOwnerLayout(t *testing.T) ownerLayout {
	t.Helper()
	base := t.TempDir()
	real := filepath.Join(base, "real")
	for _, d := range []string{real, filepath.Join(real, "sub")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(real, "ops.journal")
	links := [][2]string{
		{"real", filepath.Join(base, "linkdir")},
		{filepath.Join("real", "sub"), filepath.Join(base, "deep")},
		{filepath.Join("real", "ops.journal"), filepath.Join(base, "link.journal")},
	}
	for _, l := range links {
		if err := os.Symlink(l[0], l[1]); err != nil {
			t.Fatal(err)
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, path)
	if err != nil {
		t.Fatal(err)
	}
	relLink, err := filepath.Rel(wd, filepath.Join(base, "linkdir"))
	if err != nil {
		t.Fatal(err)
	}
	return ownerLayout{base: base, path: path, aliases: []ownerAlias{
		{"symlink to the file", filepath.Join(base, "link.journal"), "a link to the journal must lead to the same lock"},
		{"symlinked parent", filepath.Join(base, "linkdir", "ops.journal"), "a link to the directory must lead to the same lock"},
		{"relative", rel, "a relative path names the same file as the absolute one"},
		{"relative through a link", relLink + "/./ops.journal", "both at once"},
		{"dot-dot", filepath.Join(real, "sub") + "/../ops.journal", "a .. names the same file"},
		// The kernel follows deep to real/sub and then goes up to real;
		// cleaning the path as text would remove deep and name
		// base/ops.journal, another file.
		{"dot-dot after a link", filepath.Join(base, "deep") + "/../ops.journal", ".. applies after the link, as the kernel applies it"},
	}}
}

// secondOpenerLocked checks that every alias of l is refused to a second
// opener, and to RepairFile, with ErrLocked.
func secondOpenerLocked(t *testing.T, l ownerLayout, when string, skip string) {
	t.Helper()
	ctx := context.Background()
	for _, a := range append([]ownerAlias{{"the path itself", l.path, "the plain case"}}, l.aliases...) {
		if a.path == skip {
			continue
		}
		if j, err := OpenFile(a.path); !errors.Is(err, ErrLocked) {
			if err == nil {
				j.Close()
			}
			t.Errorf("%s: second OpenFile through %s (%s) = %v, want ErrLocked (%s)", when, a.name, a.path, err, a.why)
		}
		if _, err := RepairFile(ctx, a.path); !errors.Is(err, ErrLocked) {
			t.Errorf("%s: RepairFile through %s (%s) = %v, want ErrLocked", when, a.name, a.path, err)
		}
	}
}

func appendOp(t *testing.T, j *FileJournal, op, key string) {
	t.Helper()
	if err := j.Append(context.Background(), Entry{OpID: op, VMID: 100, Kind: "start", State: Started, IdempKey: key}); err != nil {
		t.Fatal(err)
	}
}

// Item: one owner per journal, whatever path reaches it. Two owners of one
// file each accept records (the same one-shot key twice) and interleave
// their writes, and the next open finds the file damaged.
func TestOneOwnerWhateverPath(t *testing.T) {
	l := newOwnerLayout(t)
	fp := new(failpoint.Set)
	j, err := OpenFile(l.path, withFailpoints(fp), WithCompactThreshold(0), WithRetention(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	appendOp(t, j, "op-1", "ticket-1")
	secondOpenerLocked(t, l, "open", "")

	// While a compaction runs: before and after the new file is renamed
	// over the journal.
	for _, point := range []string{"compact/before-rename", "compact/before-syncdir"} {
		arrived, release := make(chan struct{}), make(chan struct{})
		fp.Enable(point, func() error {
			close(arrived)
			<-release
			return nil
		})
		done := make(chan error, 1)
		go func() { done <- j.Compact(context.Background()) }()
		<-arrived
		secondOpenerLocked(t, l, "compacting, at "+point, "")
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		fp.Disable(point)
		secondOpenerLocked(t, l, "after a compaction stopped at "+point, "")
	}
	appendOp(t, j, "op-2", "ticket-2")
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j2, err := OpenFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	for _, k := range []string{"ticket-1", "ticket-2"} {
		if _, ok, err := j2.LatestByKey(context.Background(), k); err != nil || !ok {
			t.Errorf("key %s after reopening: %v %v", k, ok, err)
		}
	}
}

// The first opener may come through any alias too; the journal it
// compacts stays where the alias leads, and the links stay links.
func TestOneOwnerOpenedThroughAlias(t *testing.T) {
	l := newOwnerLayout(t)
	// A link must lead to an existing file; see TestOpenRefusesUnsafeJournalFile.
	j, err := OpenFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	for _, a := range l.aliases {
		t.Run(a.name, func(t *testing.T) {
			j, err := OpenFile(a.path, WithCompactThreshold(0), WithRetention(-1))
			if err != nil {
				t.Fatal(err)
			}
			appendOp(t, j, "op-"+a.name, "")
			secondOpenerLocked(t, l, "opened through "+a.name, a.path)
			if err := j.Compact(context.Background()); err != nil {
				t.Fatal(err)
			}
			secondOpenerLocked(t, l, "compacted through "+a.name, a.path)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Lstat(filepath.Join(l.base, "link.journal")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Fatalf("compaction replaced the link to the journal: %v %v", fi, err)
			}
			if _, err := os.Lstat(filepath.Join(l.base, "ops.journal")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a journal appeared beside the links: %v", err)
			}
			j2, err := OpenFile(l.path)
			if err != nil {
				t.Fatal(err)
			}
			defer j2.Close()
			if _, ok, _ := j2.Latest(context.Background(), "op-"+a.name); !ok {
				t.Fatal("the record appended through the alias is not in the journal")
			}
		})
	}
}

// A hard link is a second name for the same file. A second opener through
// it is refused while the journal is open; a compaction, which would leave
// the other name holding a stale copy, is refused; and a journal file with
// two names is not opened at all.
func TestOneOwnerHardLink(t *testing.T) {
	l := newOwnerLayout(t)
	ctx := context.Background()
	j, err := OpenFile(l.path, WithCompactThreshold(0), WithRetention(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	appendOp(t, j, "op-1", "ticket-1")
	hard := filepath.Join(l.base, "real", "hard.journal")
	if err := os.Link(l.path, hard); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(hard); !errors.Is(err, ErrLocked) {
		t.Fatalf("OpenFile through a hard link = %v, want ErrLocked", err)
	}
	if err := j.Compact(ctx); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("Compact of a hard-linked journal = %v, want ErrUnsafePath", err)
	}
	appendOp(t, j, "op-2", "")
	if _, err := OpenFile(hard); !errors.Is(err, ErrLocked) {
		t.Fatalf("OpenFile through a hard link after the refused compaction = %v, want ErrLocked", err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{l.path, hard} {
		if _, err := OpenFile(p); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("OpenFile(%s) with two names = %v, want ErrUnsafePath", p, err)
		}
		if _, err := RepairFile(ctx, p); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("RepairFile(%s) with two names = %v, want ErrUnsafePath", p, err)
		}
	}
	if err := os.Remove(hard); err != nil {
		t.Fatal(err)
	}
	j2, err := OpenFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	for _, op := range []string{"op-1", "op-2"} {
		if _, ok, _ := j2.Latest(ctx, op); !ok {
			t.Errorf("%s lost", op)
		}
	}
}

// A journal renamed while open is still the same file: a second opener at
// the new name is refused, and the first does not compact (which would
// write a new journal at the old name and split it in two).
func TestOneOwnerMovedWhileOpen(t *testing.T) {
	l := newOwnerLayout(t)
	ctx := context.Background()
	j, err := OpenFile(l.path, WithCompactThreshold(0), WithRetention(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	appendOp(t, j, "op-1", "ticket-1")
	moved := filepath.Join(l.base, "real", "moved.journal")
	if err := os.Rename(l.path, moved); err != nil {
		t.Fatal(err)
	}
	if j2, err := OpenFile(moved); !errors.Is(err, ErrLocked) {
		if err == nil {
			j2.Close()
		}
		t.Fatalf("OpenFile at the new name = %v, want ErrLocked", err)
	}
	if err := j.Compact(ctx); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("Compact of a moved journal = %v, want ErrUnsafePath", err)
	}
	if _, err := os.Lstat(l.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a journal reappeared at the old name: %v", err)
	}
	appendOp(t, j, "op-2", "")
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j2, err := OpenFile(moved)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	for _, op := range []string{"op-1", "op-2"} {
		if _, ok, _ := j2.Latest(ctx, op); !ok {
			t.Errorf("%s lost", op)
		}
	}
}

const ownerChildEnv = "GUESTWARD_OWNER_CHILD_JOURNAL"

// TestOneOwnerAcrossProcesses holds the journal open in a child process,
// opened through one path, and checks every path from this one, before,
// during and after the child compacts.
func TestOneOwnerAcrossProcesses(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	l := newOwnerLayout(t)
	for i, childPath := range []string{l.path, l.aliases[len(l.aliases)-1].path, l.aliases[0].path} {
		cmd := exec.Command(exe, "-test.run=^TestOneOwnerChild$", "-test.count=1", "-test.v=false")
		cmd.Env = append(os.Environ(), ownerChildEnv+"="+childPath)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		var said strings.Builder
		expect := func(want string) {
			t.Helper()
			for lines.Scan() {
				if lines.Text() == want {
					return
				}
				said.WriteString(lines.Text() + "\n")
			}
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child (opened %s) never said %q:\n%s%s", childPath, want, said.String(), stderr.String())
		}
		expect("open")
		secondOpenerLocked(t, l, fmt.Sprintf("child %d holds it", i), "")
		fmt.Fprintln(stdin, "compact")
		expect("compacting")
		// The child stops before the rename until told to go on.
		secondOpenerLocked(t, l, fmt.Sprintf("child %d compacting", i), "")
		fmt.Fprintln(stdin, "go")
		expect("compacted")
		secondOpenerLocked(t, l, fmt.Sprintf("child %d compacted", i), "")
		stdin.Close()
		io.Copy(io.Discard, stdout)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child: %v\n%s", err, stderr.String())
		}
	}
	j, err := OpenFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if st := j.Stats(); st.Keys != 1 || st.Ops != 3 {
		t.Fatalf("after three children: %+v, want 3 ops and the key once", st)
	}
}

// TestOneOwnerChild is the child of TestOneOwnerAcrossProcesses; run
// directly, it skips.
func TestOneOwnerChild(t *testing.T) {
	path := os.Getenv(ownerChildEnv)
	if path == "" {
		t.Skip("runs only as the child of TestOneOwnerAcrossProcesses")
	}
	fp := new(failpoint.Set)
	in := bufio.NewScanner(os.Stdin)
	fp.Enable("compact/before-rename", func() error {
		fmt.Println("compacting")
		if !in.Scan() || in.Text() != "go" {
			return errors.New("told to stop")
		}
		return nil
	})
	j, err := OpenFile(path, withFailpoints(fp), WithCompactThreshold(0), WithRetention(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ctx := context.Background()
	n := j.Stats().Ops
	key := ""
	if n == 0 {
		key = "ticket-1"
	}
	if err := j.Append(ctx, Entry{OpID: fmt.Sprint("child-", n), VMID: 100, Kind: "start", State: Started, IdempKey: key}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("open")
	for in.Scan() {
		if in.Text() == "compact" {
			if err := j.Compact(ctx); err != nil {
				t.Fatal(err)
			}
			fmt.Println("compacted")
		}
	}
}

// A link planted at the name compaction writes to must be neither followed
// nor left to redirect the new journal.
func TestCompactDoesNotFollowPlantedLink(t *testing.T) {
	l := newOwnerLayout(t)
	victim := filepath.Join(l.base, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err := OpenFile(l.path, WithCompactThreshold(0), WithRetention(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	appendOp(t, j, "op-1", "ticket-1")
	missing := filepath.Join(l.base, "created-through-link")
	for _, target := range []string{victim, missing} {
		os.Remove(l.path + compactSuffix)
		if err := os.Symlink(target, l.path+compactSuffix); err != nil {
			t.Fatal(err)
		}
		err := j.Compact(context.Background())
		if b, _ := os.ReadFile(victim); string(b) != "precious" {
			t.Fatalf("compaction wrote through a planted link (Compact = %v): victim holds %q", err, b)
		}
		if _, serr := os.Lstat(missing); !errors.Is(serr, os.ErrNotExist) {
			t.Fatalf("compaction created a file through a planted link (Compact = %v)", err)
		}
		if fi, serr := os.Lstat(l.path); serr != nil || !fi.Mode().IsRegular() {
			t.Fatalf("the journal is no longer a regular file (Compact = %v): %v %v", err, fi, serr)
		}
	}
	appendOp(t, j, "op-2", "")
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j2, err := OpenFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if st := j2.Stats(); st.Ops != 2 {
		t.Fatalf("after the planted links: %+v", st)
	}
}

// The lock file is never opened through a link: one planted there is
// refused, and nothing is created or locked where it leads.
func TestLockFileNotFollowed(t *testing.T) {
	l := newOwnerLayout(t)
	missing := filepath.Join(l.base, "created-through-lock-link")
	if err := os.Symlink(missing, l.path+lockSuffix); err != nil {
		t.Fatal(err)
	}
	j, err := OpenFile(l.path)
	if err == nil {
		j.Close()
	}
	if !errors.Is(err, ErrUnsafePath) {
		t.Errorf("OpenFile with a link at the lock's name = %v, want ErrUnsafePath", err)
	}
	if _, err := RepairFile(context.Background(), l.path); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("RepairFile with a link at the lock's name = %v, want ErrUnsafePath", err)
	}
	if _, err := os.Lstat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file was created through the link at the lock's name: %v", err)
	}
}

// Directories other users can write to, or that another user owns, let
// them swap the journal's name under it: refused, like ssh refuses such
// key files.
func TestOpenRefusesUnsafeDirectories(t *testing.T) {
	root := os.Geteuid() == 0
	cases := []struct {
		name   string
		parent os.FileMode // mode of the journal's directory
		above  os.FileMode // mode of the directory above it
		owner  int         // uid to give the journal's directory; -1: leave
		group  bool        // give the journal's directory a group that is not ours
		ok     bool
		why    string
	}{
		{"private", 0o700, 0o700, -1, false, true, "the usual case"},
		{"readable by all", 0o755, 0o755, -1, false, true, "reading is not swapping"},
		{"world writable", 0o777, 0o700, -1, false, false, "anyone can rename the journal away and put another in its place"},
		{"group writable", 0o770, 0o700, -1, true, false, "so can every member of the group"},
		{"world writable, sticky", 0o777 | os.ModeSticky, 0o700, -1, false, true, "the sticky bit keeps others from renaming our files, as in /tmp"},
		{"writable directory above", 0o700, 0o777, -1, false, false, "anyone can rename the journal's directory and put another in its place"},
		{"owned by another user", 0o700, 0o755, 65534, false, false, "the owner can rename entries whatever the mode"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.owner >= 0 && !root {
				t.Skip("needs root to give a directory away")
			}
			above := filepath.Join(t.TempDir(), "above")
			dir := filepath.Join(above, "dir")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			// Chmod, not Mkdir: the umask must not decide the mode.
			if err := os.Chmod(dir, c.parent); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(above, c.above); err != nil {
				t.Fatal(err)
			}
			if c.owner >= 0 {
				if err := os.Chown(dir, c.owner, -1); err != nil {
					t.Fatal(err)
				}
			}
			if c.group && !fsxtest.ForeignGroup(t, dir) {
				t.Skip("needs a group other than this user's own")
			}
			path := filepath.Join(dir, "ops.journal")
			j, err := OpenFile(path)
			if err == nil {
				j.Close()
			}
			switch {
			case c.ok && err != nil:
				t.Fatalf("OpenFile = %v, want success (%s)", err, c.why)
			case !c.ok && !errors.Is(err, ErrUnsafePath):
				t.Fatalf("OpenFile = %v, want ErrUnsafePath (%s)", err, c.why)
			case !c.ok:
				if _, serr := os.Lstat(path); !errors.Is(serr, os.ErrNotExist) {
					t.Fatalf("OpenFile refused the path but created the journal: %v", serr)
				}
				if _, rerr := RepairFile(context.Background(), path); !errors.Is(rerr, ErrUnsafePath) {
					t.Fatalf("RepairFile = %v, want ErrUnsafePath", rerr)
				}
			}
		})
	}
}

// A journal file others can write to, or that is no journal file at all,
// is refused before anything is read from it.
func TestOpenRefusesUnsafeJournalFile(t *testing.T) {
	root := os.Geteuid() == 0
	cases := []struct {
		name  string
		setup func(t *testing.T, path string)
		root  bool
		why   string
	}{
		{"world writable", func(t *testing.T, path string) { chmod(t, path, 0o666) }, false, "anyone could write records"},
		{"group writable", func(t *testing.T, path string) { chmod(t, path, 0o620) }, false, "every member of the group could write records"},
		{"owned by another user", func(t *testing.T, path string) {
			if err := os.Chown(path, 65534, -1); err != nil {
				t.Fatal(err)
			}
		}, true, "its owner could write records"},
		{"a fifo", func(t *testing.T, path string) {
			os.Remove(path)
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, false, "not a file"},
		{"a link to nowhere", func(t *testing.T, path string) {
			os.Remove(path)
			if err := os.Symlink(filepath.Join(filepath.Dir(path), "nowhere"), path); err != nil {
				t.Fatal(err)
			}
		}, false, "creating the journal would create a file where the link leads"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.root && !root {
				t.Skip("needs root to give a file away")
			}
			path := filepath.Join(t.TempDir(), "ops.journal")
			j, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			j.Close()
			c.setup(t, path)
			if j, err = OpenFile(path); err == nil {
				j.Close()
			}
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("OpenFile = %v, want ErrUnsafePath (%s)", err, c.why)
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(path), "nowhere")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a file was created where a link leads: %v", err)
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
