package journal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/internal/fsx/fsxtest"
)

// These tests simulate power loss with fsxtest.FS: they run a workload, cut
// the power after every one of its disk operations in turn, and then boot
// the disk in every way the model allows (unsynced data lost or kept, name
// changes lost or kept, the last write torn short or with sectors missing).
// Each time the journal must open, hold every acknowledged record, and show
// the state after some prefix of what was attempted: nothing half-written.

const crashPath = "/data/ops.journal"

// withFSSmall makes the journal write through the simulated disk fs, with a
// small preallocation step: simulated disks stay small, and the file grows
// (a crash point of its own) many times.
func withFSSmall(fs *fsxtest.FS) FileOption {
	return fileOptionFunc(func(c *fileConfig) {
		c.fs = fs
		c.prealloc = 256
	})
}

var crashT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// step is one event of a workload.
type step struct {
	e       *Entry
	compact bool
	reopen  bool
}

func rec(e Entry) step { return step{e: &e} }

// crashWorkload interleaves the lifecycles of several ops, with keys,
// params, failures, explicit compactions and a reopen.
func crashWorkload() []step {
	at := func(i int) time.Time { return crashT0.Add(time.Duration(i) * time.Second) }
	var steps []step
	n := 0
	add := func(e Entry) {
		n++
		e.At = at(n)
		steps = append(steps, rec(e))
	}
	add(Entry{OpID: "op1", VMID: 101, Kind: "start", State: Started, IdempKey: "key-1"})
	add(Entry{OpID: "op2", VMID: 102, Kind: "set_config", State: Started, Params: map[string]string{"memory": "4096", "cores": "4"}})
	add(Entry{OpID: "op1", State: TaskRunning, UPID: "UPID:pve:0001:01:start:101:root@pam:"})
	add(Entry{OpID: "op3", VMID: 103, Kind: "stop", State: Started, IdempKey: "key-3"})
	add(Entry{OpID: "op1", State: Succeeded})
	add(Entry{OpID: "op3", State: Failed, Error: "VM is locked (backup)"})
	steps = append(steps, step{compact: true})
	add(Entry{OpID: "op2", State: Succeeded})
	add(Entry{OpID: "op4", VMID: 104, Kind: "set_config", State: Started, IdempKey: "key-4", Params: map[string]string{"description": strings.Repeat("long text ", 40)}})
	add(Entry{OpID: "op4", State: TaskRunning, UPID: "UPID:pve:0002:02:qmconfig:104:root@pam:"})
	steps = append(steps, step{reopen: true})
	add(Entry{OpID: "op4", State: TaskRunning, UPID: "UPID:pve:0003:03:qmconfig:104:root@pam:"})
	add(Entry{OpID: "op5", VMID: 105, Kind: "start", State: Started})
	steps = append(steps, step{compact: true})
	add(Entry{OpID: "op4", State: Succeeded})
	add(Entry{OpID: "op6", VMID: 106, Kind: "stop", State: Started, IdempKey: "key-6"})
	add(Entry{OpID: "op5", State: Failed, Error: "timeout"})
	add(Entry{OpID: "op6", State: TaskRunning, UPID: "UPID:pve:0004:04:stop:106:root@pam:"})
	add(Entry{OpID: "op7", VMID: 107, Kind: "start", State: Started})
	steps = append(steps, step{compact: true})
	add(Entry{OpID: "op6", State: Succeeded})
	add(Entry{OpID: "op8", VMID: 108, Kind: "start", State: Started})
	return steps
}

// crashModel computes the state after each prefix of steps, the way the
// journal defines it, using the index directly.
func crashModel(t *testing.T, steps []step, ret retention, now time.Time) []string {
	t.Helper()
	x := newIndex()
	var seq uint64
	states := []string{dumpIndex(x)}
	for i, s := range steps {
		switch {
		case s.e != nil:
			seq++
			e := s.e.Clone()
			if err := x.replay(&e, encodeParams(e.Params), false, seq); err != nil {
				t.Fatalf("workload step %d is invalid: %v", i, err)
			}
		case s.compact:
			for id, st := range x.ops {
				if !ret.keep(&st.e, now) {
					x.remove(id)
				}
			}
		}
		states = append(states, dumpIndex(x))
	}
	return states
}

// dumpIndex renders everything observable about an index.
func dumpIndex(x *index) string {
	var b strings.Builder
	for _, e := range x.all() {
		fmt.Fprintf(&b, "%+v\n", e)
	}
	b.WriteString("inflight:")
	for _, e := range x.inFlight() {
		b.WriteString(" " + e.OpID)
	}
	b.WriteString("\nkeys:")
	keys := make([]string, 0, len(x.keys))
	for k, v := range x.keys {
		keys = append(keys, k+"="+v)
	}
	slices.Sort(keys)
	b.WriteString(strings.Join(keys, " "))
	return b.String()
}

func dumpJournal(j *FileJournal) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return dumpIndex(j.idx)
}

// runSteps runs steps against a journal on fs until one fails, and returns
// how many succeeded and how many were attempted.
func runSteps(t *testing.T, fs *fsxtest.FS, opts []FileOption, steps []step) (acked, attempted int) {
	t.Helper()
	ctx := context.Background()
	opts = append(slices.Clip(opts), withFSSmall(fs))
	j, err := OpenFile(crashPath, opts...)
	if err != nil {
		return 0, 0
	}
	defer func() {
		if j != nil {
			j.Close()
		}
	}()
	for i, s := range steps {
		attempted = i + 1
		switch {
		case s.e != nil:
			err = j.Append(ctx, *s.e)
		case s.compact:
			err = j.Compact(ctx)
		case s.reopen:
			j.Close()
			j, err = OpenFile(crashPath, opts...)
		}
		if err != nil {
			return acked, attempted
		}
		acked = i + 1
	}
	return acked, attempted
}

type crashVariant struct {
	name string
	c    fsxtest.Crash
}

func crashVariants() []crashVariant {
	garbage := func(b []byte) []byte {
		// The middle of the write holds old, unrelated bytes.
		for i := len(b) / 3; i < 2*len(b)/3; i++ {
			b[i] = byte(0xA5 ^ i)
		}
		return b
	}
	vs := []crashVariant{
		{"only synced data", fsxtest.Crash{}},
		{"everything written", fsxtest.Crash{DirOps: -1, FileOps: -1}},
		{"data kept, name changes lost", fsxtest.Crash{DirOps: 0, FileOps: -1}},
		{"first name change kept", fsxtest.Crash{DirOps: 1, FileOps: -1}},
		{"names kept, data lost", fsxtest.Crash{DirOps: -1, FileOps: 0}},
		{"first file op kept", fsxtest.Crash{DirOps: -1, FileOps: 1}},
		{"lost first sector", fsxtest.Crash{DirOps: -1, FileOps: -1, Tear: fsxtest.TearSectors(func(i int) bool { return i == 0 })}},
		{"kept only first sector", fsxtest.Crash{DirOps: -1, FileOps: -1, Tear: fsxtest.TearSectors(func(i int) bool { return i > 0 })}},
		{"garbage in the middle", fsxtest.Crash{DirOps: -1, FileOps: -1, Tear: garbage}},
	}
	for _, n := range []int{1, 4, 8, 15, 16, 17, 24, 40, 100, 600} {
		vs = append(vs, crashVariant{fmt.Sprintf("torn after %d bytes", n), fsxtest.Crash{DirOps: -1, FileOps: -1, Tear: fsxtest.TearPrefix(n)}})
	}
	return vs
}

// checkRecovered opens the journal on a rebooted disk and checks its state
// is one of want, then that it still works: it accepts a record, and the
// state survives another reopen.
func checkRecovered(t *testing.T, disk *fsxtest.FS, opts []FileOption, want []string, what func() string) {
	t.Helper()
	opts = append(slices.Clip(opts), withFSSmall(disk))
	j, err := OpenFile(crashPath, opts...)
	if err != nil {
		t.Fatalf("%s: open after crash: %v", what(), err)
	}
	got := dumpJournal(j)
	if !slices.Contains(want, got) {
		t.Fatalf("%s: recovered state is not the state after any allowed prefix of the workload.\ngot:\n%s\nallowed:\n%s",
			what(), got, strings.Join(want, "\n----\n"))
	}
	if st := j.Stats(); st.Err != nil {
		t.Fatalf("%s: journal broken after recovery: %v", what(), st.Err)
	}
	data, err := disk.ReadFile(crashPath)
	size := j.Stats().Size
	if err != nil || int64(len(data)) < size || slices.ContainsFunc(data[size:], func(b byte) bool { return b != 0 }) {
		t.Fatalf("%s: file holds %d bytes (%v), journal thinks %d, and what follows must be zeros", what(), len(data), err, size)
	}
	if err := j.Append(context.Background(), Entry{OpID: "after-crash", VMID: 1, Kind: "start", State: Started, At: crashT0}); err != nil {
		t.Fatalf("%s: append after recovery: %v", what(), err)
	}
	after := dumpJournal(j)
	if err := j.Close(); err != nil {
		t.Fatalf("%s: close: %v", what(), err)
	}
	j, err = OpenFile(crashPath, opts...)
	if err != nil {
		t.Fatalf("%s: second open after crash: %v", what(), err)
	}
	defer j.Close()
	if again := dumpJournal(j); again != after {
		t.Fatalf("%s: state changed across a clean reopen after recovery:\nbefore:\n%s\nafter:\n%s", what(), after, again)
	}
}

// crashAtEveryPoint returns how many compactions the workload ran.
func crashAtEveryPoint(t *testing.T, steps []step, opts []FileOption, ret retention, now time.Time) int {
	states := crashModel(t, steps, ret, now)
	dry := fsxtest.New()
	if acked, attempted := runSteps(t, dry, opts, steps); acked != len(steps) {
		t.Fatalf("dry run: only %d of %d steps succeeded (attempted %d); trace:\n%s", acked, len(steps), attempted, strings.Join(dry.Trace(), "\n"))
	}
	total := dry.Ops()
	compactions := 0
	for _, op := range dry.Trace() {
		if strings.HasPrefix(op, "rename "+crashPath+compactSuffix) {
			compactions++
		}
	}
	explicit := 0
	for _, s := range steps {
		if s.compact {
			explicit++
		}
	}
	if compactions < explicit {
		t.Fatalf("dry run compacted %d times, want at least the %d explicit compactions", compactions, explicit)
	}
	variants := crashVariants()
	missed := 0
	for k := 0; k <= total; k++ {
		fs := fsxtest.New()
		fs.CrashAfter(k)
		acked, attempted := runSteps(t, fs, opts, steps)
		if k < total && !fs.Crashed() {
			// This run did less disk work than the dry run: an
			// explicit Compact queued while the journal was about
			// to compact by itself makes that compaction
			// unnecessary. The run completed; its state is checked
			// all the same.
			missed++
		}
		want := states[acked : attempted+1]
		for _, v := range variants {
			checkRecovered(t, fs.Recover(v.c), opts, want, func() string {
				trace := fs.Trace()
				last := "(none)"
				if len(trace) > 0 {
					last = trace[len(trace)-1]
				}
				return fmt.Sprintf("crash after %d of %d disk ops (last: %s), boot %q, %d steps acknowledged", k, total, last, v.name, acked)
			})
		}
	}
	if missed*10 > total {
		t.Fatalf("%d of %d crash points were never reached", missed, total)
	}
	t.Logf("%d crash points (%d compactions) × %d ways to boot", total+1, compactions, len(variants))
	return compactions
}

func TestCrashEveryPoint(t *testing.T) {
	now := crashT0.Add(time.Hour)
	ret := retention{ops: -1, keys: -1}
	opts := []FileOption{
		WithClock(func() time.Time { return now }),
		WithRetention(-1),
		// Small enough that the journal also compacts itself between
		// appends, several times over the workload.
		WithCompactThreshold(400),
	}
	if n := crashAtEveryPoint(t, crashWorkload(), opts, ret, now); n <= 3 {
		t.Fatalf("%d compactions: the journal never compacted by itself", n)
	}
}

// With retention zero each compaction drops the terminal ops (except the
// succeeded ones holding a key): after a crash, an op is either dropped
// together with all the others of that compaction, or not at all.
func TestCrashEveryPointCompactionDrops(t *testing.T) {
	now := crashT0.Add(time.Hour)
	ret := retention{ops: 0, keys: -1}
	opts := []FileOption{
		WithClock(func() time.Time { return now }),
		WithRetention(0),
		WithCompactThreshold(0),
	}
	crashAtEveryPoint(t, crashWorkload(), opts, ret, now)
}

// A crash while the journal recovers from a crash must not lose anything
// either: recovery only truncates a torn tail, so the state after the second
// crash must equal the state the first recovery saw.
func TestCrashDuringRecovery(t *testing.T) {
	now := crashT0.Add(time.Hour)
	opts := []FileOption{WithClock(func() time.Time { return now }), WithCompactThreshold(0)}
	steps := crashWorkload()
	dry := fsxtest.New()
	runSteps(t, dry, opts, steps)
	total := dry.Ops()
	tested := 0
	for k := 1; k <= total; k++ {
		fs := fsxtest.New()
		fs.CrashAfter(k)
		runSteps(t, fs, opts, steps)
		for _, v := range crashVariants() {
			image := fs.Recover(v.c)
			// What a clean recovery shows, and how many disk ops it takes.
			probe := image.Recover(fsxtest.Crash{DirOps: -1, FileOps: -1})
			j, err := OpenFile(crashPath, append(slices.Clip(opts), withFSSmall(probe))...)
			if err != nil {
				t.Fatalf("crash %d, boot %q: open: %v", k, v.name, err)
			}
			want := dumpJournal(j)
			j.Close()
			n := probe.Ops()
			if n == 0 {
				continue // nothing to repair, nothing to interrupt
			}
			tested++
			for r := 0; r < n; r++ {
				second := image.Recover(fsxtest.Crash{DirOps: -1, FileOps: -1})
				second.CrashAfter(r)
				if j, err := OpenFile(crashPath, append(slices.Clip(opts), withFSSmall(second))...); err == nil {
					j.Close()
				}
				for _, v2 := range []crashVariant{{"only synced", fsxtest.Crash{}}, {"everything", fsxtest.Crash{DirOps: -1, FileOps: -1}}} {
					checkRecovered(t, second.Recover(v2.c), opts, []string{want}, func() string {
						return fmt.Sprintf("crash %d, boot %q, then crash %d of %d during recovery, boot %q", k, v.name, r, n, v2.name)
					})
				}
			}
		}
	}
	if tested == 0 {
		t.Fatal("no crash image needed recovery work; the test exercised nothing")
	}
	t.Logf("%d crash images whose recovery was interrupted at every point", tested)
}

// A batch of many records written in one write and torn by the crash in any
// pattern of sectors: the journal keeps the intact prefix of the batch and
// never reports the damage as corruption, since nothing in the batch was
// acknowledged.
func TestCrashTornBatch(t *testing.T) {
	const k = 24
	fs := fsxtest.New()
	fp := new(failpoint.Set)
	opts := []FileOption{withFSSmall(fs), withFailpoints(fp), WithCompactThreshold(0)}
	j, err := OpenFile(crashPath, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		if err := j.Append(ctx, Entry{OpID: fmt.Sprint("pre", i), VMID: 100, Kind: "start", State: Started, At: crashT0}); err != nil {
			t.Fatal(err)
		}
	}
	acked := dumpJournal(j)

	// Hold the writer before it writes a one-record batch, queue k more
	// appends behind it, then let it go: they form one batch of k.
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fp.Enable("append/before-write", func() error {
		once.Do(func() { close(arrived); <-release })
		return nil
	})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		j.Append(ctx, Entry{OpID: "first", VMID: 100, Kind: "start", State: Started, At: crashT0})
	}()
	<-arrived
	queued := make(chan struct{}, k)
	fp.Enable("append/queued", func() error { queued <- struct{}{}; return nil })
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := Entry{OpID: fmt.Sprintf("batch-%02d", i), VMID: 200 + i, Kind: "set_config", State: Started,
				Params: map[string]string{"net0": "virtio,bridge=vmbr0", "i": fmt.Sprint(i)}, At: crashT0}
			j.Append(ctx, e)
		}()
	}
	for range k {
		<-queued
	}
	// The power goes just before the big batch's sync: the held batch is
	// written and synced, the big one only written.
	var syncs atomic.Int32
	fp.Enable("append/before-sync", func() error {
		if syncs.Add(1) == 2 {
			fs.CrashAfter(fs.Ops())
		}
		return nil
	})
	close(release)
	wg.Wait()
	j.Close()
	if !fs.Crashed() {
		t.Fatal("the crash point was not reached")
	}
	// The big batch is in the live file, in the order the journal wrote it.
	whole := fs.Recover(fsxtest.Crash{DirOps: -1, FileOps: -1})
	var order []string
	if _, err := ScanFile(ctx, crashPath, func(r Record) error {
		order = append(order, r.Entry.OpID)
		return nil
	}, withFSSmall(whole)); err != nil {
		t.Fatal(err)
	}
	if len(order) != 3+1+k {
		t.Fatalf("live file holds %d records, want %d", len(order), 3+1+k)
	}
	batch := order[4:]
	// Allowed states: the acknowledged ones, plus any prefix of the batch.
	x := newIndex()
	var seq uint64
	var want []string
	for _, id := range order {
		seq++
		e := Entry{OpID: id, VMID: 100, Kind: "start", State: Started, At: crashT0}
		if strings.HasPrefix(id, "batch-") {
			var i int
			fmt.Sscanf(id, "batch-%d", &i)
			e = Entry{OpID: id, VMID: 200 + i, Kind: "set_config", State: Started,
				Params: map[string]string{"net0": "virtio,bridge=vmbr0", "i": fmt.Sprint(i)}, At: crashT0}
		}
		if err := x.replay(&e, encodeParams(e.Params), false, seq); err != nil {
			t.Fatal(err)
		}
		if id == "first" || strings.HasPrefix(id, "batch-") {
			want = append(want, dumpIndex(x))
		}
	}
	if !strings.Contains(want[0], "first") || !strings.Contains(acked, "pre2") {
		t.Fatal("model is off")
	}
	batchBytes := len(batch) * 80 // lower bound, enough to span several sectors
	if batchBytes < 3*fsxtest.SectorSize {
		t.Fatalf("batch of %d records is too small to tear across sectors", len(batch))
	}
	var variants []crashVariant
	for lost := 0; lost < 6; lost++ {
		variants = append(variants,
			crashVariant{fmt.Sprintf("sector %d lost", lost), fsxtest.Crash{DirOps: -1, FileOps: -1, Tear: fsxtest.TearSectors(func(i int) bool { return i == lost })}},
			crashVariant{fmt.Sprintf("sectors from %d lost", lost), fsxtest.Crash{DirOps: -1, FileOps: -1, Tear: fsxtest.TearSectors(func(i int) bool { return i >= lost })}},
			crashVariant{fmt.Sprintf("every sector but %d lost", lost), fsxtest.Crash{DirOps: -1, FileOps: -1, Tear: fsxtest.TearSectors(func(i int) bool { return i != lost })}},
		)
	}
	for n := 0; n < 4*fsxtest.SectorSize; n += 37 {
		variants = append(variants, crashVariant{fmt.Sprintf("torn after %d bytes", n), fsxtest.Crash{DirOps: -1, FileOps: -1, Tear: fsxtest.TearPrefix(n)}})
	}
	variants = append(variants, crashVariant{"batch lost", fsxtest.Crash{DirOps: -1, FileOps: 0}},
		crashVariant{"batch whole", fsxtest.Crash{DirOps: -1, FileOps: -1}})
	prefixes := map[int]bool{}
	for _, v := range variants {
		disk := fs.Recover(v.c)
		checkRecovered(t, disk, nil, want, func() string { return "torn batch, boot " + v.name })
		j, err := OpenFile(crashPath, withFSSmall(fs.Recover(v.c)))
		if err != nil {
			t.Fatal(err)
		}
		prefixes[slices.Index(want, dumpJournal(j))] = true
		j.Close()
	}
	// The variants must actually produce different outcomes.
	if len(prefixes) < 5 {
		t.Fatalf("only %d distinct recovered prefixes; the tears are not exercising the batch", len(prefixes))
	}
}

// Damage before the tail is never skipped: a flipped byte in an
// acknowledged record fails Open with ErrCorrupt and its offset, whatever
// record it hits; RepairFile then keeps a copy and cuts the journal there.
func TestCorruptionBeforeTailIsReported(t *testing.T) {
	fs := fsxtest.New()
	ctx := context.Background()
	j, err := OpenFile(crashPath, withFSSmall(fs))
	if err != nil {
		t.Fatal(err)
	}
	var offsets []int64
	for i := range 6 {
		if err := j.Append(ctx, Entry{OpID: fmt.Sprint("op", i), VMID: 100 + i, Kind: "start", State: Started, At: crashT0}); err != nil {
			t.Fatal(err)
		}
		offsets = append(offsets, j.Stats().Size)
	}
	j.Close()
	clean, _ := fs.ReadFile(crashPath)
	recStart := append([]int64{fileHeaderSize}, offsets[:len(offsets)-1]...)
	for r, start := range recStart[:len(recStart)-1] { // every record but the last
		end := offsets[r]
		for pos := start; pos < end; pos++ {
			bad := slices.Clone(clean)
			bad[pos] ^= 0x40
			disk := fsxtest.New()
			disk.WriteFile(crashPath, bad, 0o600)
			_, err := OpenFile(crashPath, withFSSmall(disk))
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || ce.Offset != start {
				t.Fatalf("byte %d of record %d flipped: Open = %v, want ErrCorrupt at offset %d", pos, r, err, start)
			}
			if got, _ := disk.ReadFile(crashPath); !slices.Equal(got, bad) {
				t.Fatalf("a failed Open changed the file")
			}
		}
	}
	// Repair: keep a copy, cut at the damaged record, then open works
	// with the records before it.
	bad := slices.Clone(clean)
	bad[recStart[2]+20] ^= 1
	disk := fsxtest.New()
	disk.WriteFile(crashPath, bad, 0o600)
	rep, err := RepairFile(ctx, crashPath, withFSSmall(disk), WithClock(func() time.Time { return crashT0 }))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Repaired || rep.Offset != recStart[2] || rep.DroppedBytes != int64(len(bad))-recStart[2] {
		t.Fatalf("repair report = %+v", rep)
	}
	if backup, err := disk.ReadFile(rep.Backup); err != nil || !slices.Equal(backup, bad) {
		t.Fatalf("backup %s missing or different: %v", rep.Backup, err)
	}
	j, err = OpenFile(crashPath, withFSSmall(disk))
	if err != nil {
		t.Fatalf("open after repair: %v", err)
	}
	ops, _ := j.Ops(ctx)
	if len(ops) != 2 || ops[0].OpID != "op0" || ops[1].OpID != "op1" {
		t.Fatalf("after repair, ops = %v, want op0 and op1", ops)
	}
	j.Close()
	// A repaired journal is left alone by a second repair.
	if rep, err := RepairFile(ctx, crashPath, withFSSmall(disk)); err != nil || rep.Repaired {
		t.Fatalf("second repair = %+v, %v; want nothing to do", rep, err)
	}
}
