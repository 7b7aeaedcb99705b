package reconcile_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

func qemu(vmid int) proxmox.Ref { return proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: vmid} }
func lxc(vmid int) proxmox.Ref  { return proxmox.Ref{Node: "pve1", Type: proxmox.LXC, VMID: vmid} }

// fixture is a fake cluster, a client for it, a journal and an engine.
type fixture struct {
	t      *testing.T
	srv    *proxmoxtest.Server
	client *proxmox.Client
	j      journal.Journal
	prov   *reconcile.StaticProvider
	eng    *reconcile.Engine
	// opts are the options the fixture was made with; engines made
	// later (a restart) get them too.
	opts []fixtureOpt
}

type fixtureOpt func(*reconcile.Config)

func newFixture(t *testing.T, srvOpts []proxmoxtest.Option, opts ...fixtureOpt) *fixture {
	t.Helper()
	srvOpts = append([]proxmoxtest.Option{proxmoxtest.WithNodes("pve1", "pve2"), proxmoxtest.WithSeed(1)}, srvOpts...)
	srv := proxmoxtest.Start(t, srvOpts...)
	c := newClient(t, srv)
	f := &fixture{t: t, srv: srv, client: c, j: journal.NewMemory(), opts: opts}
	f.prov, _ = reconcile.NewStaticProvider(nil)
	f.eng = f.newEngine(f.j)
	return f
}

func newClient(t *testing.T, srv *proxmoxtest.Server) *proxmox.Client {
	t.Helper()
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
	return c
}

// newEngine makes another engine on the same cluster and provider, as a
// restarted process would.
func (f *fixture) newEngine(j journal.Journal, opts ...fixtureOpt) *reconcile.Engine {
	f.t.Helper()
	cfg := reconcile.Config{
		Proxmox:     f.client,
		Journal:     j,
		Provider:    f.prov,
		Concurrency: 4,
		RetryMin:    time.Millisecond,
		RetryMax:    5 * time.Millisecond,
		SettleDelay: time.Millisecond,
	}
	for _, o := range append(slices.Clip(f.opts), opts...) {
		o(&cfg)
	}
	e, err := reconcile.NewEngine(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

func (f *fixture) add(spec proxmoxtest.GuestSpec) {
	f.t.Helper()
	if spec.Node == "" {
		spec.Node = "pve1"
	}
	if err := f.srv.AddGuest(spec); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) desire(ds ...reconcile.Desired) {
	f.t.Helper()
	if err := f.prov.Set(ds); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) pass() reconcile.Report {
	f.t.Helper()
	rep, err := f.eng.ReconcileOnce(ctxT(f.t))
	if err != nil {
		f.t.Fatalf("pass: %v", err)
	}
	return rep
}

func (f *fixture) guest(ref proxmox.Ref) proxmoxtest.GuestState {
	f.t.Helper()
	g, ok := f.srv.Guest(ref)
	if !ok {
		f.t.Fatalf("no guest %s", ref)
	}
	return g
}

// writes counts the requests that could change something.
func (f *fixture) writes() int {
	n := 0
	for _, r := range f.srv.Requests() {
		if r.Method != "GET" {
			n++
		}
	}
	return n
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func outcome(rep reconcile.Report, ref proxmox.Ref) reconcile.GuestReport {
	for _, g := range rep.Guests {
		if g.Ref == ref {
			return g
		}
	}
	return reconcile.GuestReport{}
}

// allowIrreversible lets the engine's passes perform irreversible actions
// (resizes), for tests of those actions rather than of the gate.
func allowIrreversible(c *reconcile.Config) { c.AllowIrreversible = true }
