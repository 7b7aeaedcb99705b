package etcdjournal

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fleet is a fake Proxmox cluster with a declared state, shared by the
// replicas of a test.
type fleet struct {
	t      *testing.T
	srv    *proxmoxtest.Server
	client *proxmox.Client
	prov   *reconcile.StaticProvider
	// tasks maps each guest that needs a task to the task type.
	tasks map[proxmox.Ref]string
}

func qemu(vmid int) proxmox.Ref { return proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: vmid} }
func lxc(vmid int) proxmox.Ref  { return proxmox.Ref{Node: "pve1", Type: proxmox.LXC, VMID: vmid} }

// newFleet declares one action of each shape: a QEMU start and a QEMU
// config change (tasks), an LXC config change (synchronous) and an LXC
// stop.
func newFleet(t *testing.T, opts ...proxmoxtest.Option) *fleet {
	t.Helper()
	srv := proxmoxtest.Start(t, append([]proxmoxtest.Option{proxmoxtest.WithNodes("pve1"), proxmoxtest.WithSeed(1)}, opts...)...)
	c, err := proxmox.New(srv.URL,
		proxmox.WithHTTPClient(srv.Client()),
		proxmox.WithAPIToken(srv.APIToken()),
		proxmox.WithTaskPolling(time.Millisecond, 5*time.Millisecond),
		proxmox.WithRetry(2, time.Millisecond, 5*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	f := &fleet{t: t, srv: srv, client: c}
	for _, g := range []proxmoxtest.GuestSpec{
		{Node: "pve1", Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}},
		{Node: "pve1", Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"memory": "512"}},
		{Node: "pve1", Type: proxmox.LXC, VMID: 200, Config: map[string]string{"memory": "512"}},
		{Node: "pve1", Type: proxmox.LXC, VMID: 201, Running: true, Config: map[string]string{"memory": "512"}},
	} {
		if err := srv.AddGuest(g); err != nil {
			t.Fatal(err)
		}
	}
	f.prov, err = reconcile.NewStaticProvider([]reconcile.Desired{
		{Ref: qemu(100), Power: reconcile.PowerRunning},
		{Ref: qemu(101), Config: map[string]string{"memory": "1024"}},
		{Ref: lxc(200), Config: map[string]string{"memory": "1024"}},
		{Ref: lxc(201), Power: reconcile.PowerStopped},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.tasks = map[proxmox.Ref]string{qemu(100): "qmstart", qemu(101): "qmconfig", lxc(201): "vzstop"}
	return f
}

// engine returns an engine on the fleet writing to ld's journal.
func (f *fleet) engine(ld *Leader) *reconcile.Engine {
	f.t.Helper()
	e, err := reconcile.NewEngine(reconcile.Config{
		Proxmox:     f.client,
		Journal:     ld.Journal(),
		Provider:    f.prov,
		Concurrency: 4,
		RetryMin:    time.Millisecond,
		RetryMax:    5 * time.Millisecond,
		SettleDelay: time.Millisecond,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

// writes counts the requests that could change something.
func (f *fleet) writes() int {
	n := 0
	for _, r := range f.srv.Requests() {
		if r.Method != "GET" {
			n++
		}
	}
	return n
}

// checkOnce checks that every declared change was made by exactly one task
// (or, for the synchronous LXC change, is in place).
func (f *fleet) checkOnce() {
	f.t.Helper()
	if err := f.srv.WaitIdle(ctxT(f.t, 30*time.Second)); err != nil {
		f.t.Fatal(err)
	}
	for ref, typ := range f.tasks {
		if n := f.srv.TaskCount(ref, typ); n != 1 {
			f.t.Errorf("%s: %d %s tasks, want exactly 1", ref, n, typ)
		}
	}
	if g, _ := f.srv.Guest(lxc(200)); g.Config["memory"] != "1024" {
		f.t.Errorf("ct 200 memory %q, want 1024", g.Config["memory"])
	}
	if len(f.srv.Tasks()) != len(f.tasks) {
		f.t.Errorf("%d tasks on the fake, want %d: %+v", len(f.srv.Tasks()), len(f.tasks), f.srv.Tasks())
	}
}

// kill ends ld's life as a crash would, but without waiting for the TTL:
// its background work freezes and its lease is revoked (by another client,
// as etcd's expiry would do).
func kill(t *testing.T, ld *Leader, pause chan struct{}, once *sync.Once) {
	once.Do(func() {
		close(pause)
		cli := newClient(t)
		if _, err := cli.Revoke(context.Background(), ld.Lease()); err != nil {
			t.Errorf("revoke: %v", err)
		}
	})
}

// campaignAsync campaigns for candidate id in the background.
func campaignAsync(t *testing.T, cli *clientv3.Client, prefix, id string, opts ...Option) <-chan *Leader {
	ch := make(chan *Leader, 1)
	go func() {
		ld, err := Campaign(context.Background(), cli, prefix, id, append([]Option{WithTTL(testTTL)}, opts...)...)
		if err != nil {
			t.Errorf("Campaign(%s): %v", id, err)
			close(ch)
			return
		}
		ch <- ld
	}()
	return ch
}

func await(t *testing.T, ch <-chan *Leader, what string) *Leader {
	t.Helper()
	select {
	case ld, ok := <-ch:
		if !ok {
			t.Fatalf("%s: campaign failed", what)
		}
		t.Cleanup(func() { ld.Resign(context.Background()) })
		return ld
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: did not win within a minute", what)
		return nil
	}
}
