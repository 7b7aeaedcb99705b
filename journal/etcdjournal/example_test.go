package etcdjournal_test

import (
	"context"
	"fmt"
	"os"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/etcdjournal"
	"github.com/guestward/guestward/journal/etcdjournal/internal/etcdtest"
)

// A leader's journal records an operation; once the leader resigns, the
// next candidate leads and sees it, while the old leader can write no more.
func ExampleCampaign() {
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)
	cluster, err := etcdtest.Start(dir, etcdtest.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cluster.Close()
	cli, _ := cluster.Client()
	defer cli.Close()
	ctx := context.Background()

	a, err := etcdjournal.Campaign(ctx, cli, "/guestward/example", "replica-a")
	if err != nil {
		fmt.Println(err)
		return
	}
	err = a.Journal().Append(ctx, journal.Entry{OpID: "op-1", VMID: 100, Kind: "start", State: journal.Started})
	fmt.Println("a appends:", err)
	if err := a.Resign(ctx); err != nil {
		fmt.Println(err)
	}
	<-a.Done()

	b, err := etcdjournal.Campaign(ctx, cli, "/guestward/example", "replica-b")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Resign(ctx)
	fl, _ := b.Journal().InFlight(ctx)
	fmt.Println("b sees in flight:", len(fl), fl[0].OpID, fl[0].State)
	// Output:
	// a appends: <nil>
	// b sees in flight: 1 op-1 started
}
