package proxmoxtest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

// These tests drive the fake with the real client of package proxmox. The
// fake's own behaviour is tested with raw HTTP in package proxmoxtest; here
// the point is that the two agree end to end.

func client(t *testing.T, srv *proxmoxtest.Server) *proxmox.Client {
	t.Helper()
	c, err := proxmox.New(srv.URL,
		proxmox.WithAPIToken(srv.APIToken()),
		proxmox.WithFingerprint(srv.Fingerprint()),
		proxmox.WithTaskPolling(time.Millisecond, 5*time.Millisecond),
		proxmox.WithRetry(2, time.Millisecond, 2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestClientSeesPendingRules(t *testing.T) {
	srv := proxmoxtest.Start(t)
	ref := proxmox.Ref{Node: "pve", Type: proxmox.QEMU, VMID: 100}
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID, Running: true,
		Config: map[string]string{"cores": "2", "memory": "2048"}}); err != nil {
		t.Fatal(err)
	}
	c := client(t, srv)
	ctx := context.Background()
	cfg, err := c.Config(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	upid, err := c.SetConfig(ctx, ref, proxmox.ConfigChange{
		Set:    map[string]string{"cores": "4", "net0": "virtio,bridge=vmbr0", "tags": "B;a"},
		Digest: cfg.Digest,
	})
	if err != nil || upid == "" {
		t.Fatalf("SetConfig: %q %v", upid, err)
	}
	if _, err := c.WaitTask(ctx, upid); err != nil {
		t.Fatal(err)
	}
	merged, err := c.Config(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	current, err := c.CurrentConfig(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if merged.Values["cores"] != "4" || current.Values["cores"] != "2" {
		t.Errorf("cores merged %q current %q", merged.Values["cores"], current.Values["cores"])
	}
	if !strings.HasPrefix(current.Values["net0"], "virtio=BC:24:11:") || current.Values["tags"] != "a;b" {
		t.Errorf("hotplugged values %v", current.Values)
	}
	pend, err := c.Pending(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	var cores *proxmox.PendingItem
	for i := range pend {
		if pend[i].Key == "cores" {
			cores = &pend[i]
		}
	}
	if cores == nil || !cores.IsPending() || cores.Value != "2" || cores.Pending != "4" {
		t.Errorf("cores pending item %+v", cores)
	}
	// The old digest is stale now.
	_, err = c.SetConfig(ctx, ref, proxmox.ConfigChange{Set: map[string]string{"cores": "8"}, Digest: cfg.Digest})
	if !errors.Is(err, proxmox.ErrDigestMismatch) {
		t.Errorf("stale digest: %v", err)
	}
}

func TestClientFindsTaskAfterLostAnswer(t *testing.T) {
	srv := proxmoxtest.Start(t, proxmoxtest.WithManualTasks())
	ref := proxmox.Ref{Node: "pve", Type: proxmox.LXC, VMID: 200}
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID,
		Config: map[string]string{"memory": "512"}}); err != nil {
		t.Fatal(err)
	}
	c := client(t, srv)
	ctx := context.Background()
	since := time.Now().Add(-time.Minute)
	srv.Inject(proxmoxtest.Fault{Method: "POST", Guest: ref, Drop: proxmoxtest.DropAfterHandling, Times: 1})
	if _, err := c.Start(ctx, ref); err == nil {
		t.Fatal("Start succeeded although its answer was lost")
	}
	if n := srv.TaskCount(ref, "vzstart"); n != 1 {
		t.Fatalf("the client re-sent a start: %d vzstart tasks", n)
	}
	tasks, err := c.Tasks(ctx, ref.Node, proxmox.TaskFilter{VMID: ref.VMID, Type: "vzstart", Since: since})
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 1 || !tasks[0].Running {
		t.Fatalf("tasks %+v", tasks)
	}
	srv.FinishTasks()
	st, err := c.WaitTask(ctx, tasks[0].UPID)
	if err != nil || st.ExitStatus != "OK" {
		t.Fatalf("WaitTask: %+v %v", st, err)
	}
	if g, _ := srv.Guest(ref); !g.Running {
		t.Fatal("container not running")
	}
}
