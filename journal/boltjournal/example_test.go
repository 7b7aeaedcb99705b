package boltjournal_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/boltjournal"
)

func ExampleOpen() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "boltjournal-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "journal.db")

	j, err := boltjournal.Open(path, boltjournal.WithMaxBatchSize(8))
	if err != nil {
		fmt.Println(err)
		return
	}
	j.Append(ctx, journal.Entry{OpID: "op-1", VMID: 101, Kind: "start", State: journal.Started, IdempKey: "req-1"})
	j.Append(ctx, journal.Entry{OpID: "op-1", State: journal.TaskRunning, UPID: "UPID:pve1:0001:0002:0003:qmstart:101:root@pam:"})
	j.Close()

	j, err = boltjournal.Open(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer j.Close()
	inflight, _ := j.InFlight(ctx)
	for _, e := range inflight {
		fmt.Println("in flight:", e.OpID, e.State, e.IdempKey)
	}
	st, _ := j.Verify(ctx)
	fmt.Println("ops:", st.Ops, "keys:", st.Keys)
	// Output:
	// in flight: op-1 task_running req-1
	// ops: 1 keys: 1
}
