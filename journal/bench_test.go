package journal

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/fsx"
)

// The benchmarks compare the journal with the physical limit it works
// against, measured in the same run and interleaved round by round, because
// a disk's sync rate drifts by up to 2x within minutes:
//
//   - BenchmarkAppend/serial against a bare loop that appends a record of
//     the same size and syncs it (the same fdatasync the journal uses):
//     x-bare; and against one that overwrites preallocated space instead,
//     which is what the journal's writes are: x-bare-overwrite;
//   - BenchmarkAppend/writers=8 and writers=64 against the same bare serial
//     loops: group commit lets many writers share one sync;
//   - BenchmarkReplay: opening a journal of many records against reading the
//     same records as JSON lines with one json.Unmarshal per line.
//
// Each reports records/s for both sides and the median of the per-round
// ratios (x-bare, x-bare-overwrite, x-jsonl), and BenchmarkAppend the
// records per sync.
// The replay fixture has -replay.records records (default 100000 so that
// CI's one-iteration run stays cheap); the figure is for 1,000,000:
//
//	go test -run '^$' -bench Replay -benchtime 3x ./journal -replay.records=1000000

var replayRecords = flag.Int("replay.records", 100_000, "records in the BenchmarkReplay fixture (the target is stated for 1000000)")

// benchEntry is the started record of op i: a config change of one of 500
// guests, with parameters that vary per guest (the NIC's MAC address) so
// that records do not share their parameters.
func benchEntry(i int) Entry {
	vmid := 100 + i%500
	return Entry{
		OpID: fmt.Sprintf("op-%08d", i), VMID: vmid, Kind: "set_config", State: Started,
		Params: map[string]string{
			"memory": fmt.Sprint(1024 << (i % 4)),
			"cores":  fmt.Sprint(1 + i%8),
			"net0":   fmt.Sprintf("virtio=BC:24:11:%02X:%02X:%02X,bridge=vmbr0,firewall=1", vmid>>8, vmid&0xff, i%7),
		},
		IdempKey: fmt.Sprintf("req-%08d", i),
	}
}

// frameSize is the size of the record the journal writes for e.
func frameSize(e Entry) int {
	e.At = time.Unix(1700000000, 0).UTC()
	return len(appendFrame(nil, kindRecord, &e))
}

// bareLoop writes records of size bytes to its own file, one write and one
// fdatasync each. Appending (the baseline: the rate a durable
// journal cannot beat by sharing nothing) grows the file with every write;
// overwriting writes into space zeroed beforehand, as the journal's
// preallocation does, which on ext4 makes each sync cheaper. Reporting both
// shows how much of the journal's rate comes from sharing syncs and how
// much from the cheaper kind of sync.
type bareLoop struct {
	f         *os.File
	rec       []byte
	overwrite bool
	off       int64
}

func newBareLoop(b *testing.B, dir, name string, size int, overwrite bool) *bareLoop {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	rec := make([]byte, size)
	for i := range rec {
		rec[i] = byte(i)
	}
	return &bareLoop{f: f, rec: rec, overwrite: overwrite}
}

func (l *bareLoop) run(b *testing.B, n int) time.Duration {
	if l.overwrite {
		// Zero the space first, untimed, as preallocation does ahead
		// of the writes.
		zeros := make([]byte, n*len(l.rec))
		if _, err := l.f.WriteAt(zeros, l.off); err != nil {
			b.Fatal(err)
		}
		if err := fsx.DataSync(l.f); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	for range n {
		if _, err := l.f.WriteAt(l.rec, l.off); err != nil {
			b.Fatal(err)
		}
		l.off += int64(len(l.rec))
		if err := fsx.DataSync(l.f); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// parallel runs n calls of fn spread over w goroutines, each taking the
// next index until all are done.
func parallel(w, n int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var first atomic.Pointer[error]
	for range min(w, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		return *p
	}
	return nil
}

func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		name := "serial"
		if writers > 1 {
			name = fmt.Sprintf("writers=%d", writers)
		}
		b.Run(name, func(b *testing.B) { benchAppend(b, writers) })
	}
}

func benchAppend(b *testing.B, writers int) {
	dir := b.TempDir()
	j, err := OpenFile(filepath.Join(dir, "ops.journal"), WithCompactThreshold(0))
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	bare := newBareLoop(b, dir, "bare-append", frameSize(benchEntry(0)), false)
	over := newBareLoop(b, dir, "bare-overwrite", frameSize(benchEntry(0)), true)
	ctx := context.Background()
	// Entries are made before timing, so that only the journal is timed.
	entries := make([]Entry, b.N)
	for i := range entries {
		entries[i] = benchEntry(i)
	}
	// A round: writers×64 journal appends (enough for the writers to reach
	// their steady state), then 32 writes+syncs of each bare loop.
	round := writers * 64
	var jTime, bTime, oTime time.Duration
	var jN, bN int
	var xb, xo []float64 // per-round ratios
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(round, b.N-done)
		start := time.Now()
		err := parallel(writers, n, func(i int) error { return j.Append(ctx, entries[done+i]) })
		jd := time.Since(start)
		jTime += jd
		if err != nil {
			b.Fatal(err)
		}
		done += n
		jN += n
		b.StopTimer()
		m := min(32, max(n, 4))
		bd, od := bare.run(b, m), over.run(b, m)
		bTime += bd
		oTime += od
		bN += m
		jr := float64(n) / jd.Seconds()
		xb = append(xb, jr/(float64(m)/bd.Seconds()))
		xo = append(xo, jr/(float64(m)/od.Seconds()))
		b.StartTimer()
	}
	b.StopTimer()
	st := j.Stats()
	b.ReportMetric(float64(st.Appended)/float64(max(st.Batches, 1)), "records/sync")
	jRate := float64(jN) / jTime.Seconds()
	bRate := float64(bN) / bTime.Seconds()
	oRate := float64(bN) / oTime.Seconds()
	b.ReportMetric(jRate, "records/s")
	b.ReportMetric(bRate, "bare-records/s")
	b.ReportMetric(oRate, "bare-overwrite-records/s")
	// Medians of the per-round ratios: a burst of disk load from
	// elsewhere then skews one round, not the figure.
	slices.Sort(xb)
	slices.Sort(xo)
	b.ReportMetric(xb[len(xb)/2], "x-bare")
	b.ReportMetric(xo[len(xo)/2], "x-bare-overwrite")
}

// replayFixture is built once per process: a journal file and the same
// records as JSON lines.
var replayFixture struct {
	once  sync.Once
	dir   string
	n     int
	err   error
	bytes int64
}

// buildReplayFixture writes n records of ops going started, task_running,
// succeeded (some failing), in batches as the writer would.
func buildReplayFixture(n int) (dir string, size int64, err error) {
	dir, err = os.MkdirTemp("", "journal-replay-")
	if err != nil {
		return "", 0, err
	}
	jf, err := os.OpenFile(filepath.Join(dir, "ops.journal"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return dir, 0, err
	}
	defer jf.Close()
	lf, err := os.OpenFile(filepath.Join(dir, "ops.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return dir, 0, err
	}
	defer lf.Close()
	jw := bufio.NewWriterSize(jf, 1<<20)
	lw := bufio.NewWriterSize(lf, 1<<20)
	off := int64(fileHeaderSize)
	jw.Write(appendFileHeader(nil))
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var batch []byte
	flush := func() {
		sealFrames(batch, off)
		jw.Write(batch)
		off += int64(len(batch))
		batch = batch[:0]
	}
	for i := 0; i < n; i++ {
		op := i / 3
		var e Entry
		switch i % 3 {
		case 0:
			e = benchEntry(op)
		case 1:
			e = Entry{OpID: fmt.Sprintf("op-%08d", op), State: TaskRunning,
				UPID: fmt.Sprintf("UPID:pve-node1:%08X:%08X:%08X:qmconfig:%d:root@pam:", op, op*7, op*13, 100+op%500)}
		case 2:
			e = Entry{OpID: fmt.Sprintf("op-%08d", op), State: Succeeded}
			if op%10 == 0 {
				e.State, e.Error = Failed, "VM is locked (backup)"
			}
		}
		e.At = at.Add(time.Duration(i) * time.Millisecond)
		batch = appendFrame(batch, kindRecord, &e)
		if i%64 == 63 {
			flush()
		}
		line, err := json.Marshal(e)
		if err != nil {
			return dir, 0, err
		}
		lw.Write(line)
		lw.WriteByte('\n')
	}
	flush()
	if err := jw.Flush(); err != nil {
		return dir, 0, err
	}
	return dir, off, lw.Flush()
}

func readJSONLines(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(bufio.NewReaderSize(f, 1<<20))
	sc.Buffer(make([]byte, 1<<20), MaxEntrySize)
	n := 0
	for sc.Scan() {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return n, err
		}
		n++
	}
	return n, sc.Err()
}

func BenchmarkReplay(b *testing.B) {
	fx := &replayFixture
	fx.once.Do(func() {
		fx.n = *replayRecords
		fx.dir, fx.bytes, fx.err = buildReplayFixture(fx.n)
	})
	if fx.err != nil {
		b.Fatal(fx.err)
	}
	// The fixture is shared by every run of this benchmark in the process;
	// it goes with the process's temporary files.
	path := filepath.Join(fx.dir, "ops.journal")
	var jTime, lTime time.Duration
	var ratios []float64
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		j, err := OpenFile(path)
		if err != nil {
			b.Fatal(err)
		}
		jd := time.Since(start)
		jTime += jd
		b.StopTimer()
		if st := j.Stats(); st.Ops != (fx.n+2)/3 {
			b.Fatalf("replayed %d ops, want %d", st.Ops, (fx.n+2)/3)
		}
		j.Close()
		start = time.Now()
		n, err := readJSONLines(filepath.Join(fx.dir, "ops.jsonl"))
		ld := time.Since(start)
		lTime += ld
		if err != nil || n != fx.n {
			b.Fatalf("JSON lines: %d records, %v", n, err)
		}
		ratios = append(ratios, ld.Seconds()/jd.Seconds())
		b.StartTimer()
	}
	b.StopTimer()
	jRate := float64(fx.n*b.N) / jTime.Seconds()
	lRate := float64(fx.n*b.N) / lTime.Seconds()
	b.ReportMetric(float64(fx.n), "records")
	b.ReportMetric(jRate, "records/s")
	b.ReportMetric(lRate, "jsonl-records/s")
	// The median of the per-iteration ratios: a burst of load from
	// elsewhere on the machine then skews one pair, not the figure.
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "x-jsonl")
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if replayFixture.dir != "" {
		os.RemoveAll(replayFixture.dir)
	}
	os.Exit(code)
}
