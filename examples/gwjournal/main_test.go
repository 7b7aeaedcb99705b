package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/boltjournal"
)

// Recent enough that the default retention keeps every op.
var at = time.Now().UTC().Truncate(time.Second)

// fill appends the same small history to any journal: one op finished
// with an applied key, one failed, one in flight.
func fill(t *testing.T, j journal.Journal) {
	t.Helper()
	ctx := context.Background()
	for _, e := range []journal.Entry{
		{OpID: "done", VMID: 101, Kind: "start", State: journal.Started, IdempKey: "req-1", At: at},
		{OpID: "done", State: journal.Succeeded, At: at},
		{OpID: "bad", VMID: 102, Kind: "stop", State: journal.Started, At: at},
		{OpID: "bad", State: journal.Failed, Error: "VM is locked", At: at},
		{OpID: "busy", VMID: 103, Kind: "set_config", State: journal.Started, Params: map[string]string{"memory": "2048"}, At: at},
		{OpID: "busy", State: journal.TaskRunning, UPID: "UPID:pve1:1:2:3:qmconfig:103:root@pam:", At: at},
	} {
		if err := j.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

func fileJournal(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "ops.journal")
	j, err := journal.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, j)
	return path
}

func boltJournal(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "journal.db")
	j, err := boltjournal.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, j)
	return path
}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestBothBackends(t *testing.T) {
	for name, mk := range map[string]func(*testing.T) string{"file": fileJournal, "bolt": boltJournal} {
		t.Run(name, func(t *testing.T) {
			path := mk(t)

			code, out, errs := runCmd(t, "inspect", path)
			if code != 0 {
				t.Fatalf("inspect: exit %d, %s", code, errs)
			}
			for _, want := range []string{"(" + name + " backend", "ops:       3 (1 in flight)", "keys:      1 (1 applied)",
				"busy  task_running  vmid=103 kind=set_config", "upid=UPID:pve1:1:2:3:qmconfig:103:root@pam:"} {
				if !strings.Contains(out, want) {
					t.Errorf("inspect output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "done  succeeded") {
				t.Errorf("inspect without -all listed a finished op:\n%s", out)
			}
			_, out, _ = runCmd(t, "-all", "inspect", path)
			if !strings.Contains(out, `bad  failed  vmid=102 kind=stop`) || !strings.Contains(out, `error="VM is locked"`) {
				t.Errorf("inspect -all lacks the failed op:\n%s", out)
			}

			code, out, errs = runCmd(t, "dump", path)
			if code != 0 {
				t.Fatalf("dump: exit %d, %s", code, errs)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			want := 6 // file: every record
			if name == "bolt" {
				want = 3 // bolt: every op
			}
			if len(lines) != want {
				t.Fatalf("dump printed %d lines, want %d:\n%s", len(lines), want, out)
			}
			for _, l := range lines {
				if !json.Valid([]byte(l)) {
					t.Fatalf("dump line is not JSON: %s", l)
				}
			}

			if code, out, errs = runCmd(t, "verify", path); code != 0 || !strings.HasPrefix(out, "ok:") {
				t.Fatalf("verify: exit %d, %q %q", code, out, errs)
			}
			if code, out, _ = runCmd(t, "repair", path); code != 0 || !strings.Contains(out, "nothing changed") {
				t.Fatalf("repair of a sound journal: exit %d, %q", code, out)
			}
			if code, out, errs = runCmd(t, "-retention", "0", "compact", path); code != 0 || !strings.HasPrefix(out, "compacted:") {
				t.Fatalf("compact: exit %d, %q %q", code, out, errs)
			}
			// Retention zero dropped the failed op; the applied key and
			// the op in flight stay.
			_, out, _ = runCmd(t, "-all", "inspect", path)
			if strings.Contains(out, "bad ") || !strings.Contains(out, "done ") || !strings.Contains(out, "busy ") {
				t.Errorf("after compact with retention 0:\n%s", out)
			}
		})
	}
}

func TestFileDamage(t *testing.T) {
	path := fileJournal(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[40] ^= 0xff // inside the first record
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, "verify", path)
	if code != 1 || !strings.Contains(errs, "corrupt at byte offset 16") {
		t.Fatalf("verify of a damaged journal: exit %d, %q", code, errs)
	}
	code, out, errs := runCmd(t, "repair", path)
	if code != 0 || !strings.Contains(out, "backup:") || !strings.Contains(out, "from offset 16") {
		t.Fatalf("repair: exit %d, %q %q", code, out, errs)
	}
	if code, _, errs = runCmd(t, "verify", path); code != 0 {
		t.Fatalf("verify after repair: exit %d, %q", code, errs)
	}
}

func TestBoltDamage(t *testing.T) {
	path := boltJournal(t)
	// Corrupt an entry's encoding behind bbolt's back.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt copies pages on write, so freed pages may hold older copies:
	// damage every one, the live one among them.
	found := 0
	for i := 0; ; {
		k := bytes.Index(data[i:], []byte("VM is locked"))
		if k < 0 {
			break
		}
		data[i+k-1] ^= 0x40 // the error string's length
		found++
		i += k + 1
	}
	if found == 0 {
		t.Fatal("entry not found in the database file")
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, "verify", path)
	if code != 1 || !strings.Contains(errs, "corrupt") {
		t.Fatalf("verify of a damaged database: exit %d, %q", code, errs)
	}
	code, out, errs := runCmd(t, "repair", path)
	if code != 0 || !strings.Contains(out, "kept:     2 ops") || !strings.Contains(out, `lost:`) {
		t.Fatalf("repair: exit %d, %q %q", code, out, errs)
	}
	if code, _, errs = runCmd(t, "verify", path); code != 0 {
		t.Fatalf("verify after repair: exit %d, %q", code, errs)
	}
}

func TestUsageAndDetection(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "notes.txt")
	os.WriteFile(other, []byte("hello, this is not a journal"), 0o600)
	cases := []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"no arguments", nil, 2, "usage"},
		{"unknown command", []string{"frobnicate", fileJournal(t)}, 2, "unknown command"},
		{"unknown backend", []string{"-backend", "sqlite", "inspect", other}, 2, "unknown backend"},
		{"not a journal", []string{"inspect", other}, 2, "not a guestward journal"},
		{"missing file", []string{"inspect", filepath.Join(dir, "nope")}, 2, "no such file"},
		{"forced backend on a foreign file", []string{"-backend", "file", "verify", other}, 1, "corrupt"},
	}
	for _, tc := range cases {
		code, _, errs := runCmd(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.err) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", tc.name, code, errs, tc.code, tc.err)
		}
	}
}

func TestOpenJournalIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ops.journal")
	j, err := journal.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	code, _, errs := runCmd(t, "compact", path)
	if code != 1 || !strings.Contains(errs, "in use") {
		t.Fatalf("compact of a journal in use: exit %d, %q", code, errs)
	}
}

// -output json prints one JSON object per command, with strict member
// names a tool can rely on.
func TestJSONOutput(t *testing.T) {
	for name, mk := range map[string]func(*testing.T) string{"file": fileJournal, "bolt": boltJournal} {
		t.Run(name, func(t *testing.T) {
			path := mk(t)
			decode := func(args ...string) map[string]any {
				t.Helper()
				code, out, errs := runCmd(t, append([]string{"-output", "json"}, args...)...)
				if code != 0 {
					t.Fatalf("%v: exit %d, %s", args, code, errs)
				}
				var v map[string]any
				dec := json.NewDecoder(strings.NewReader(out))
				if err := dec.Decode(&v); err != nil || dec.More() {
					t.Fatalf("%v: not one JSON object (%v):\n%s", args, err, out)
				}
				if v["schema"] != float64(1) {
					t.Errorf("%v: schema = %v, want 1", args, v["schema"])
				}
				return v
			}
			v := decode("-all", "inspect", path)
			if v["backend"] != name || v["ops"] != float64(3) || v["in_flight"] != float64(1) || v["applied_keys"] != float64(1) {
				t.Errorf("inspect: %v", v)
			}
			list, _ := v["list"].([]any)
			if len(list) != 3 {
				t.Fatalf("inspect -all listed %d ops, want 3: %v", len(list), v["list"])
			}
			var busy map[string]any
			for _, e := range list {
				if m := e.(map[string]any); m["op_id"] == "busy" {
					busy = m
				}
			}
			if busy == nil || busy["state"] != "task_running" || busy["upid"] != "UPID:pve1:1:2:3:qmconfig:103:root@pam:" || busy["vmid"] != float64(103) {
				t.Errorf("inspect: op busy = %v", busy)
			}
			if v = decode("inspect", path); len(v["list"].([]any)) != 1 {
				t.Errorf("inspect without -all: %v", v["list"])
			}
			if v = decode("verify", path); v["ok"] != true || v["ops"] != float64(3) {
				t.Errorf("verify: %v", v)
			}
			if v = decode("repair", path); v["repaired"] != false {
				t.Errorf("repair of a sound journal: %v", v)
			}
			if v = decode("compact", path); v["size_bytes_after"] == nil {
				t.Errorf("compact: %v", v)
			}
			if code, _, errs := runCmd(t, "-output", "yaml", "inspect", path); code != 2 || !strings.Contains(errs, "unknown output") {
				t.Errorf("-output yaml: exit %d, %q", code, errs)
			}
		})
	}
}

// A file journal can be inspected while a program has it open and appends to
// it: the tool reads what was acknowledged, without the journal's lock.
func TestInspectLiveFileJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ops.journal")
	j, err := journal.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ctx := context.Background()
	if err := j.Append(ctx, journal.Entry{OpID: "live", VMID: 100, Kind: "start", State: journal.Started, At: at}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd(t, "inspect", path)
	if code != 0 || !strings.Contains(out, "live  started  vmid=100 kind=start") {
		t.Fatalf("inspect of a journal in use: exit %d, %q %q", code, out, errs)
	}
	if err := j.Append(ctx, journal.Entry{OpID: "live", State: journal.Succeeded, At: at}); err != nil {
		t.Fatal(err)
	}
	if code, out, errs = runCmd(t, "verify", path); code != 0 || !strings.Contains(out, "1 ops (0 in flight)") {
		t.Fatalf("verify of a journal in use: exit %d, %q %q", code, out, errs)
	}
}

func TestVersion(t *testing.T) {
	if code, out, _ := runCmd(t, "-version"); code != 0 || !strings.HasPrefix(out, "gwjournal guestward ") {
		t.Errorf("-version: exit %d, %q", code, out)
	}
}
