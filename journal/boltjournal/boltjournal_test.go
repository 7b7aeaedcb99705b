package boltjournal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/journal"
)

func started(id string, key string) journal.Entry {
	return journal.Entry{OpID: id, VMID: 100, Kind: "start", State: journal.Started, IdempKey: key}
}

// bbolt reruns the functions of a batch when one of them fails. Here one
// run in every few fails once: every append must still succeed, exactly
// once, with the indexes in memory agreeing with the database.
func TestBatchRerunsDoNotDuplicate(t *testing.T) {
	fp := new(failpoint.Set)
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := Open(path, WithMaxBatchSize(16), withFailpoints(fp))
	if err != nil {
		t.Fatal(err)
	}
	var runs, failures atomic.Int64
	boom := errors.New("injected failure of one function in a batch")
	fp.Enable("append/tx", func() error {
		if runs.Add(1)%7 == 3 {
			failures.Add(1)
			return boom
		}
		return nil
	})
	ctx := context.Background()
	const writers, each = 16, 12
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				for _, e := range []journal.Entry{started(id, "k-"+id), {OpID: id, State: journal.Succeeded}} {
					// A failed solo retry surfaces the injected
					// error; the append may then be repeated.
					for {
						err := j.Append(ctx, e)
						if errors.Is(err, boom) {
							continue
						}
						if err != nil {
							errs <- fmt.Errorf("%s %s: %w", id, e.State, err)
						}
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if failures.Load() == 0 {
		t.Fatal("no function failed; the test exercised no rerun")
	}
	check := func(j *Journal) {
		st, err := j.Verify(ctx)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if st.Ops != writers*each || st.InFlight != 0 || st.Keys != writers*each {
			t.Fatalf("Verify stats = %+v, want %d ops, none in flight, %d keys", st, writers*each, writers*each)
		}
		for w := range writers {
			for i := range each {
				k := fmt.Sprintf("k-w%d-%d", w, i)
				if ok, err := j.AlreadyApplied(ctx, k); !ok || err != nil {
					t.Fatalf("AlreadyApplied(%s) = %v, %v", k, ok, err)
				}
			}
		}
	}
	check(j)
	fp.Disable("append/tx")
	j.Close()
	j, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	check(j)
	t.Logf("%d transaction function runs, %d of them failed and were rerun", runs.Load(), failures.Load())
}

func TestRetentionPrunes(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := Open(path, WithClock(clock), WithRetention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	must := func(e journal.Entry) {
		t.Helper()
		if err := j.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		id := fmt.Sprint("old", i)
		key := ""
		if i < 5 {
			key = "applied-" + id
		} else if i < 10 {
			key = "failed-" + id
		}
		must(started(id, key))
		if i < 5 {
			must(journal.Entry{OpID: id, State: journal.Succeeded})
		} else if i < 15 {
			must(journal.Entry{OpID: id, State: journal.Failed, Error: "x"})
		}
	}
	now = now.Add(2 * time.Hour)
	// Each append prunes a few expired ops.
	for i := range 10 {
		must(started(fmt.Sprint("new", i), ""))
	}
	for i := range 20 {
		id := fmt.Sprint("old", i)
		_, ok, err := j.Latest(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := i < 5 || i >= 15 // applied keys are kept forever; ops in flight are kept
		if ok != want {
			t.Errorf("op %s present = %v, want %v", id, ok, want)
		}
	}
	// The failed ops' keys are free again; the applied ones are not.
	if err := j.Append(ctx, started("reuse", "failed-old5")); err != nil {
		t.Errorf("claiming the key of a pruned failed op: %v", err)
	}
	if err := j.Append(ctx, started("steal", "applied-old0")); !errors.Is(err, journal.ErrKeyConflict) {
		t.Errorf("claiming an applied key = %v, want ErrKeyConflict", err)
	}
	if _, err := j.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	j.Close()

	// Key retention, applied at open.
	now = now.Add(24 * time.Hour)
	j, err = Open(path, WithClock(clock), WithRetention(time.Hour), WithKeyRetention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if ok, _ := j.AlreadyApplied(ctx, "applied-old0"); ok {
		t.Error("applied key still there past key retention")
	}
	if _, ok, _ := j.Latest(ctx, "new0"); !ok {
		t.Error("op in flight was pruned")
	}
	if st, err := j.Verify(ctx); err != nil || st.Ops != 5+10+1 {
		t.Errorf("Verify = %+v, %v; want the 5 in flight, 10 new and the reused op", st, err)
	}
}

func TestCompactReclaimsSpace(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := Open(path, WithClock(func() time.Time { return now }), WithRetention(time.Minute), WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ctx := context.Background()
	big := map[string]string{"description": string(make([]byte, 2000))}
	for i := range 2000 {
		id := fmt.Sprint("op", i)
		e := started(id, "")
		e.Params = big
		if err := j.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
		if i >= 10 {
			if err := j.Append(ctx, journal.Entry{OpID: id, State: journal.Succeeded}); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := fileSize(path)
	now = now.Add(time.Hour)
	if err := j.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	after := fileSize(path)
	if after*4 > before {
		t.Errorf("file went from %d to %d bytes; compaction should have returned most of it", before, after)
	}
	st, err := j.Verify(ctx)
	if err != nil || st.Ops != 10 || st.InFlight != 10 {
		t.Fatalf("after Compact: %+v, %v; want the 10 ops in flight", st, err)
	}
	// The journal still works on the new file.
	if err := j.Append(ctx, journal.Entry{OpID: "op0", State: journal.Succeeded}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + compactSuffix); !os.IsNotExist(err) {
		t.Errorf("compaction left %s behind: %v", path+compactSuffix, err)
	}
}

func TestVerifyAndRepair(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "j.db")
	j, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 5 {
		if err := j.Append(ctx, started(fmt.Sprint("op", i), fmt.Sprint("k", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := j.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	j.Close()
	if rep, err := RepairFile(ctx, path); err != nil || rep.Repaired {
		t.Fatalf("Repair of a sound journal = %+v, %v; want nothing done", rep, err)
	}

	// Damage two entries behind bbolt's back: one no longer decodes, one
	// takes another op's key.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOps)
		v := append([]byte(nil), b.Get([]byte("op1"))...)
		v[len(v)-1] ^= 0xff
		if err := b.Put([]byte("op1"), v); err != nil {
			return err
		}
		e, seq, err := decodeOp("op3", b.Get([]byte("op3")))
		if err != nil {
			return err
		}
		e.IdempKey = "k0"
		v, err = encodeOp(seq, &e)
		if err != nil {
			return err
		}
		return b.Put([]byte("op3"), v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); !errors.Is(err, journal.ErrCorrupt) {
		t.Fatalf("Open of a damaged journal = %v, want ErrCorrupt", err)
	}
	rep, err := RepairFile(ctx, path, WithClock(func() time.Time { return time.Unix(1, 0) }))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Repaired || rep.Kept != 3 || len(rep.Lost) != 2 {
		t.Fatalf("Repair = %+v; want 3 ops kept and 2 reported lost", rep)
	}
	if _, err := os.Stat(rep.Backup); err != nil {
		t.Fatalf("no backup: %v", err)
	}
	j, err = Open(path)
	if err != nil {
		t.Fatalf("Open after Repair: %v", err)
	}
	defer j.Close()
	st, err := j.Verify(ctx)
	if err != nil || st.Ops != 3 {
		t.Fatalf("after Repair: %+v, %v", st, err)
	}
	// Sequence order survived: a new op sorts after the kept ones.
	if err := j.Append(ctx, started("op9", "")); err != nil {
		t.Fatal(err)
	}
	fl, _ := j.InFlight(ctx)
	if len(fl) != 4 || fl[3].OpID != "op9" {
		t.Fatalf("InFlight after repair = %v", fl)
	}
}

func TestOpenRejectsForeignDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("stuff")); return err })
	db.Close()
	if _, err := Open(path); !errors.Is(err, journal.ErrCorrupt) {
		t.Fatalf("Open of a foreign bbolt database = %v, want ErrCorrupt", err)
	}
	if err := os.WriteFile(path, []byte("not a database at all, just text"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); !errors.Is(err, journal.ErrCorrupt) {
		t.Fatalf("Open of a text file = %v, want ErrCorrupt", err)
	}
}

func TestOpenCreatesPrivateFileAndLocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := Open(path); !errors.Is(err, journal.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if _, err := RepairFile(context.Background(), path); !errors.Is(err, journal.ErrLocked) {
		t.Fatalf("Repair of an open journal = %v, want ErrLocked", err)
	}
}

func TestScanFileIsReadOnly(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := Open(path, WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	j.Append(ctx, started("b", "kb"))
	j.Append(ctx, started("a", ""))
	j.Append(ctx, journal.Entry{OpID: "b", State: journal.Failed, Error: "x"})
	if _, err := ScanFile(ctx, path, nil); !errors.Is(err, journal.ErrLocked) {
		t.Fatalf("ScanFile of an open journal = %v, want ErrLocked", err)
	}
	j.Close()
	before, _ := os.ReadFile(path)
	var order []string
	st, err := ScanFile(ctx, path, func(e journal.Entry) error {
		order = append(order, e.OpID+":"+string(e.State))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Ops != 2 || st.InFlight != 1 || st.Keys != 1 || len(order) != 2 || order[0] != "b:failed" || order[1] != "a:started" {
		t.Fatalf("ScanFile = %+v, %v", st, order)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("ScanFile changed the database")
	}
}

// Concurrent starts that collide on op IDs and on idempotency keys, with
// transaction functions failing now and then (so that batches are rolled
// back and rerun, and failed functions retried alone meanwhile): every op
// ID and every key is taken at most once, and the indexes in memory agree
// with the database.
func TestConcurrentStartsCollide(t *testing.T) {
	fp := new(failpoint.Set)
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := Open(path, WithMaxBatchSize(8), withFailpoints(fp))
	if err != nil {
		t.Fatal(err)
	}
	var runs, failures atomic.Int64
	boom := errors.New("injected failure of one function in a batch")
	fp.Enable("append/tx", func() error {
		if runs.Add(1)%5 == 2 {
			failures.Add(1)
			return boom
		}
		return nil
	})
	ctx := context.Background()
	const writers, each = 16, 40
	var mu sync.Mutex
	won := map[string]string{} // op ID → key of the start that succeeded
	keyWon := map[string]string{}
	var conflicts, dups atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// At each step, pairs of writers start the same op
				// ID, and groups of four start ops with the same key.
				id, key := fmt.Sprintf("op-%d-%d", i, w%8), fmt.Sprintf("k-%d-%d", i, w%4)
				for {
					err := j.Append(ctx, started(id, key))
					switch {
					case errors.Is(err, boom):
						continue
					case err == nil:
						mu.Lock()
						if prev, ok := won[id]; ok {
							errs <- fmt.Errorf("op %s started twice (keys %s, %s)", id, prev, key)
						}
						if prev, ok := keyWon[key]; ok {
							errs <- fmt.Errorf("key %s taken twice (ops %s, %s)", key, prev, id)
						}
						won[id], keyWon[key] = key, id
						mu.Unlock()
					case errors.Is(err, journal.ErrKeyConflict):
						conflicts.Add(1)
					case errors.Is(err, journal.ErrInvalidTransition):
						dups.Add(1)
					default:
						errs <- fmt.Errorf("start %s with %s: %w", id, key, err)
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if failures.Load() == 0 || conflicts.Load() == 0 || dups.Load() == 0 {
		t.Fatalf("failures %d, key conflicts %d, duplicate starts %d: the test exercised too little", failures.Load(), conflicts.Load(), dups.Load())
	}
	check := func(j *Journal) {
		st, err := j.Verify(ctx)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if st.Ops != len(won) || st.InFlight != len(won) || st.Keys != len(keyWon) {
			t.Fatalf("Verify stats = %+v, want %d ops, all in flight, %d keys", st, len(won), len(keyWon))
		}
		for key, id := range keyWon {
			if e, ok, err := j.LatestByKey(ctx, key); err != nil || !ok || e.OpID != id {
				t.Fatalf("LatestByKey(%s) = %s, %v, %v; want %s", key, e.OpID, ok, err, id)
			}
		}
		inFlight, err := j.InFlight(ctx)
		if err != nil || len(inFlight) != len(won) {
			t.Fatalf("InFlight: %d ops, %v; want %d", len(inFlight), err, len(won))
		}
	}
	check(j)
	fp.Disable("append/tx")
	j.Close()
	if j, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	check(j)
	t.Logf("%d ops started, %d key conflicts, %d duplicate starts; %d of %d function runs failed", len(won), conflicts.Load(), dups.Load(), failures.Load(), runs.Load())
}
