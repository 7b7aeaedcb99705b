//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package gauntlet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
)

// journalWorld is a file journal as someone else on the machine finds it:
//
//	base/              0700, the operator's
//	base/state/        0700, the journal's directory
//	base/state/ops.journal
//	base/victim        a file of ours the attacks aim at; it must never change
//	base/created       a name the attacks point links at; it must never appear
//
// The owner has acknowledged op-1, which spent the one-shot key ticket-1.
type journalWorld struct {
	base, dir, path  string
	victim, created  string
	acked            []string
	alias            map[string]string
	refused, allowed int // attempts of a second owner refused, and let through
}

const victimText = "precious: not a journal"

func newJournalWorld(t *testing.T) *journalWorld {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := &journalWorld{
		base: base, dir: filepath.Join(base, "state"),
		victim: filepath.Join(base, "victim"), created: filepath.Join(base, "created"),
	}
	w.path = filepath.Join(w.dir, "ops.journal")
	for _, d := range []string{w.dir, filepath.Join(w.dir, "sub")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(w.victim, []byte(victimText), 0o600); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		filepath.Join(base, "linkdir"):      "state",
		filepath.Join(base, "deep"):         filepath.Join("state", "sub"),
		filepath.Join(base, "link.journal"): filepath.Join("state", "ops.journal"),
	}
	for name, target := range links {
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, w.path)
	if err != nil {
		t.Fatal(err)
	}
	w.alias = map[string]string{
		"itself":               w.path,
		"a link to the file":   filepath.Join(base, "link.journal"),
		"a linked directory":   filepath.Join(base, "linkdir", "ops.journal"),
		"a relative path":      rel,
		"a .. after a link":    filepath.Join(base, "deep") + "/../ops.journal",
		"a .. through nothing": filepath.Join(w.dir, "sub", "..", "ops.journal"),
	}
	j := w.open(t)
	w.ack(t, j, "op-1", "ticket-1")
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *journalWorld) open(t *testing.T) *journal.FileJournal {
	t.Helper()
	j, err := journal.OpenFile(w.path, journal.WithCompactThreshold(0), journal.WithRetention(-1))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// ack appends op's start and success and remembers it as acknowledged.
func (w *journalWorld) ack(t *testing.T, j *journal.FileJournal, op, key string) {
	t.Helper()
	ctx := context.Background()
	for _, e := range []journal.Entry{
		{OpID: op, VMID: 100, Kind: "start", State: journal.Started, IdempKey: key},
		{OpID: op, State: journal.Succeeded},
	} {
		if err := j.Append(ctx, e); err != nil {
			t.Fatalf("append %s: %v", op, err)
		}
	}
	w.acked = append(w.acked, op)
}

// secondOwner tries to open the journal, and to repair it, through every
// alias; each attempt must be refused with ErrLocked.
func (w *journalWorld) secondOwner(t *testing.T, when string) {
	t.Helper()
	for name, p := range w.alias {
		if j, err := journal.OpenFile(p); !errors.Is(err, journal.ErrLocked) {
			if err == nil {
				w.allowed++
				j.Close()
			}
			t.Errorf("%s: a second OpenFile through %s = %v, want ErrLocked", when, name, err)
		} else {
			w.refused++
		}
		if _, err := journal.RepairFile(context.Background(), p); !errors.Is(err, journal.ErrLocked) {
			t.Errorf("%s: RepairFile through %s = %v, want ErrLocked", when, name, err)
		}
	}
}

// check is run once the attack is over and undone: nothing the attacks
// aimed at changed, and every acknowledged record is in the journal, with
// ticket-1 spent once, by op-1.
func (w *journalWorld) check(t *testing.T) {
	t.Helper()
	if b, err := os.ReadFile(w.victim); err != nil || string(b) != victimText {
		t.Errorf("the victim file was changed: %q %v", b, err)
	}
	if _, err := os.Lstat(w.created); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file was created where a planted link leads: %v", err)
	}
	j, err := journal.OpenFile(w.path)
	if err != nil {
		t.Fatalf("reopening after the attack: %v", err)
	}
	defer j.Close()
	ctx := context.Background()
	for _, op := range w.acked {
		if e, ok, err := j.Latest(ctx, op); err != nil || !ok || e.State != journal.Succeeded {
			t.Errorf("acknowledged %s after the attack: %+v %v %v", op, e, ok, err)
		}
	}
	if e, ok, err := j.LatestByKey(ctx, "ticket-1"); err != nil || !ok || e.OpID != "op-1" {
		t.Errorf("ticket-1 after the attack: %+v %v %v", e, ok, err)
	}
}

// journalAttack is one thing someone else on the machine does to a file
// journal, and what the journal must make of it.
type journalAttack struct {
	name, why string
	root      bool // needs root, to give files away
	// attack runs with the owner's journal open (owner is nil when
	// closed is set) and returns the error of the refused operation.
	attack func(t *testing.T, w *journalWorld, owner *journal.FileJournal) error
	closed bool
	want   error // what the error must match; nil: no error
	// undo puts the world back so that the owner can reopen the journal.
	undo func(t *testing.T, w *journalWorld)
}

func journalAttacks() []journalAttack {
	openVia := func(p func(w *journalWorld) string) func(*testing.T, *journalWorld, *journal.FileJournal) error {
		return func(t *testing.T, w *journalWorld, _ *journal.FileJournal) error {
			j, err := journal.OpenFile(p(w))
			if err == nil {
				j.Close()
			}
			return err
		}
	}
	chmod := func(name func(w *journalWorld) string, mode os.FileMode) func(*testing.T, *journalWorld) {
		return func(t *testing.T, w *journalWorld) {
			if err := os.Chmod(name(w), mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	chown := func(name func(w *journalWorld) string, uid int) func(*testing.T, *journalWorld) {
		return func(t *testing.T, w *journalWorld) {
			if err := os.Chown(name(w), uid, -1); err != nil {
				t.Fatal(err)
			}
		}
	}
	then := func(setup func(*testing.T, *journalWorld), do func(*testing.T, *journalWorld, *journal.FileJournal) error) func(*testing.T, *journalWorld, *journal.FileJournal) error {
		return func(t *testing.T, w *journalWorld, j *journal.FileJournal) error {
			setup(t, w)
			return do(t, w, j)
		}
	}
	dir := func(w *journalWorld) string { return w.dir }
	base := func(w *journalWorld) string { return w.base }
	file := func(w *journalWorld) string { return w.path }
	other := func(w *journalWorld) string { return filepath.Join(w.dir, "other.journal") }
	fixed := time.Date(2031, 2, 3, 4, 5, 6, 7, time.UTC)

	return []journalAttack{
		// A second owner, by every path to the same file.
		{name: "second owner by every path", why: "two owners each accept ticket-1 and interleave their writes",
			attack: func(t *testing.T, w *journalWorld, _ *journal.FileJournal) error {
				w.secondOwner(t, "open")
				return journal.ErrLocked
			}, want: journal.ErrLocked},
		{name: "second owner through a hard link", why: "a second name is a second lock file, but the same file",
			attack: func(t *testing.T, w *journalWorld, owner *journal.FileJournal) error {
				hard := filepath.Join(w.dir, "hard.journal")
				if err := os.Link(w.path, hard); err != nil {
					t.Fatal(err)
				}
				if err := owner.Compact(context.Background()); !errors.Is(err, journal.ErrUnsafePath) {
					t.Errorf("Compact with a hard link = %v, want ErrUnsafePath: the link would keep a stale copy", err)
				}
				_, err := journal.OpenFile(hard)
				return err
			}, want: journal.ErrLocked,
			undo: func(t *testing.T, w *journalWorld) {
				if _, err := journal.OpenFile(w.path); !errors.Is(err, journal.ErrUnsafePath) {
					t.Errorf("OpenFile of a journal with two names = %v, want ErrUnsafePath", err)
				}
				os.Remove(filepath.Join(w.dir, "hard.journal"))
			}},
		{name: "second owner at the name it was moved to", why: "a rename keeps the file, and the first owner writes on",
			attack: func(t *testing.T, w *journalWorld, owner *journal.FileJournal) error {
				moved := filepath.Join(w.dir, "moved.journal")
				if err := os.Rename(w.path, moved); err != nil {
					t.Fatal(err)
				}
				if err := owner.Compact(context.Background()); !errors.Is(err, journal.ErrUnsafePath) {
					t.Errorf("Compact of a moved journal = %v, want ErrUnsafePath: it would start a second journal at the old name", err)
				}
				_, err := journal.OpenFile(moved)
				return err
			}, want: journal.ErrLocked,
			undo: func(t *testing.T, w *journalWorld) {
				if err := os.Rename(filepath.Join(w.dir, "moved.journal"), w.path); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "second owner while the first compacts", why: "compaction swaps the file under the name",
			attack: func(t *testing.T, w *journalWorld, owner *journal.FileJournal) error {
				done := make(chan error, 1)
				go func() {
					for range sized(30, 300) {
						if err := owner.Compact(context.Background()); err != nil {
							done <- err
							return
						}
					}
					done <- nil
				}()
				for {
					select {
					case err := <-done:
						if err != nil {
							t.Errorf("Compact: %v", err)
						}
						w.secondOwner(t, "after the compactions")
						return journal.ErrLocked
					default:
						w.secondOwner(t, "during the compactions")
					}
				}
			}, want: journal.ErrLocked},
		{name: "second owner in another process", why: "locks must hold between processes, across the child's compactions",
			closed: true,
			attack: func(t *testing.T, w *journalWorld, _ *journal.FileJournal) error {
				runJournalChild(t, w)
				return journal.ErrLocked
			}, want: journal.ErrLocked},

		// Links planted at the names the journal creates.
		{name: "link planted at the compaction's name", why: "compaction would write the journal into the victim",
			attack: func(t *testing.T, w *journalWorld, owner *journal.FileJournal) error {
				for _, target := range []string{w.victim, w.created} {
					os.Remove(w.path + ".compact")
					if err := os.Symlink(target, w.path+".compact"); err != nil {
						t.Fatal(err)
					}
					if err := owner.Compact(context.Background()); err != nil {
						return err
					}
				}
				return nil
			}},
		{name: "link planted at the lock's name", why: "the lock would be created, or taken, where the link leads",
			closed: true,
			attack: then(func(t *testing.T, w *journalWorld) {
				os.Remove(w.path + ".lock")
				if err := os.Symlink(w.created, w.path+".lock"); err != nil {
					t.Fatal(err)
				}
			}, openVia(file)), want: journal.ErrUnsafePath,
			undo: func(t *testing.T, w *journalWorld) { os.Remove(w.path + ".lock") }},
		{name: "link planted at the repair's backup name", why: "the backup would overwrite the victim",
			closed: true,
			attack: func(t *testing.T, w *journalWorld, _ *journal.FileJournal) error {
				f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.Write(bytes.Repeat([]byte{0xA5}, 40)) // a torn tail: damage RepairFile acts on
				f.Close()
				backup := w.path + ".damaged-" + fixed.Format("20060102T150405.000000000Z")
				if err := os.Symlink(w.victim, backup); err != nil {
					t.Fatal(err)
				}
				_, err = journal.RepairFile(context.Background(), w.path, journal.WithClock(func() time.Time { return fixed }))
				return err
			}, want: fs.ErrExist,
			undo: func(t *testing.T, w *journalWorld) {
				os.Remove(w.path + ".damaged-" + fixed.Format("20060102T150405.000000000Z"))
				if rep, err := journal.RepairFile(context.Background(), w.path); err != nil || !rep.Repaired {
					t.Fatalf("RepairFile once the link is gone: %+v %v", rep, err)
				}
			}},
		{name: "dangling link at a journal's name", why: "creating the journal would create a file where the link leads",
			closed: true,
			attack: then(func(t *testing.T, w *journalWorld) {
				if err := os.Symlink(w.created, other(w)); err != nil {
					t.Fatal(err)
				}
			}, openVia(other)), want: journal.ErrUnsafePath},
		{name: "fifo at a journal's name", why: "opening it could block, and it is no file to trust",
			closed: true,
			attack: then(func(t *testing.T, w *journalWorld) {
				if err := syscall.Mkfifo(other(w), 0o600); err != nil {
					t.Fatal(err)
				}
			}, openVia(other)), want: journal.ErrUnsafePath},

		// Directories and files others could change.
		{name: "world-writable directory", why: "anyone could rename the journal away and put their own in its place",
			closed: true, attack: then(chmod(dir, 0o777), openVia(file)), want: journal.ErrUnsafePath, undo: chmod(dir, 0o700)},
		{name: "group-writable directory above", why: "the group's members could swap the journal's directory", root: true,
			closed: true, attack: then(func(t *testing.T, w *journalWorld) {
				chmod(base, 0o770)(t, w)
				// Not root's own group, which has no other member.
				if err := os.Chown(w.base, -1, 65534); err != nil {
					t.Fatal(err)
				}
			}, openVia(file)), want: journal.ErrUnsafePath, undo: chmod(base, 0o700)},
		{name: "another user's directory", why: "its owner can rename what is in it, whatever the mode", root: true,
			closed: true, attack: then(chown(dir, 65534), openVia(file)), want: journal.ErrUnsafePath, undo: chown(dir, os.Geteuid())},
		{name: "journal writable by others", why: "anyone could write records",
			closed: true, attack: then(chmod(file, 0o666), openVia(file)), want: journal.ErrUnsafePath, undo: chmod(file, 0o600)},
		{name: "another user's journal", why: "its owner could write records", root: true,
			closed: true, attack: then(chown(file, 65534), openVia(file)), want: journal.ErrUnsafePath, undo: chown(file, os.Geteuid())},
	}
}

// TestHostileJournalFile attacks a file journal from the file system, as
// another user or a careless operator could: a second owner by every path
// that reaches the file, in this process and another, while the first
// compacts; links planted at the names the journal creates; directories and
// files others could change. Each attack must be refused with a clear error
// (ErrLocked, ErrUnsafePath) or seen through, nothing it aimed at may
// change, and every acknowledged record must be in the journal afterwards,
// with its one-shot key spent once.
func TestHostileJournalFile(t *testing.T) {
	fig := newFigures(t)
	root := os.Geteuid() == 0
	for _, c := range journalAttacks() {
		t.Run(c.name, func(t *testing.T) {
			if c.root && !root {
				t.Skip("needs root to give files away")
			}
			fig.add("journal_attacks", 1)
			w := newJournalWorld(t)
			var owner *journal.FileJournal
			if !c.closed {
				owner = w.open(t)
				defer owner.Close()
			}
			err := c.attack(t, w, owner)
			switch {
			case c.want == nil && err != nil:
				t.Errorf("%v (the attack should have been seen through: %s)", err, c.why)
			case c.want != nil && !errors.Is(err, c.want):
				t.Errorf("got %v, want %v (%s)", err, c.want, c.why)
			}
			if owner != nil {
				// The owner carries on as if nothing happened.
				w.ack(t, owner, "op-2", "ticket-2")
				if err := owner.Close(); err != nil {
					t.Errorf("owner's Close: %v", err)
				}
			}
			if c.undo != nil {
				c.undo(t, w)
			}
			w.check(t)
			fig.add("second_owners_refused", w.refused)
			fig.add("second_owners_allowed", w.allowed)
		})
	}
}

const journalChildEnv = "GUESTWARD_GAUNTLET_JOURNAL_CHILD"

// runJournalChild starts TestHostileJournalFileChild holding the journal
// (opened through a linked directory), which acknowledges op-2 and then
// compacts on request, and tries every path to the journal from here
// before and after each compaction.
func runJournalChild(t *testing.T, w *journalWorld) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHostileJournalFileChild$", "-test.count=1", "-test.v=false")
	cmd.Env = append(os.Environ(), journalChildEnv+"="+w.alias["a linked directory"])
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
	defer func() {
		stdin.Close()
		io.Copy(io.Discard, stdout)
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v\n%s", err, stderr.String())
		}
	}()
	lines := bufio.NewScanner(stdout)
	var said strings.Builder
	expect := func(want string) bool {
		for lines.Scan() {
			if lines.Text() == want {
				return true
			}
			said.WriteString(lines.Text() + "\n")
		}
		t.Errorf("the child never said %q:\n%s%s", want, said.String(), stderr.String())
		return false
	}
	if !expect("open") {
		return
	}
	w.acked = append(w.acked, "op-2")
	w.secondOwner(t, "held by another process")
	for i := range sized(5, 50) {
		fmt.Fprintln(stdin, "compact")
		if !expect("compacted") {
			return
		}
		w.secondOwner(t, fmt.Sprintf("after the other process's compaction %d", i))
	}
}

// TestHostileJournalFileChild is the child of the "second owner in another
// process" attack; run directly, it skips.
func TestHostileJournalFileChild(t *testing.T) {
	path := os.Getenv(journalChildEnv)
	if path == "" {
		t.Skip("runs only as a child of TestHostileJournalFile")
	}
	j, err := journal.OpenFile(path, journal.WithCompactThreshold(0), journal.WithRetention(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ctx := context.Background()
	for _, e := range []journal.Entry{
		{OpID: "op-2", VMID: 100, Kind: "start", State: journal.Started, IdempKey: "ticket-2"},
		{OpID: "op-2", State: journal.Succeeded},
	} {
		if err := j.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("open")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if err := j.Compact(ctx); err != nil {
			t.Fatal(err)
		}
		fmt.Println("compacted")
	}
}
