// Command gwjournal inspects, verifies, repairs and compacts a guestward
// operation journal of either backend: the append-only file of package
// journal, or the bbolt database of package journal/boltjournal. It tells
// them apart by their first bytes. (It is not systemd's journalctl, whose
// name it had once.)
//
// Usage:
//
//	gwjournal [flags] inspect <journal>   summary, and the ops in flight (-all: every op)
//	gwjournal [flags] dump <journal>      every record (file) or op (bbolt) as JSON lines
//	gwjournal [flags] verify <journal>    check everything; exit status 1 on damage
//	gwjournal [flags] repair <journal>    keep a copy of a damaged journal, then repair it
//	gwjournal [flags] compact <journal>   drop expired ops and rewrite the journal smaller
//
// -output json makes inspect, verify, repair and compact print one JSON
// object instead of text (dump always prints JSON lines). Every JSON object
// carries "schema": 1; members are only ever added under that number.
//
// inspect, dump and verify never change the journal. On a file journal they
// work while an agent has it open: the file only grows by whole records, so
// they see every record acknowledged before they started, and at worst a
// record being written, which they report as a torn tail. A bbolt journal is
// locked by the program that has it open, so they fail on it until that
// program stops. repair and compact take the journal's lock, so they fail
// while a program has it open, whatever the backend.
//
// -version prints the program's version and exits.
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

	"github.com/guestward/guestward/examples/internal/cli"
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
	output       string
	all          bool
	retention    time.Duration
	keyRetention time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gwjournal", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.backend, "backend", "auto", "journal backend: auto, file or bolt")
	fs.StringVar(&o.output, "output", "text", "output format of inspect, verify, repair and compact: text or json")
	fs.BoolVar(&o.all, "all", false, "inspect: list every op, not only those in flight")
	fs.DurationVar(&o.retention, "retention", journal.DefaultRetention, "compact: keep finished ops this long (negative: forever)")
	fs.DurationVar(&o.keyRetention, "key-retention", -1, "compact: keep ops holding an applied idempotency key this long (negative: forever)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: gwjournal [flags] inspect|dump|verify|repair|compact <journal>")
		fs.PrintDefaults()
	}
	version := fs.Bool("version", false, "print the program's version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, cli.Version("gwjournal"))
		return 0
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return 2
	}
	if o.output != "text" && o.output != "json" {
		fmt.Fprintf(stderr, "gwjournal: unknown output %q (want text or json)\n", o.output)
		return 2
	}
	cmd, path := fs.Arg(0), fs.Arg(1)
	b, err := detect(path, o.backend)
	if err != nil {
		fmt.Fprintln(stderr, "gwjournal:", err)
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
		fmt.Fprintf(stderr, "gwjournal: unknown command %q\n", cmd)
		fs.Usage()
		return 2
	}
	if err := f(ctx, b, path, o, stdout); err != nil {
		fmt.Fprintln(stderr, "gwjournal:", err)
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
	if o.output == "json" {
		out := inspectJSON{Schema: 1, Journal: path, Backend: string(b), Size: v.size,
			Ops: len(v.ops), InFlight: inflight, Keys: keys, Applied: applied, List: []entryJSON{}}
		if b == fileBackend && v.goodSize < v.size {
			out.GoodSize, out.TornReason = &v.goodSize, v.torn
		}
		for _, e := range v.ops {
			if o.all || !e.State.Terminal() {
				out.List = append(out.List, toJSON(e))
			}
		}
		return writeJSON(w, out)
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

// entryJSON is an operation's latest state in the JSON output, with the
// member names the agent's JSON output uses.
type entryJSON struct {
	OpID     string            `json:"op_id"`
	VMID     int               `json:"vmid,omitempty"`
	Kind     string            `json:"kind,omitempty"`
	State    journal.State     `json:"state"`
	Params   map[string]string `json:"params,omitempty"`
	UPID     string            `json:"upid,omitempty"`
	IdempKey string            `json:"idemp_key,omitempty"`
	Error    string            `json:"error,omitempty"`
	At       time.Time         `json:"at"`
}

func toJSON(e journal.Entry) entryJSON {
	return entryJSON{e.OpID, e.VMID, e.Kind, e.State, e.Params, e.UPID, e.IdempKey, e.Error, e.At}
}

// inspectJSON is inspect's JSON output. List holds the ops in flight, or
// every op with -all; GoodSize and TornReason are set when the file has
// bytes after its last intact record.
type inspectJSON struct {
	Schema     int         `json:"schema"`
	Journal    string      `json:"journal"`
	Backend    string      `json:"backend"`
	Size       int64       `json:"size_bytes"`
	GoodSize   *int64      `json:"good_size_bytes,omitempty"`
	TornReason string      `json:"torn_reason,omitempty"`
	Ops        int         `json:"ops"`
	InFlight   int         `json:"in_flight"`
	Keys       int         `json:"keys"`
	Applied    int         `json:"applied_keys"`
	List       []entryJSON `json:"list"`
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	return enc.Encode(v)
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
		_, err := boltjournal.ScanFile(ctx, path, func(e journal.Entry) error { return enc.Encode(toJSON(e)) })
		return err
	}
	type line struct {
		Offset   int64     `json:"offset"`
		Snapshot bool      `json:"snapshot,omitempty"`
		Entry    entryJSON `json:"entry"`
	}
	_, err := journal.ScanFile(ctx, path, func(r journal.Record) error {
		return enc.Encode(line{r.Offset, r.Snapshot, toJSON(r.Entry)})
	})
	return err
}

// verifyJSON is verify's JSON output; it is printed only when the journal
// is sound (damage is an error, on standard error, with exit status 1).
type verifyJSON struct {
	Schema     int    `json:"schema"`
	OK         bool   `json:"ok"`
	Records    *int   `json:"records,omitempty"` // file backend only
	Ops        int    `json:"ops"`
	InFlight   int    `json:"in_flight"`
	Keys       int    `json:"keys"`
	GoodSize   *int64 `json:"good_size_bytes,omitempty"`
	TornReason string `json:"torn_reason,omitempty"`
}

func verify(ctx context.Context, b backend, path string, o options, w io.Writer) error {
	if b == boltBackend {
		st, err := boltjournal.ScanFile(ctx, path, nil)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return writeJSON(w, verifyJSON{Schema: 1, OK: true, Ops: st.Ops, InFlight: st.InFlight, Keys: st.Keys})
		}
		fmt.Fprintf(w, "ok: %d ops (%d in flight), %d keys\n", st.Ops, st.InFlight, st.Keys)
		return nil
	}
	rep, err := journal.ScanFile(ctx, path, nil)
	if err != nil {
		return err
	}
	if o.output == "json" {
		out := verifyJSON{Schema: 1, OK: true, Records: &rep.Records, Ops: rep.Ops, InFlight: rep.InFlight, Keys: rep.Keys}
		if rep.TornReason != "" {
			out.GoodSize, out.TornReason = &rep.GoodSize, rep.TornReason
		}
		return writeJSON(w, out)
	}
	fmt.Fprintf(w, "ok: %d records, %d ops (%d in flight), %d keys\n", rep.Records, rep.Ops, rep.InFlight, rep.Keys)
	if rep.TornReason != "" {
		fmt.Fprintf(w, "note: %d bytes after offset %d are a torn final write (%s); opening the journal drops them\n",
			rep.Size-rep.GoodSize, rep.GoodSize, rep.TornReason)
	}
	return nil
}

// repairJSON is repair's JSON output.
type repairJSON struct {
	Schema       int      `json:"schema"`
	Repaired     bool     `json:"repaired"`
	Reason       string   `json:"reason,omitempty"`
	Backup       string   `json:"backup,omitempty"`
	Offset       *int64   `json:"offset,omitempty"`        // file backend: where the file now ends
	DroppedBytes *int64   `json:"dropped_bytes,omitempty"` // file backend
	Kept         *int     `json:"kept_ops,omitempty"`      // bbolt backend
	Lost         []string `json:"lost,omitempty"`          // bbolt backend
}

func repair(ctx context.Context, b backend, path string, o options, w io.Writer) error {
	if b == boltBackend {
		rep, err := boltjournal.RepairFile(ctx, path)
		if err != nil {
			return err
		}
		if o.output == "json" {
			out := repairJSON{Schema: 1, Repaired: rep.Repaired}
			if rep.Repaired {
				out.Reason, out.Backup, out.Kept, out.Lost = rep.Reason, rep.Backup, &rep.Kept, rep.Lost
			}
			return writeJSON(w, out)
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
	if o.output == "json" {
		out := repairJSON{Schema: 1, Repaired: rep.Repaired}
		if rep.Repaired {
			out.Reason, out.Backup, out.Offset, out.DroppedBytes = rep.Reason, rep.Backup, &rep.Offset, &rep.DroppedBytes
		}
		return writeJSON(w, out)
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
	if o.output == "json" {
		return writeJSON(w, struct {
			Schema      int   `json:"schema"`
			BytesBefore int64 `json:"size_bytes_before"`
			BytesAfter  int64 `json:"size_bytes_after"`
		}{1, before, fileSize(path)})
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
