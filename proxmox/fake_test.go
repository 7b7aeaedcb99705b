package proxmox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

// These tests run the client against the fake Proxmox server of package
// proxmoxtest: real HTTP over TLS, Proxmox's semantics.

func newFake(t *testing.T, opts ...proxmoxtest.Option) (*proxmoxtest.Server, *proxmox.Client) {
	t.Helper()
	srv := proxmoxtest.Start(t, append([]proxmoxtest.Option{
		proxmoxtest.WithAPIToken(proxmox.TestTokenID, proxmox.TestSecret),
	}, opts...)...)
	return srv, fakeClient(t, srv, proxmox.WithAPIToken(proxmox.TestTokenID, proxmox.TestSecret))
}

func fakeClient(t *testing.T, srv *proxmoxtest.Server, opts ...proxmox.Option) *proxmox.Client {
	t.Helper()
	c, err := proxmox.New(srv.URL, append([]proxmox.Option{
		proxmox.WithHTTPClient(srv.Client()),
		proxmox.WithLogger(proxmox.ScannedLogger(t)),
		proxmox.WithRetry(3, time.Millisecond, 2*time.Millisecond),
		proxmox.WithTaskPolling(time.Millisecond, 4*time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func addGuest(t *testing.T, srv *proxmoxtest.Server, spec proxmoxtest.GuestSpec) proxmox.Ref {
	t.Helper()
	if err := srv.AddGuest(spec); err != nil {
		t.Fatal(err)
	}
	node := spec.Node
	if node == "" {
		node = srv.Nodes()[0]
	}
	return proxmox.Ref{Node: node, Type: spec.Type, VMID: spec.VMID}
}

// must fails the test on err, after scanning it for secrets.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(proxmox.CheckErr(t, err))
	}
}

// waiter returns a function that takes a write's (UPID, error), runs the
// task to its end with c and requires success: done(c.Start(ctx, ref)).
func waiter(t *testing.T, c *proxmox.Client) func(proxmox.UPID, error) proxmox.TaskStatus {
	return func(upid proxmox.UPID, err error) proxmox.TaskStatus {
		t.Helper()
		must(t, err)
		if upid == "" {
			t.Fatal("no UPID")
		}
		st, err := c.WaitTask(context.Background(), upid)
		must(t, err)
		return st
	}
}

func isErr(t *testing.T, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want %v", targets)
	}
	proxmox.CheckErr(t, err)
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Errorf("error %q does not match %v", err, target)
		}
	}
}

func TestFakeQEMULifecycle(t *testing.T) {
	srv, c := newFake(t)
	done := waiter(t, c)
	ctx := context.Background()
	ref := addGuest(t, srv, proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{
		"name": "web", "cores": "2", "memory": "2048", "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0", "tags": "a;b",
	}})

	guests, err := c.Guests(ctx)
	must(t, err)
	if len(guests) != 1 || guests[0].Ref != ref || guests[0].Name != "web" || guests[0].Status != "stopped" ||
		strings.Join(guests[0].Tags, ",") != "a,b" || guests[0].Template {
		t.Fatalf("Guests = %+v", guests)
	}

	cfg, err := c.Config(ctx, ref)
	must(t, err)
	raw, _ := srv.Guest(ref)
	if cfg.Values["cores"] != "2" || cfg.Values["memory"] != "2048" || cfg.Digest != raw.Digest || len(cfg.Digest) != 40 {
		t.Fatalf("Config = %+v (server digest %s)", cfg, raw.Digest)
	}

	// QEMU config writes are tasks; Proxmox rewrites tags and trims the
	// description.
	upid, err := c.SetConfig(ctx, ref, proxmox.ConfigChange{
		Set: map[string]string{"tags": "Prod,db", "description": "hello\n"}, Digest: cfg.Digest,
	})
	st := done(upid, err)
	if st.Type != "qmconfig" {
		t.Errorf("task type %q", st.Type)
	}
	cfg, err = c.Config(ctx, ref)
	must(t, err)
	if cfg.Values["tags"] != "db;prod" || cfg.Values["description"] != "hello" {
		t.Errorf("after write: tags %q description %q", cfg.Values["tags"], cfg.Values["description"])
	}

	done(c.Start(ctx, ref))
	gs, err := c.Status(ctx, ref)
	must(t, err)
	if !gs.Running() || srv.TaskCount(ref, "qmstart") != 1 {
		t.Fatalf("after start: %+v, %d qmstart tasks", gs, srv.TaskCount(ref, "qmstart"))
	}

	// cores cannot change live: pending until the next restart.
	done(c.SetConfig(ctx, ref, proxmox.ConfigChange{Set: map[string]string{"cores": "4"}}))
	merged, err := c.Config(ctx, ref)
	must(t, err)
	current, err := c.CurrentConfig(ctx, ref)
	must(t, err)
	pending, err := c.Pending(ctx, ref)
	must(t, err)
	if merged.Values["cores"] != "4" || current.Values["cores"] != "2" || merged.Digest != current.Digest {
		t.Fatalf("merged cores %q, current cores %q", merged.Values["cores"], current.Values["cores"])
	}
	var pendingKeys []string
	for _, p := range pending {
		if p.IsPending() {
			pendingKeys = append(pendingKeys, p.Key)
			if p.Key != "cores" || p.Value != "2" || p.Pending != "4" {
				t.Errorf("pending item %+v", p)
			}
		}
	}
	if len(pendingKeys) != 1 {
		t.Fatalf("pending keys %v", pendingKeys)
	}

	// A reboot applies pending changes.
	done(c.Reboot(ctx, ref))
	pending, err = c.Pending(ctx, ref)
	must(t, err)
	for _, p := range pending {
		if p.IsPending() {
			t.Errorf("still pending after reboot: %+v", p)
		}
	}

	done(c.Shutdown(ctx, ref, 30*time.Second))
	gs, err = c.Status(ctx, ref)
	must(t, err)
	if gs.Running() {
		t.Fatal("running after shutdown")
	}
	// Stopping a stopped VM is a successful no-op task.
	done(c.Stop(ctx, ref))
}

func TestFakeLXCIsSynchronous(t *testing.T) {
	srv, c := newFake(t)
	done := waiter(t, c)
	ctx := context.Background()
	ref := addGuest(t, srv, proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{
		"hostname": "ct", "memory": "512", "cores": "1", "ostype": "debian", "onboot": "1",
	}})
	upid, err := c.SetConfig(ctx, ref, proxmox.ConfigChange{Set: map[string]string{"cores": "2"}, Delete: []string{"onboot"}})
	must(t, err)
	if upid != "" {
		t.Fatalf("LXC SetConfig returned UPID %q; it is synchronous", upid)
	}
	raw, _ := srv.Guest(ref)
	if _, ok := raw.Config["onboot"]; raw.Config["cores"] != "2" || ok {
		t.Fatalf("not applied on return: %+v", raw.Config)
	}
	if n := srv.TaskCount(ref, ""); n != 0 {
		t.Fatalf("%d tasks for a synchronous write", n)
	}

	done(c.Start(ctx, ref))
	_, err = c.Start(ctx, ref)
	isErr(t, err, proxmox.ErrAlreadyRunning)
	done(c.Stop(ctx, ref))
	_, err = c.Stop(ctx, ref)
	isErr(t, err, proxmox.ErrNotRunning)
	_, err = c.Shutdown(ctx, ref, 0)
	isErr(t, err, proxmox.ErrNotRunning)
}

// TestFakeDigestRace: another writer changes the config between our read
// and our write; every version's spelling of the refusal is recognised.
func TestFakeDigestRace(t *testing.T) {
	for _, version := range []string{proxmoxtest.PVE74, proxmoxtest.PVE83, proxmoxtest.PVE90} {
		for _, typ := range []proxmox.GuestType{proxmox.QEMU, proxmox.LXC} {
			t.Run(version+"/"+string(typ), func(t *testing.T) {
				srv, c := newFake(t, proxmoxtest.WithVersion(version))
				ctx := context.Background()
				spec := proxmoxtest.GuestSpec{Type: typ, VMID: 100, Config: map[string]string{"cores": "1", "memory": "1024"}}
				if typ == proxmox.LXC {
					spec.Config["hostname"] = "ct"
				}
				ref := addGuest(t, srv, spec)
				cfg, err := c.Config(ctx, ref)
				must(t, err)
				method := "POST"
				if typ == proxmox.LXC {
					method = "PUT"
				}
				srv.Inject(proxmoxtest.Fault{Method: method, Path: "/nodes/*/*/100/config", Times: 1, Before: func() {
					if err := srv.UpdateConfig(ref, map[string]string{"description": "other writer"}, nil); err != nil {
						t.Error(err)
					}
				}})
				_, err = c.SetConfig(ctx, ref, proxmox.ConfigChange{Set: map[string]string{"cores": "3"}, Digest: cfg.Digest})
				isErr(t, err, proxmox.ErrDigestMismatch)
				if errors.Is(err, proxmox.ErrTransient) {
					t.Error("a digest mismatch is not transient: re-read and re-plan")
				}
				raw, _ := srv.Guest(ref)
				if raw.Config["cores"] != "1" {
					t.Fatalf("write went through: %+v", raw.Config)
				}
			})
		}
	}
}

func TestFakeLockedGuest(t *testing.T) {
	srv, c := newFake(t)
	ctx := context.Background()
	for _, typ := range []proxmox.GuestType{proxmox.QEMU, proxmox.LXC} {
		spec := proxmoxtest.GuestSpec{Type: typ, VMID: 100, Config: map[string]string{"memory": "512"}, Lock: "backup"}
		if typ == proxmox.LXC {
			spec.VMID = 200
			spec.Config["hostname"] = "ct"
		}
		ref := addGuest(t, srv, spec)
		_, err := c.SetConfig(ctx, ref, proxmox.ConfigChange{Set: map[string]string{"cores": "2"}})
		isErr(t, err, proxmox.ErrLocked)
		// A start reports the lock in the task (or, on some versions,
		// synchronously); the class is the same either way.
		upid, err := c.Start(ctx, ref)
		if err == nil {
			_, err = c.WaitTask(ctx, upid)
			isErr(t, err, proxmox.ErrTaskFailed)
		}
		isErr(t, err, proxmox.ErrLocked)
	}
}

func TestFakeMissingGuest(t *testing.T) {
	srv, c := newFake(t)
	ctx := context.Background()
	missing := proxmox.Ref{Node: srv.Nodes()[0], Type: proxmox.QEMU, VMID: 4242}
	_, err := c.Config(ctx, missing)
	isErr(t, err, proxmox.ErrNotFound)
	_, err = c.Status(ctx, missing)
	isErr(t, err, proxmox.ErrNotFound)
	upid, err := c.Start(ctx, missing)
	if err == nil {
		_, err = c.WaitTask(ctx, upid)
	}
	isErr(t, err, proxmox.ErrNotFound)
}

// TestFakeDroppedWrite is the crash-recovery story: a start whose answer
// is lost is not sent again; the task it started is found by listing the
// node's tasks.
func TestFakeDroppedWrite(t *testing.T) {
	for name, mode := range map[string]proxmoxtest.DropMode{"after handling": proxmoxtest.DropAfterHandling, "before handling": proxmoxtest.DropBeforeHandling} {
		t.Run(name, func(t *testing.T) {
			srv, c := newFake(t)
			ctx := context.Background()
			ref := addGuest(t, srv, proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
			before := time.Now().Add(-time.Second)
			h := srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", Drop: mode, Times: 1})
			_, err := c.Start(ctx, ref)
			isErr(t, err, proxmox.ErrOutcomeUnknown)
			if h.Hits() != 1 {
				t.Fatalf("fault hit %d times: the write was resent", h.Hits())
			}
			tasks, err := c.Tasks(ctx, ref.Node, proxmox.TaskFilter{VMID: 100, Type: "qmstart", Since: before})
			must(t, err)
			want := 0
			if mode == proxmoxtest.DropAfterHandling {
				want = 1
			}
			if len(tasks) != want || srv.TaskCount(ref, "qmstart") != want {
				t.Fatalf("found %d tasks, server ran %d, want %d", len(tasks), srv.TaskCount(ref, "qmstart"), want)
			}
			if want == 1 {
				st, err := c.WaitTask(ctx, tasks[0].UPID)
				must(t, err)
				if !st.Succeeded() {
					t.Fatalf("recovered task %+v", st)
				}
			}
		})
	}
}

func TestFakeReadRetries(t *testing.T) {
	srv, c := newFake(t)
	ref := addGuest(t, srv, proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"cores": "2"}})
	drop := srv.Inject(proxmoxtest.Fault{Method: "GET", Path: "/nodes/*/qemu/100/config", Drop: proxmoxtest.DropBeforeHandling, Times: 2})
	cfg, err := c.Config(context.Background(), ref)
	must(t, err)
	if cfg.Values["cores"] != "2" || drop.Hits() != 2 {
		t.Fatalf("cores %q after %d drops", cfg.Values["cores"], drop.Hits())
	}
	proxy := srv.Inject(proxmoxtest.Fault{Method: "GET", Path: "/nodes/*/qemu/100/config", Status: 595, Message: "No route to host", Times: 1})
	_, err = c.Config(context.Background(), ref)
	must(t, err)
	if proxy.Hits() != 1 {
		t.Fatalf("595 hits %d", proxy.Hits())
	}
}

func TestFakeNodeOffline(t *testing.T) {
	srv, c := newFake(t, proxmoxtest.WithNodes("pve1", "pve2"))
	done := waiter(t, c)
	ref := addGuest(t, srv, proxmoxtest.GuestSpec{Node: "pve2", Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"cores": "2"}})
	must(t, srv.SetNodeOnline("pve2", false))
	ctx := context.Background()
	_, err := c.Config(ctx, ref)
	isErr(t, err, proxmox.ErrTransient)
	// 595 means the proxying node never reached pve2: a write is resent,
	// and still nothing runs.
	_, err = c.Start(ctx, ref)
	isErr(t, err, proxmox.ErrTransient)
	if errors.Is(err, proxmox.ErrOutcomeUnknown) {
		t.Error("595: nothing was executed, the outcome is known")
	}
	if n := srv.TaskCount(ref, ""); n != 0 {
		t.Fatalf("%d tasks ran on an offline node", n)
	}
	must(t, srv.SetNodeOnline("pve2", true))
	done(c.Start(ctx, ref))
}

func TestFakeTaskVisibilityDelay(t *testing.T) {
	srv, c := newFake(t, proxmoxtest.WithTaskVisibilityDelay(3))
	done := waiter(t, c)
	ref := addGuest(t, srv, proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	done(c.Start(context.Background(), ref))
}

func TestFakeTaskFailureAndWarnings(t *testing.T) {
	srv, c := newFake(t)
	done := waiter(t, c)
	ctx := context.Background()
	ref := addGuest(t, srv, proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/start", TaskWarnings: 2, Times: 1})
	st := done(c.Start(ctx, ref))
	if st.Warnings() < 2 {
		t.Fatalf("warnings %d, exit %q", st.Warnings(), st.ExitStatus)
	}
	srv.Inject(proxmoxtest.Fault{Method: "POST", Path: "/nodes/*/qemu/100/status/stop", TaskError: "VM quit/powerdown failed - got timeout", Times: 1})
	upid, err := c.Stop(ctx, ref)
	must(t, err)
	st, err = c.WaitTask(ctx, upid)
	isErr(t, err, proxmox.ErrTaskFailed)
	var te *proxmox.TaskError
	if !errors.As(err, &te) || te.UPID != upid || te.ExitStatus != "VM quit/powerdown failed - got timeout" || st.ExitStatus != te.ExitStatus {
		t.Fatalf("TaskError %#v, status %+v", te, st)
	}
}

func TestFakeTicketAuth(t *testing.T) {
	clk := proxmoxtest.NewManualClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	srv := proxmoxtest.Start(t, proxmoxtest.WithUser("root@pam", proxmox.TestPassword), proxmoxtest.WithClock(clk))
	c := fakeClient(t, srv, proxmox.WithPassword("root@pam", proxmox.TestPassword), proxmox.WithClock(clk.Now))
	done := waiter(t, c)
	ref := addGuest(t, srv, proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	ctx := context.Background()
	logins := func() int {
		n := 0
		for _, r := range srv.Requests() {
			if r.Path == "/access/ticket" && r.Status == 200 {
				n++
			}
			proxmox.AssertNoSecret(t, "fake request log", fmt.Sprintf("%+v", r))
		}
		return n
	}
	_, err := c.Version(ctx)
	must(t, err)
	done(c.Start(ctx, ref)) // a write: needs the CSRF token
	clk.Advance(61 * time.Minute)
	_, err = c.Version(ctx)
	must(t, err)
	if n := logins(); n != 2 {
		t.Fatalf("%d logins, want 2 (renewed after an hour)", n)
	}
	clk.Advance(5 * time.Hour) // every ticket long expired
	done(c.Stop(ctx, ref))
	if n := logins(); n != 3 {
		t.Fatalf("%d logins, want 3", n)
	}

	bad := fakeClient(t, srv, proxmox.WithPassword("root@pam", "not-"+proxmox.TestPassword))
	_, err = bad.Version(ctx)
	isErr(t, err, proxmox.ErrUnauthorized)
}

func TestFakeTokenRefused(t *testing.T) {
	srv, _ := newFake(t)
	c := fakeClient(t, srv, proxmox.WithAPIToken(proxmox.TestTokenID, "0000-"+proxmox.TestSecret))
	_, err := c.Guests(context.Background())
	isErr(t, err, proxmox.ErrUnauthorized)
	must(t, srv.SetAPITokenExpired(proxmox.TestTokenID, true))
	c = fakeClient(t, srv, proxmox.WithAPIToken(proxmox.TestTokenID, proxmox.TestSecret))
	_, err = c.Guests(context.Background())
	isErr(t, err, proxmox.ErrUnauthorized)
}

// TestFakeVersionTyping: the same guest reads the same through every
// emulated release's typing.
func TestFakeVersionTyping(t *testing.T) {
	for _, v := range []string{proxmoxtest.PVE74, proxmoxtest.PVE80, proxmoxtest.PVE81, proxmoxtest.PVE82, proxmoxtest.PVE83, proxmoxtest.PVE90} {
		t.Run(v, func(t *testing.T) {
			srv, c := newFake(t, proxmoxtest.WithVersion(v))
			ctx := context.Background()
			q := addGuest(t, srv, proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "2048", "cores": "2", "onboot": "1", "cpulimit": "0.5"}})
			l := addGuest(t, srv, proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 101, Config: map[string]string{"hostname": "ct", "memory": "512"}, Template: true})
			cfg, err := c.Config(ctx, q)
			must(t, err)
			for k, want := range map[string]string{"memory": "2048", "cores": "2", "onboot": "1", "cpulimit": "0.5"} {
				if cfg.Values[k] != want {
					t.Errorf("%s = %q, want %q", k, cfg.Values[k], want)
				}
			}
			guests, err := c.Guests(ctx)
			must(t, err)
			if len(guests) != 2 || guests[0].Ref != q || guests[1].Ref != l || !guests[1].Template {
				t.Fatalf("Guests = %+v", guests)
			}
			info, err := c.Version(ctx)
			must(t, err)
			if info.Version != v && !strings.HasPrefix(v, info.Version) {
				t.Errorf("Version = %+v, want %s", info, v)
			}
		})
	}
}

func TestFakeFingerprintPinning(t *testing.T) {
	srv := proxmoxtest.Start(t, proxmoxtest.WithAPIToken(proxmox.TestTokenID, proxmox.TestSecret))
	c, err := proxmox.New(srv.URL, proxmox.WithAPIToken(proxmox.TestTokenID, proxmox.TestSecret), proxmox.WithFingerprint(srv.Fingerprint()))
	must(t, err)
	defer c.CloseIdleConnections()
	_, err = c.Version(context.Background())
	must(t, err)
	// Still usable after dropping its connections.
	c.CloseIdleConnections()
	_, err = c.Version(context.Background())
	must(t, err)
}

// TestFakeConcurrentClient drives one client from many goroutines, each
// on its own guests, with digest-guarded writes.
func TestFakeConcurrentClient(t *testing.T) {
	srv, c := newFake(t)
	ctx := context.Background()
	var refs []proxmox.Ref
	for i := range 16 {
		typ := proxmox.QEMU
		spec := proxmoxtest.GuestSpec{Type: typ, VMID: 100 + i, Config: map[string]string{"cores": "1", "memory": "512"}}
		if i%2 == 1 {
			spec.Type = proxmox.LXC
			spec.Config["hostname"] = fmt.Sprintf("ct%d", i)
		}
		refs = append(refs, addGuest(t, srv, spec))
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(refs))
	for _, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				for round := 2; round <= 4; round++ {
					cfg, err := c.Config(ctx, ref)
					if err != nil {
						return err
					}
					upid, err := c.SetConfig(ctx, ref, proxmox.ConfigChange{Set: map[string]string{"cores": fmt.Sprint(round)}, Digest: cfg.Digest})
					if err != nil {
						return err
					}
					if upid != "" {
						if _, err := c.WaitTask(ctx, upid); err != nil {
							return err
						}
					}
				}
				upid, err := c.Start(ctx, ref)
				if err != nil {
					return err
				}
				_, err = c.WaitTask(ctx, upid)
				return err
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	for _, ref := range refs {
		raw, _ := srv.Guest(ref)
		if raw.Config["cores"] != "4" || !raw.Running {
			t.Errorf("%s: cores %q running %v", ref, raw.Config["cores"], raw.Running)
		}
	}
}
