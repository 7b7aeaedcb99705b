// Command journalctl inspects, verifies, repairs and compacts a guestward
// operation journal of either backend: the append-only file of package
// journal, or the bbolt database of package journal/boltjournal. It tells
// them apart by their first bytes.
//
// Usage:
//
//	journalctl [flags] inspect <journal>   summary, and the ops in flight (-all: every op)
//	journalctl [flags] dump <journal>      every record (file) or op (bbolt) as JSON lines
//	journalctl [flags] verify <journal>    check everything; exit status 1 on damage
//	journalctl [flags] repair <journal>    keep a copy of a damaged journal, then repair it
//	journalctl [flags] compact <journal>   drop expired ops and rewrite the journal smaller
//
// inspect, dump and verify never change the journal. repair and compact
// take the journal's lock, so they fail while a program has it open; so do
// inspect, dump and verify on a bbolt journal, which bbolt locks.
//
// Exit status: 0 success, 1 damage found (or an operation failed), 2 usage.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/boltjournal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type backend string

const (
	fileBackend backend = "file"
	boltBackend backend = "bolt"
)

type options struct {
	backend      string
	all          bool
	retention    time.Duration
	keyRetention time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("journalctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.backend, "backend", "auto", "journal backend: auto, file or bolt")
	fs.BoolVar(&o.all, "all", false, "inspect: list every op, not only those in flight")
	fs.DurationVar(&o.retention, "retention", journal.DefaultRetention, "compact: keep finished ops this long (negative: forever)")
	fs.DurationVar(&o.keyRetention, "key-retention", -1, "compact: keep ops holding an applied idempotency key this long (negative: forever)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: journalctl [flags] inspect|dump|verify|repair|compact <journal>")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return 2
	}
	cmd, path := fs.Arg(0), fs.Arg(1)
	b, err := detect(path, o.backend)
	if err != nil {
		fmt.Fprintln(stderr, "journalctl:", err)
		return 2
	}
	var f func(context.Context, backend, string, options, io.Writer) error
	switch cmd {
	case "inspect":
		f = inspect
	case "dump":
		f = dump
	case "verify":
		f = verify
	case "repair":
		f = repair
	case "compact":
		f = compact
	default:
		fmt.Fprintf(stderr, "journalctl: unknown command %q\n", cmd)
		fs.Usage()
		return 2
	}
	if err := f(ctx, b, path, o, stdout); err != nil {
		fmt.Fprintln(stderr, "journalctl:", err)
		return 1
	}
	return 0
}

// bboltMagic is the magic number in a bbolt meta page, which starts after
// the 16-byte page header of the database's first page.
const bboltMagic = 0xED0CDAED

// detect returns the backend named by flag, or the one whose format the
// file's first bytes show.
func detect(path, flag string) (backend, error) {
	switch flag {
	case "file":
		return fileBackend, nil
	case "bolt":
		return boltBackend, nil
	case "auto":
	default:
		return "", fmt.Errorf("unknown backend %q (want auto, file or bolt)", flag)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 20)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case len(head) >= 8 && string(head[:8]) == "GWJOURNL":
		return fileBackend, nil
	case len(head) >= 20 && binary.LittleEndian.Uint32(head[16:20]) == bboltMagic:
		return boltBackend, nil
	}
	return "", fmt.Errorf("%s: not a guestward journal file nor a bbolt database (its header is missing or damaged; use -backend to say which it is)", path)
}

// opView is what inspect gathers about a journal.
type opView struct {
	ops      []journal.Entry // latest state of every op, in start order
	size     int64
	torn     string
	goodSize int64
}

func scan(ctx context.Context, b backend, path string) (opView, error) {
	var v opView
	if b == boltBackend {
		st, err := boltjournal.ScanFile(ctx, path, func(e journal.Entry) error {
			v.ops = append(v.ops, e)
			return nil
		})
		v.size = st.Size
		return v, err
	}
	// Replay with the journal's own rules to get each op's latest state.
	latest := map[string]int{}
	rep, err := journal.ScanFile(ctx, path, func(r journal.Record) error {
		i, ok := latest[r.Entry.OpID]
		if r.Snapshot || !ok {
			latest[r.Entry.OpID] = len(v.ops)
			v.ops = append(v.ops, r.Entry)
			return nil
		}
		next, err := journal.Merge(&v.ops[i], r.Entry)
		if err != nil {
			return err
		}
		v.ops[i] = next
		return nil
	})
	v.size, v.torn, v.goodSize = rep.Size, rep.TornReason, rep.GoodSize
	return v, err
}

func inspect(ctx context.Context, b backend, path string, o options, w io.Writer) error {
	v, err := scan(ctx, b, path)
	if err != nil {
		return err
	}
	inflight, keys, applied := 0, 0, 0
	for _, e := range v.ops {
		if !e.State.Terminal() {
			inflight++
		}
		if e.IdempKey != "" {
			keys++
			if e.State == journal.Succeeded {
				applied++
			}
		}
	}
	fmt.Fprintf(w, "journal:   %s (%s backend, %d bytes)\n", path, b, v.size)
	if b == fileBackend && v.goodSize < v.size {
		if v.torn != "" {
			fmt.Fprintf(w, "tail:      %d bytes after offset %d are a torn final write (%s); opening the journal drops them\n", v.size-v.goodSize, v.goodSize, v.torn)
		} else {
			fmt.Fprintf(w, "tail:      %d bytes of preallocated space after offset %d\n", v.size-v.goodSize, v.goodSize)
		}
	}
	fmt.Fprintf(w, "ops:       %d (%d in flight)\n", len(v.ops), inflight)
	fmt.Fprintf(w, "keys:      %d (%d applied)\n", keys, applied)
	title := "in flight:"
	if o.all {
		title = "ops:"
	}
	fmt.Fprintln(w, title)
	for _, e := range v.ops {
		if o.all || !e.State.Terminal() {
			fmt.Fprintln(w, " ", describe(e))
		}
	}
	return nil
}

func describe(e journal.Entry) string {
	s := fmt.Sprintf("%s  %s  vmid=%d kind=%s at=%s", e.OpID, e.State, e.VMID, e.Kind, e.At.Format(time.RFC3339Nano))
	if e.UPID != "" {
		s += " upid=" + e.UPID
	}
	if e.IdempKey != "" {
		s += " key=" + e.IdempKey
	}
	if e.Error != "" {
		s += fmt.Sprintf(" error=%q", e.Error)
	}
	return s
}

func dump(ctx context.Context, b backend, path string, _ options, w io.Writer) error {
	enc := json.NewEncoder(w)
	if b == boltBackend {
		_, err := boltjournal.ScanFile(ctx, path, func(e journal.Entry) error { return enc.Encode(e) })
		return err
	}
	type line struct {
		Offset   int64         `json:"offset"`
		Snapshot bool          `json:"snapshot,omitempty"`
		Entry    journal.Entry `json:"entry"`
	}
	_, err := journal.ScanFile(ctx, path, func(r journal.Record) error {
		return enc.Encode(line{r.Offset, r.Snapshot, r.Entry})
	})
	return err
}

func verify(ctx context.Context, b backend, path string, _ options, w io.Writer) error {
	if b == boltBackend {
		st, err := boltjournal.ScanFile(ctx, path, nil)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "ok: %d ops (%d in flight), %d keys\n", st.Ops, st.InFlight, st.Keys)
		return nil
	}
	rep, err := journal.ScanFile(ctx, path, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "ok: %d records, %d ops (%d in flight), %d keys\n", rep.Records, rep.Ops, rep.InFlight, rep.Keys)
	if rep.TornReason != "" {
		fmt.Fprintf(w, "note: %d bytes after offset %d are a torn final write (%s); opening the journal drops them\n",
			rep.Size-rep.GoodSize, rep.GoodSize, rep.TornReason)
	}
	return nil
}

func repair(ctx context.Context, b backend, path string, _ options, w io.Writer) error {
	if b == boltBackend {
		rep, err := boltjournal.RepairFile(ctx, path)
		if err != nil {
			return err
		}
		if !rep.Repaired {
			fmt.Fprintln(w, "no damage found; nothing changed")
			return nil
		}
		fmt.Fprintf(w, "repaired: %s\nbackup:   %s\nkept:     %d ops\n", rep.Reason, rep.Backup, rep.Kept)
		for _, l := range rep.Lost {
			fmt.Fprintln(w, "lost:    ", l)
		}
		return nil
	}
	rep, err := journal.RepairFile(ctx, path)
	if err != nil {
		return err
	}
	if !rep.Repaired {
		fmt.Fprintln(w, "no damage found; nothing changed")
		return nil
	}
	fmt.Fprintf(w, "repaired: %s\nbackup:   %s\ncut:      %d bytes from offset %d\n", rep.Reason, rep.Backup, rep.DroppedBytes, rep.Offset)
	return nil
}

func compact(ctx context.Context, b backend, path string, o options, w io.Writer) error {
	before := fileSize(path)
	var err error
	if b == boltBackend {
		var j *boltjournal.Journal
		if j, err = boltjournal.Open(path, boltjournal.WithRetention(o.retention), boltjournal.WithKeyRetention(o.keyRetention)); err != nil {
			return err
		}
		err = errors.Join(j.Compact(ctx), j.Close())
	} else {
		var j *journal.FileJournal
		if j, err = journal.OpenFile(path, journal.WithRetention(o.retention), journal.WithKeyRetention(o.keyRetention), journal.WithCompactThreshold(0)); err != nil {
			return err
		}
		err = errors.Join(j.Compact(ctx), j.Close())
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "compacted: %d bytes before, %d after\n", before, fileSize(path))
	return nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}
