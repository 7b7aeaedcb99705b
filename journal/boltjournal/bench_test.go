package boltjournal

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/guestward/guestward/journal"
)

// The benchmarks compare the journal with bare bbolt writing the same
// records, measured in the same run and interleaved round by round. x-bare
// is against records encoded beforehand (the bare side does nothing but
// write); x-bare-encoding against bare Batch calls that encode each entry as
// they write it. Both are medians of the per-round ratios:
//
//   - BenchmarkAppend/serial against one db.Update per record;
//   - BenchmarkAppend/writers=8 and writers=64 against db.Batch from as
//     many goroutines, with MaxBatchSize set to the number of writers (and
//     the journal configured alike);
//   - BenchmarkOpen: opening a journal of -open.records records (default
//     100000; the figure is for 1000000) and listing what is in
//     flight, which is what a restart does. bbolt has nothing to replay.
//
//	go test -run '^$' -bench . -benchtime 3x ./journal/boltjournal -open.records=1000000

var openRecords = flag.Int("open.records", 100_000, "records in the BenchmarkOpen fixture (the target is stated for 1000000)")

func benchEntry(i int) journal.Entry {
	vmid := 100 + i%500
	return journal.Entry{
		OpID: fmt.Sprintf("op-%08d", i), VMID: vmid, Kind: "set_config", State: journal.Started,
		Params: map[string]string{
			"memory": fmt.Sprint(1024 << (i % 4)),
			"cores":  fmt.Sprint(1 + i%8),
			"net0":   fmt.Sprintf("virtio=BC:24:11:%02X:%02X:%02X,bridge=vmbr0,firewall=1", vmid>>8, vmid&0xff, i%7),
		},
		IdempKey: fmt.Sprintf("req-%08d", i),
		At:       time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
	}
}

// parallel runs n calls of fn spread over w goroutines.
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
	j, err := Open(filepath.Join(dir, "journal.db"), WithMaxBatchSize(writers))
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	bare, err := bolt.Open(filepath.Join(dir, "bare.db"), 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer bare.Close()
	bare.MaxBatchSize = writers
	bare.MaxBatchDelay = DefaultMaxBatchDelay
	if err := bare.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket([]byte("ops")); err != nil {
			return err
		}
		_, err := tx.CreateBucket([]byte("enc"))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	entries := make([]journal.Entry, b.N)
	values := make([][]byte, b.N)
	for i := range entries {
		entries[i] = benchEntry(i)
		if values[i], err = encodeOp(uint64(i+1), &entries[i]); err != nil {
			b.Fatal(err)
		}
	}
	put := func(i int) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error { return tx.Bucket([]byte("ops")).Put([]byte(entries[i].OpID), values[i]) }
	}
	// The second baseline encodes each entry as it writes it, as any
	// program writing these records must.
	encPut := func(i int) error {
		v, err := entries[i].MarshalBinary()
		if err != nil {
			return err
		}
		return bare.Batch(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("enc")).Put([]byte(entries[i].OpID), v)
		})
	}
	ctx := context.Background()
	round := writers * 32
	var jTime, bTime time.Duration
	var jN, bN int
	var ratios, encRatios []float64
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
		b.StopTimer()
		start = time.Now()
		if writers == 1 {
			for i := range n {
				err = bare.Update(put(done + i))
			}
		} else {
			err = parallel(writers, n, func(i int) error { return bare.Batch(put(done + i)) })
		}
		bd := time.Since(start)
		bTime += bd
		if err != nil {
			b.Fatal(err)
		}
		ratios = append(ratios, bd.Seconds()/jd.Seconds())
		if writers > 1 {
			start = time.Now()
			if err := parallel(writers, n, func(i int) error { return encPut(done + i) }); err != nil {
				b.Fatal(err)
			}
			encRatios = append(encRatios, time.Since(start).Seconds()/jd.Seconds())
		}
		jN += n
		bN += n
		done += n
		b.StartTimer()
	}
	b.StopTimer()
	jRate := float64(jN) / jTime.Seconds()
	bRate := float64(bN) / bTime.Seconds()
	b.ReportMetric(jRate, "records/s")
	b.ReportMetric(bRate, "bare-records/s")
	// The median of the per-round ratios (each journal round against the
	// bare round right after it): a burst of disk load from elsewhere
	// then skews one pair, not the figure.
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "x-bare")
	if len(encRatios) > 0 {
		slices.Sort(encRatios)
		b.ReportMetric(encRatios[len(encRatios)/2], "x-bare-encoding")
	}
}

var openFixture struct {
	once sync.Once
	dir  string
	err  error
}

// buildOpenFixture loads n records (ops going started, task_running,
// succeeded) into a journal database, with sync off.
func buildOpenFixture(n int) (string, error) {
	dir, err := os.MkdirTemp("", "boltjournal-open-")
	if err != nil {
		return "", err
	}
	j, err := Open(filepath.Join(dir, "journal.db"), WithNoSync(), WithMaxBatchSize(256))
	if err != nil {
		return dir, err
	}
	defer j.Close()
	ctx := context.Background()
	err = parallel(64, (n+2)/3, func(op int) error {
		e := benchEntry(op)
		if err := j.Append(ctx, e); err != nil {
			return err
		}
		if 3*op+1 < n {
			if err := j.Append(ctx, journal.Entry{OpID: e.OpID, State: journal.TaskRunning, UPID: fmt.Sprintf("UPID:pve-node1:%08X:qmconfig:%d:root@pam:", op, e.VMID)}); err != nil {
				return err
			}
		}
		if 3*op+2 < n {
			return j.Append(ctx, journal.Entry{OpID: e.OpID, State: journal.Succeeded})
		}
		return nil
	})
	return dir, err
}

func BenchmarkOpen(b *testing.B) {
	fx := &openFixture
	fx.once.Do(func() { fx.dir, fx.err = buildOpenFixture(*openRecords) })
	if fx.err != nil {
		b.Fatal(fx.err)
	}
	path := filepath.Join(fx.dir, "journal.db")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		j, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := j.InFlight(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		j.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(*openRecords), "records")
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if openFixture.dir != "" {
		os.RemoveAll(openFixture.dir)
	}
	os.Exit(code)
}

// BenchmarkOpenCheck compares, on the BenchmarkOpen fixture, the journal's
// own reading of a database file before bbolt maps it (checkFile, which
// also decodes every op) with what Open did before it: decode every op
// through bbolt's mapped pages. Compare the two in one run.
func BenchmarkOpenCheck(b *testing.B) {
	fx := &openFixture
	fx.once.Do(func() { fx.dir, fx.err = buildOpenFixture(*openRecords) })
	if fx.err != nil {
		b.Fatal(fx.err)
	}
	path := filepath.Join(fx.dir, "journal.db")
	b.Run("checkFile", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			f, fi, err := openDBFile(path, readShared)
			if err != nil {
				b.Fatal(err)
			}
			if err := checkDB(f, fi.Size(), nil); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
		b.ReportMetric(float64(*openRecords), "records")
	})
	b.Run("bboltForEach", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			err = db.View(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketOps).ForEach(func(k, v []byte) error {
					_, _, err := decodeOp(string(k), v)
					return err
				})
			})
			if err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
		b.ReportMetric(float64(*openRecords), "records")
	})
}
