package etcdjournal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// Two replicas split a fleet of two nodes into two shards, each leading
// one; the leader of one dies after sending a start whose task it never
// journaled; the other replica, its standby, takes the shard over, and its
// engine finds the task instead of starting the guest again, and never
// touches the other shard's guests.
func TestShardsSplitAndMoveOnFailover(t *testing.T) {
	srv := proxmoxtest.Start(t, proxmoxtest.WithNodes("pve1", "pve2"), proxmoxtest.WithSeed(1))
	px, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()),
		proxmox.WithTaskPolling(time.Millisecond, 5*time.Millisecond), proxmox.WithRetry(2, time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.CloseIdleConnections)
	onA := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}
	onB := proxmox.Ref{Node: "pve2", Type: proxmox.QEMU, VMID: 300}
	var desired []reconcile.Desired
	for _, ref := range []proxmox.Ref{onA, onB} {
		if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID, Config: map[string]string{"memory": "512"}}); err != nil {
			t.Fatal(err)
		}
		desired = append(desired, reconcile.Desired{Ref: ref, Power: reconcile.PowerRunning})
	}
	fleet, err := reconcile.NewStaticProvider(desired)
	if err != nil {
		t.Fatal(err)
	}
	engine := func(ld *Leader, node string) *reconcile.Engine {
		e, err := reconcile.NewEngine(reconcile.Config{Proxmox: px, Journal: ld.Journal(), Provider: NodeProvider(fleet, node), Nodes: []string{node},
			RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond, SettleDelay: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}

	prefix := newPrefix(t)
	ctx := ctxT(t, 2*time.Minute)
	pauseB := make(chan struct{})
	a := campaignShard(t, ctx, prefix, "a", "replica-a")
	b := campaignShard(t, ctx, prefix, "b", "replica-b", withPause(pauseB))
	// replica-a stands by for shard b, behind replica-b.
	standby := make(chan *Leader, 1)
	cliA := newClient(t)
	go func() {
		ld, err := CampaignShard(ctx, cliA, prefix, "b", "replica-a", WithTTL(testTTL))
		if err != nil {
			t.Errorf("standby campaign: %v", err)
		}
		standby <- ld
	}()
	waitCandidates(t, b, 2)

	// Each shard's leader acts on its own nodes only.
	rep, err := engine(a, "pve1").ReconcileOnce(ctx)
	if err != nil || len(rep.Guests) != 1 || rep.Guests[0].Ref != onA {
		t.Fatalf("shard a's pass: %v\n%s", err, rep)
	}
	// A one-shot for shard b's guest, sent to shard a's engine, is
	// refused: it would run under a second journal.
	if _, err := engine(a, "pve1").Apply(ctx, reconcile.OneShot{Key: "wrong-shard", Ref: onB, Kind: reconcile.ActionStart}); !errors.Is(err, reconcile.ErrNotInScope) {
		t.Fatalf("one-shot for another shard's guest: %v", err)
	}
	var once sync.Once
	eb := engine(b, "pve2")
	fp := new(failpoint.Set)
	fp.Enable(checkpoint.AfterCall, func() error {
		kill(t, b, pauseB, &once)
		return errCrash
	})
	ctxB, cancelB := b.Context(ctx)
	_, err = eb.ReconcileOnce(checkpoint.With(ctxB, fp))
	cancelB()
	if err != nil && !errors.Is(err, ErrNotLeader) && !errors.Is(err, context.Canceled) {
		t.Fatalf("shard b's pass: %v", err)
	}
	if err := srv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if n := srv.TaskCount(onB, "qmstart"); n != 1 {
		t.Fatalf("%d starts of %s before the failover, want the one replica-b sent", n, onB)
	}

	// The standby takes shard b over and recovers replica-b's operation once.
	var a2 *Leader
	select {
	case a2 = <-standby:
		if a2 == nil {
			t.FailNow()
		}
		t.Cleanup(func() { a2.Resign(context.Background()) })
	case <-time.After(time.Minute):
		t.Fatal("replica-a did not take shard b over")
	}
	eb2 := engine(a2, "pve2")
	ctxA2, cancelA2 := a2.Context(ctx)
	defer cancelA2()
	rec, err := eb2.Recover(ctxA2)
	if err != nil || len(rec.Ops) != 1 || rec.Ops[0].Ref != onB || rec.Ops[0].To == "" {
		t.Fatalf("shard b's Recover by replica-a: %v %+v; want replica-b's start of %s resolved", err, rec.Ops, onB)
	}
	if rec, err := eb2.Recover(ctxA2); err != nil || len(rec.Ops) != 0 {
		t.Fatalf("second Recover: %v %+v; want nothing left", err, rec.Ops)
	}
	rep, err = eb2.ReconcileOnce(ctxA2)
	if err != nil || !rep.Converged() || len(rep.Guests) != 1 {
		t.Fatalf("shard b's pass by replica-a: %v\n%s", err, rep)
	}
	if err := srv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []proxmox.Ref{onA, onB} {
		if n := srv.TaskCount(ref, "qmstart"); n != 1 {
			t.Errorf("%s: %d starts, want exactly 1", ref, n)
		}
		if g, _ := srv.Guest(ref); !g.Running {
			t.Errorf("%s not running", ref)
		}
	}
	// Each shard's journal holds its own guests' operations only.
	for _, tc := range []struct {
		ld   *Leader
		vmid int
	}{{a, onA.VMID}, {a2, onB.VMID}} {
		ops, err := tc.ld.EtcdJournal().Ops(ctx)
		if err != nil || len(ops) == 0 {
			t.Fatalf("%s: %v %+v", tc.ld.EtcdJournal().Prefix(), err, ops)
		}
		for _, op := range ops {
			if op.VMID != tc.vmid {
				t.Errorf("%s holds %+v, want only guest %d's operations", tc.ld.EtcdJournal().Prefix(), op, tc.vmid)
			}
		}
	}
}

func campaignShard(t *testing.T, ctx context.Context, prefix, shard, id string, opts ...Option) *Leader {
	t.Helper()
	ld, err := CampaignShard(ctx, newClient(t), prefix, shard, id, append([]Option{WithTTL(testTTL)}, opts...)...)
	if err != nil {
		t.Fatalf("CampaignShard(%s, %s): %v", shard, id, err)
	}
	t.Cleanup(func() { ld.Resign(context.Background()) })
	return ld
}

func TestShardPrefix(t *testing.T) {
	for _, tc := range []struct {
		name, prefix, shard, want string
		err                       bool
		reason                    string
	}{
		{"plain", "/gw/fleet", "eu-1", "/gw/fleet/shard/eu-1", false, "a shard is a journal of its own under the fleet's prefix"},
		{"trailing slash", "/gw/fleet/", "a", "/gw/fleet/shard/a", false, "the prefix is trimmed as Open trims it"},
		{"empty shard", "/gw", "", "", true, "an empty name would make the shards' journals nest"},
		{"slash", "/gw", "a/op", "", true, "a slash would let a shard name reach into another shard's keys"},
		{"space", "/gw", "a b", "", true, "names are for keys and logs; a space hides in both"},
		{"control", "/gw", "a\x00", "", true, "a NUL in a key is a trap for every tool"},
		{"too long", "/gw", strings.Repeat("x", MaxShardLen+1), "", true, "bounded like every other name"},
		{"empty prefix", "/", "a", "", true, "a shard needs a fleet prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ShardPrefix(tc.prefix, tc.shard)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("ShardPrefix(%q, %q) = %q, %v; want %q, error %v: %s", tc.prefix, tc.shard, got, err, tc.want, tc.err, tc.reason)
			}
			if tc.err && tc.shard != "a" && !errors.Is(err, ErrBadShard) {
				t.Fatalf("error %v, want ErrBadShard", err)
			}
		})
	}
	if _, err := CampaignShard(t.Context(), newClient(t), "/gw", "a/b", "x"); !errors.Is(err, ErrBadShard) {
		t.Fatalf("CampaignShard with a bad shard: %v, want ErrBadShard", err)
	}
}

type providerFunc func(context.Context) ([]reconcile.Desired, error)

func (f providerFunc) Desired(ctx context.Context) ([]reconcile.Desired, error) { return f(ctx) }

func TestNodeProvider(t *testing.T) {
	d := func(node string, vmid int) reconcile.Desired {
		return reconcile.Desired{Ref: proxmox.Ref{Node: node, Type: proxmox.QEMU, VMID: vmid}, Power: reconcile.PowerRunning}
	}
	all := []reconcile.Desired{d("pve1", 100), d("pve2", 200), d("pve3", 300), d("PVE1", 400)}
	stale := fmt.Errorf("old copy: %w", reconcile.ErrStale)
	for _, tc := range []struct {
		name    string
		inner   reconcile.DesiredProvider
		nodes   []string
		want    []int
		wantErr error
		reason  string
	}{
		{"one node", providerFunc(func(context.Context) ([]reconcile.Desired, error) { return all, nil }), []string{"pve1"}, []int{100}, nil, "node names are compared exactly, as Proxmox names nodes"},
		{"two nodes", providerFunc(func(context.Context) ([]reconcile.Desired, error) { return all, nil }), []string{"pve3", "pve2"}, []int{200, 300}, nil, "order is the inner provider's"},
		{"no node", providerFunc(func(context.Context) ([]reconcile.Desired, error) { return all, nil }), nil, []int{}, nil, "a shard without nodes manages nothing"},
		{"stale", providerFunc(func(context.Context) ([]reconcile.Desired, error) { return all, stale }), []string{"pve2"}, []int{200}, reconcile.ErrStale, "a stale state is passed on, filtered, with its error"},
		{"failed", providerFunc(func(context.Context) ([]reconcile.Desired, error) { return nil, errors.New("down") }), []string{"pve2"}, nil, nil, "an unknown state stays unknown"},
		{"nil inner", nil, []string{"pve1"}, nil, nil, "no provider is an error, not a panic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NodeProvider(tc.inner, tc.nodes...).Desired(t.Context())
			if tc.want == nil {
				if err == nil || got != nil {
					t.Fatalf("%+v, %v; want nil and an error: %s", got, err, tc.reason)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("error %v, want %v: %s", err, tc.wantErr, tc.reason)
			}
			var ids []int
			for _, g := range got {
				ids = append(ids, g.Ref.VMID)
			}
			if got == nil || fmt.Sprint(ids) != fmt.Sprint(tc.want) && !(len(ids) == 0 && len(tc.want) == 0) {
				t.Fatalf("%v, want %v: %s", ids, tc.want, tc.reason)
			}
		})
	}
}
