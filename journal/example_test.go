package journal_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/guestward/guestward/journal"
)

// An operation's records, before and after its side effect, and what Latest
// makes of them.
func ExampleNewMemory() {
	ctx := context.Background()
	j := journal.NewMemory()
	defer j.Close()

	// Before asking Proxmox to start guest 101:
	j.Append(ctx, journal.Entry{OpID: "op-1", VMID: 101, Kind: "start", State: journal.Started})
	// Proxmox answered with a task:
	j.Append(ctx, journal.Entry{OpID: "op-1", State: journal.TaskRunning, UPID: "UPID:pve1:000A1B2C:0123ABCD:6650F00D:qmstart:101:root@pam:"})

	e, _, _ := j.Latest(ctx, "op-1")
	fmt.Println(e.OpID, e.VMID, e.Kind, e.State)

	// The task ended well:
	j.Append(ctx, journal.Entry{OpID: "op-1", State: journal.Succeeded})
	e, _, _ = j.Latest(ctx, "op-1")
	fmt.Println(e.State, e.UPID != "")

	// Nothing may follow a terminal record.
	err := j.Append(ctx, journal.Entry{OpID: "op-1", State: journal.Failed})
	fmt.Println(errors.Is(err, journal.ErrTerminal))
	// Output:
	// op-1 101 start task_running
	// succeeded true
	// true
}

// After a crash, the journal tells what was in flight; and a one-shot op
// whose key was applied before is not run again.
func ExampleOpenFile() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "journal-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ops.journal")

	j, err := journal.OpenFile(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	j.Append(ctx, journal.Entry{OpID: "op-1", VMID: 101, Kind: "stop", State: journal.Started})
	j.Append(ctx, journal.Entry{OpID: "op-2", VMID: 102, Kind: "set_config", State: journal.Started,
		Params: map[string]string{"memory": "4096"}, IdempKey: "request-77"})
	j.Append(ctx, journal.Entry{OpID: "op-2", State: journal.Succeeded})
	j.Close() // or the process dies here: every acknowledged record is on disk

	j, err = journal.OpenFile(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer j.Close()
	inflight, _ := j.InFlight(ctx)
	for _, e := range inflight {
		fmt.Println("resolve:", e.OpID, e.Kind, e.VMID)
	}
	applied, _ := j.AlreadyApplied(ctx, "request-77")
	fmt.Println("request-77 applied:", applied)
	// Output:
	// resolve: op-1 stop 101
	// request-77 applied: true
}

// Damage before the end of the file is reported with its offset, never
// skipped; RepairFile is the explicit way past it.
func ExampleRepairFile() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "journal-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ops.journal")

	at := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	j, _ := journal.OpenFile(path)
	for _, id := range []string{"a", "b", "c"} {
		j.Append(ctx, journal.Entry{OpID: id, VMID: 100, Kind: "start", State: journal.Started, At: at})
	}
	j.Close()

	// Flip a byte inside the second record.
	data, _ := os.ReadFile(path)
	data[80] ^= 0xff
	os.WriteFile(path, data, 0o600)

	_, err := journal.OpenFile(path)
	var ce *journal.CorruptError
	if errors.As(err, &ce) {
		fmt.Println("corrupt at offset", ce.Offset)
	}
	rep, err := journal.RepairFile(ctx, path)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("repaired:", rep.Repaired, "kept up to offset", rep.Offset)

	j, _ = journal.OpenFile(path)
	defer j.Close()
	ops, _ := j.Ops(ctx)
	fmt.Println("ops left:", len(ops))
	// Output:
	// corrupt at offset 58
	// repaired: true kept up to offset 58
	// ops left: 1
}

func ExampleMerge() {
	started := journal.Entry{OpID: "op-9", VMID: 300, Kind: "set_config", State: journal.Started,
		Params: map[string]string{"cores": "4"}}
	latest, _ := journal.Merge(nil, started)
	latest, _ = journal.Merge(&latest, journal.Entry{OpID: "op-9", State: journal.Failed, Error: "403 forbidden"})
	fmt.Println(latest.State, latest.VMID, latest.Params["cores"], latest.Error)

	_, err := journal.Merge(&latest, journal.Entry{OpID: "op-9", State: journal.TaskRunning, UPID: "UPID:x"})
	fmt.Println(errors.Is(err, journal.ErrTerminal))
	// Output:
	// failed 300 4 403 forbidden
	// true
}
