package journal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/failpoint"
)

// Compact must not starve while appends keep the writer busy. Here every
// batch the writer writes makes sure the next one is already queued, which
// is what a steady stream of appenders does; the compaction must still be
// served within a batch or two, not after the stream dries up.
func TestCompactUnderSteadyAppends(t *testing.T) {
	fp := new(failpoint.Set)
	j, err := OpenFile(filepath.Join(t.TempDir(), "j"), WithNoSync(), WithCompactThreshold(0), withFailpoints(fp))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ctx := context.Background()
	const chain = 50
	var batches, compactedAt atomic.Int32
	var wg sync.WaitGroup
	second := make(chan struct{})
	fp.Enable("append/before-write", func() error {
		n := batches.Add(1)
		if n == 2 {
			close(second)
			// Hold this batch until the compaction request is
			// waiting for the writer.
			for {
				j.mu.Lock()
				waiting := len(j.compactReqs) > 0
				j.mu.Unlock()
				if waiting {
					break
				}
				runtime.Gosched()
			}
		}
		if n < chain {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := j.Append(ctx, Entry{OpID: fmt.Sprint("op", n), VMID: 1, Kind: "start", State: Started}); err != nil {
					t.Error(err)
				}
			}()
			// Return only once that append is queued for the next batch.
			for {
				j.mu.Lock()
				queued := len(j.open.recs) > 0 || j.closed
				j.mu.Unlock()
				if queued {
					break
				}
				runtime.Gosched()
			}
		}
		return nil
	})
	fp.Enable("compact/before-write", func() error {
		compactedAt.Store(batches.Load())
		return nil
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		j.Append(ctx, Entry{OpID: "op0", VMID: 1, Kind: "start", State: Started})
	}()
	<-second
	if err := j.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if at := compactedAt.Load(); at != 2 {
		t.Fatalf("compaction ran after batch %d of a stream of %d; it must not wait for the stream to end", at, chain)
	}
}

// After a failed write the journal refuses further records, every waiting
// and later Append reports the failure, reads keep serving what was
// acknowledged, and a reopen recovers.
func TestWriteFailureIsSticky(t *testing.T) {
	fp := new(failpoint.Set)
	path := filepath.Join(t.TempDir(), "j")
	j, err := OpenFile(path, withFailpoints(fp))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := j.Append(ctx, Entry{OpID: "ok", VMID: 1, Kind: "start", State: Started}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk on fire")
	fp.Enable("append/before-sync", func() error { return boom })
	err = j.Append(ctx, Entry{OpID: "lost", VMID: 1, Kind: "start", State: Started})
	if !errors.Is(err, boom) {
		t.Fatalf("Append during the failure = %v, want it to wrap %v", err, boom)
	}
	fp.Disable("append/before-sync")
	err = j.Append(ctx, Entry{OpID: "later", VMID: 1, Kind: "start", State: Started})
	if !errors.Is(err, boom) {
		t.Fatalf("Append after the failure = %v, want the sticky %v", err, boom)
	}
	if err := j.Compact(ctx); !errors.Is(err, boom) {
		t.Fatalf("Compact after the failure = %v, want %v", err, boom)
	}
	if _, ok, err := j.Latest(ctx, "ok"); !ok || err != nil {
		t.Fatalf("Latest(ok) after the failure = %v, %v", ok, err)
	}
	if _, ok, _ := j.Latest(ctx, "lost"); ok {
		t.Fatal("the record whose sync failed is visible")
	}
	if st := j.Stats(); !errors.Is(st.Err, boom) {
		t.Fatalf("Stats().Err = %v", st.Err)
	}
	if err := j.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close = %v, want it to report %v", err, boom)
	}
	j, err = OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if err := j.Append(ctx, Entry{OpID: "after", VMID: 1, Kind: "start", State: Started}); err != nil {
		t.Fatalf("Append after reopening: %v", err)
	}
}

// An Append queued behind a batch being written returns when its context
// ends; its record still becomes durable, and Latest says so.
func TestAppendContextEndsWhileQueued(t *testing.T) {
	fp := new(failpoint.Set)
	j, err := OpenFile(filepath.Join(t.TempDir(), "j"), withFailpoints(fp))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fp.Enable("append/before-write", func() error {
		once.Do(func() { close(arrived); <-release })
		return nil
	})
	first := make(chan error)
	go func() {
		first <- j.Append(context.Background(), Entry{OpID: "first", VMID: 1, Kind: "start", State: Started})
	}()
	<-arrived // the first append is writing its batch, and holds the file
	ctx, cancel := context.WithCancel(context.Background())
	queued := make(chan struct{}, 1)
	fp.Enable("append/queued", func() error { queued <- struct{}{}; return nil })
	done := make(chan error)
	go func() { done <- j.Append(ctx, Entry{OpID: "q", VMID: 1, Kind: "start", State: Started}) }()
	<-queued
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("queued Append = %v, want context.Canceled", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	j.waitIdle()
	if e, ok, err := j.Latest(context.Background(), "q"); err != nil || !ok || e.State != Started {
		t.Fatalf("Latest(q) = %+v, %v, %v; the queued record should have become durable", e, ok, err)
	}
}

// Close waits for records already queued: their Appends succeed.
func TestCloseDrainsQueuedRecords(t *testing.T) {
	fp := new(failpoint.Set)
	path := filepath.Join(t.TempDir(), "j")
	j, err := OpenFile(path, withFailpoints(fp))
	if err != nil {
		t.Fatal(err)
	}
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fp.Enable("append/before-write", func() error {
		once.Do(func() { close(arrived); <-release })
		return nil
	})
	queued := make(chan struct{}, 8)
	results := make(chan error, 9)
	go func() {
		results <- j.Append(context.Background(), Entry{OpID: "first", VMID: 1, Kind: "start", State: Started})
	}()
	<-arrived
	fp.Enable("append/queued", func() error { queued <- struct{}{}; return nil })
	for i := range 8 {
		go func() {
			results <- j.Append(context.Background(), Entry{OpID: fmt.Sprint("q", i), VMID: 1, Kind: "start", State: Started})
		}()
	}
	for range 8 {
		<-queued
	}
	closed := make(chan error)
	go func() { closed <- j.Close() }()
	// Close is now waiting for the writer, which holds the first batch.
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for range 9 {
		if err := <-results; err != nil {
			t.Fatalf("queued Append failed across Close: %v", err)
		}
	}
	j, err = OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if ops, _ := j.Ops(context.Background()); len(ops) != 9 {
		t.Fatalf("after reopening, %d ops, want 9", len(ops))
	}
}

func TestOpenFileCreatesPrivateFileAndLocks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "j")
	j, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("journal mode = %v, want 0600", fi.Mode().Perm())
	}
	if _, err := OpenFile(path); !errors.Is(err, ErrLocked) {
		t.Errorf("second OpenFile = %v, want ErrLocked", err)
	}
	if _, err := RepairFile(context.Background(), path); !errors.Is(err, ErrLocked) {
		t.Errorf("RepairFile on an open journal = %v, want ErrLocked", err)
	}
	j.Close()
	j, err = OpenFile(path)
	if err != nil {
		t.Fatalf("OpenFile after Close: %v", err)
	}
	j.Close()
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != "j" || names[1] != "j.lock" {
		t.Errorf("directory holds %v, want the journal and its lock file", names)
	}
}

func TestOpenRejectsForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte("root:x:0:0:root:/root:/bin/bash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenFile(path)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Offset != 0 {
		t.Fatalf("OpenFile on a foreign file = %v, want ErrCorrupt at offset 0", err)
	}
	if _, err := RepairFile(context.Background(), path); err == nil {
		t.Fatal("RepairFile accepted a file without a journal header")
	}
	if b, _ := os.ReadFile(path); string(b) != "root:x:0:0:root:/root:/bin/bash\n" {
		t.Fatal("the foreign file was changed")
	}
}

func TestRetentionKeep(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	old := now.Add(-2 * time.Hour)
	cases := []struct {
		name string
		r    retention
		e    Entry
		keep bool
	}{
		{"in flight is always kept", retention{0, 0}, Entry{State: TaskRunning, At: old}, true},
		{"started is always kept", retention{0, 0}, Entry{State: Started, At: old}, true},
		{"failed past retention dropped", retention{time.Hour, -1}, Entry{State: Failed, At: old}, false},
		{"failed within retention kept", retention{3 * time.Hour, -1}, Entry{State: Failed, At: old}, true},
		{"succeeded without key follows op retention", retention{time.Hour, -1}, Entry{State: Succeeded, At: old}, false},
		{"applied key kept forever by default", retention{time.Hour, -1}, Entry{State: Succeeded, IdempKey: "k", At: old}, true},
		{"applied key past key retention dropped", retention{-1, time.Hour}, Entry{State: Succeeded, IdempKey: "k", At: old}, false},
		{"failed op with key follows op retention", retention{time.Hour, -1}, Entry{State: Failed, IdempKey: "k", At: old}, false},
		{"negative op retention keeps forever", retention{-1, -1}, Entry{State: Failed, At: old.Add(-1000 * time.Hour)}, true},
		{"zero retention drops at once", retention{0, -1}, Entry{State: Failed, At: now}, false},
		{"boundary: exactly retention old is dropped", retention{2 * time.Hour, -1}, Entry{State: Failed, At: old}, false},
	}
	for _, tc := range cases {
		if got := tc.r.keep(&tc.e, now); got != tc.keep {
			t.Errorf("%s: keep = %v, want %v", tc.name, got, tc.keep)
		}
	}
}

// TestOpenRefusesEmptyFile: OpenFile never leaves an empty file at the
// path (it renames a file holding the header into place), so an empty one
// lost its contents. Treating it as a new journal would forget which
// idempotency keys were spent and let a one-shot run twice.
func TestOpenRefusesEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ops.journal")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenFile(path)
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || ce.Offset != 0 {
		t.Fatalf("OpenFile on an empty file = %v, want ErrCorrupt at offset 0", err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != 0 || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("the empty file was written: size %d, modified %v (was %v)", after.Size(), after.ModTime(), before.ModTime())
	}
}
