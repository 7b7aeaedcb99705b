package proxmox_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

// fakeCluster starts a fake Proxmox VE with a stopped QEMU VM 100 and a
// stopped LXC container 200 on node "pve", and a client for it. A real
// program would call proxmox.New with its cluster's URL, an API token and
// WithFingerprint.
func fakeCluster() (*proxmoxtest.Server, *proxmox.Client) {
	srv, err := proxmoxtest.NewServer()
	if err != nil {
		log.Fatal(err)
	}
	for _, g := range []proxmoxtest.GuestSpec{
		{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"name": "web", "cores": "2", "memory": "2048"}},
		{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"hostname": "db", "cores": "1", "memory": "512"}},
	} {
		if err := srv.AddGuest(g); err != nil {
			log.Fatal(err)
		}
	}
	id, secret := srv.APIToken()
	c, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(id, secret),
		proxmox.WithTaskPolling(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	return srv, c
}

// Connect with an API token, pinning Proxmox's self-signed certificate,
// and list the cluster's guests.
func Example() {
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	_ = srv.AddGuest(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"name": "web", "tags": "prod"}})
	_ = srv.AddGuest(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 101, Config: map[string]string{"hostname": "db"}, Running: true})
	tokenID, secret := srv.APIToken()

	c, err := proxmox.New(srv.URL, // e.g. "https://pve1.example.com:8006"
		proxmox.WithAPIToken(tokenID, secret),
		proxmox.WithFingerprint(srv.Fingerprint()), // as the GUI shows it: "AB:CD:..."
	)
	if err != nil {
		log.Fatal(err)
	}
	guests, err := c.Guests(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	for _, g := range guests {
		fmt.Println(g.Ref, g.Name, g.Status, g.Tags)
	}
	// Output:
	// pve1/qemu/100 web stopped [prod]
	// pve1/lxc/101 db running []
}

// SetConfig is dual-mode: a QEMU change runs as a task, an LXC change is
// done when the call returns.
func ExampleClient_SetConfig() {
	srv, c := fakeCluster()
	defer srv.Close()
	ctx := context.Background()

	vm := proxmox.Ref{Node: "pve", Type: proxmox.QEMU, VMID: 100}
	cfg, err := c.Config(ctx, vm)
	if err != nil {
		log.Fatal(err)
	}
	upid, err := c.SetConfig(ctx, vm, proxmox.ConfigChange{
		Set:    map[string]string{"cores": "4", "tags": "web;prod"},
		Digest: cfg.Digest, // fail with ErrDigestMismatch if someone else wrote meanwhile
	})
	if err != nil {
		log.Fatal(err)
	}
	info, _ := upid.Parse()
	fmt.Println("qemu: task", info.Type)
	if _, err := c.WaitTask(ctx, upid); err != nil {
		log.Fatal(err)
	}

	ct := proxmox.Ref{Node: "pve", Type: proxmox.LXC, VMID: 200}
	upid, err = c.SetConfig(ctx, ct, proxmox.ConfigChange{Set: map[string]string{"cores": "2"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("lxc: task %q\n", upid)

	cfg, _ = c.Config(ctx, vm)
	fmt.Println("cores:", cfg.Values["cores"], "tags:", cfg.Values["tags"])
	// Output:
	// qemu: task qmconfig
	// lxc: task ""
	// cores: 4 tags: prod;web
}

// Start a guest and wait for its task; failures that Proxmox reports
// inside the task are classified like synchronous ones.
func ExampleClient_WaitTask() {
	srv, c := fakeCluster()
	defer srv.Close()
	ctx := context.Background()
	vm := proxmox.Ref{Node: "pve", Type: proxmox.QEMU, VMID: 100}

	upid, err := c.Start(ctx, vm)
	if err != nil {
		log.Fatal(err)
	}
	st, err := c.WaitTask(ctx, upid)
	fmt.Println(st.Type, st.ExitStatus, err)

	// A second start fails inside the task for QEMU.
	upid, _ = c.Start(ctx, vm)
	_, err = c.WaitTask(ctx, upid)
	fmt.Println(errors.Is(err, proxmox.ErrTaskFailed), errors.Is(err, proxmox.ErrAlreadyRunning))
	// Output:
	// qmstart OK <nil>
	// true true
}

// Errors are classified; callers never match text. Here a backup job holds
// the guest's lock.
func ExampleAPIError() {
	srv, c := fakeCluster()
	defer srv.Close()
	ct := proxmox.Ref{Node: "pve", Type: proxmox.LXC, VMID: 200}
	_ = srv.SetLock(ct, "backup")

	_, err := c.SetConfig(context.Background(), ct, proxmox.ConfigChange{Set: map[string]string{"cores": "2"}})
	var apiErr *proxmox.APIError
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.StatusCode, apiErr.Message)
	}
	fmt.Println("locked:", errors.Is(err, proxmox.ErrLocked), "transient:", errors.Is(err, proxmox.ErrTransient))
	// Output:
	// 500 CT is locked (backup)
	// locked: true transient: false
}

// After a write whose answer was lost (ErrOutcomeUnknown), list the node's
// tasks to find out whether it started one, instead of sending it again.
func ExampleClient_Tasks() {
	srv, c := fakeCluster()
	defer srv.Close()
	ctx := context.Background()
	vm := proxmox.Ref{Node: "pve", Type: proxmox.QEMU, VMID: 100}
	srv.Inject(proxmoxtest.Fault{Path: "/nodes/pve/qemu/100/status/start", Drop: proxmoxtest.DropAfterHandling, Times: 1})

	sent := time.Now().Add(-time.Minute) // allow for clock skew
	_, err := c.Start(ctx, vm)
	fmt.Println("outcome unknown:", errors.Is(err, proxmox.ErrOutcomeUnknown))

	tasks, err := c.Tasks(ctx, vm.Node, proxmox.TaskFilter{VMID: vm.VMID, Type: "qmstart", Since: sent})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("start tasks found:", len(tasks))
	st, err := c.WaitTask(ctx, tasks[0].UPID)
	fmt.Println(st.ExitStatus, err)
	// Output:
	// outcome unknown: true
	// start tasks found: 1
	// OK <nil>
}

// ParseUPID decodes the task ids Proxmox returns.
func ExampleParseUPID() {
	info, err := proxmox.ParseUPID("UPID:pve1:00007323:001036A5:6419CAF8:qmstart:100:root@pam!guestward:")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Node, info.PID, info.Type, info.ID, info.User, info.StartTime.Format(time.RFC3339))
	// Output:
	// pve1 29475 qmstart 100 root@pam!guestward 2023-03-21T15:19:20Z
}

// Bad input is refused before any request is sent.
func ExampleConfigChange_Validate() {
	err := proxmox.ConfigChange{Set: map[string]string{"name": "web\nevil: 1"}}.Validate()
	fmt.Println(errors.Is(err, proxmox.ErrInvalidConfig))
	fmt.Println(err)
	// Output:
	// true
	// proxmox: invalid config change: value of "name" contains a line break; only description may
}

// Resize grows a disk to an absolute size. On PVE 8 a QEMU resize runs as
// a task; an LXC volume already at the size asked for is refused with
// ErrAlreadySized, which means the caller has what it wants.
func ExampleClient_Resize() {
	srv, c := fakeCluster()
	defer srv.Close()
	ctx := context.Background()
	vm := proxmox.Ref{Node: "pve", Type: proxmox.QEMU, VMID: 100}
	ct := proxmox.Ref{Node: "pve", Type: proxmox.LXC, VMID: 200}
	// Give both guests a disk: 32 GiB and 8 GiB.
	_ = srv.UpdateConfig(vm, map[string]string{"scsi0": "local-lvm:32"}, nil)
	_ = srv.UpdateConfig(ct, map[string]string{"mp0": "local-lvm:8,mp=/data"}, nil)

	cfg, err := c.Config(ctx, vm)
	if err != nil {
		log.Fatal(err)
	}
	upid, err := c.Resize(ctx, vm, proxmox.DiskResize{Disk: "scsi0", Size: 64 << 30, Digest: cfg.Digest})
	if err != nil {
		log.Fatal(err)
	}
	if upid != "" { // "" on PVE 7, which resizes a VM's disk synchronously
		if _, err := c.WaitTask(ctx, upid); err != nil {
			log.Fatal(err)
		}
	}
	cfg, _ = c.Config(ctx, vm)
	fmt.Println("scsi0:", cfg.Values["scsi0"])

	_, err = c.Resize(ctx, ct, proxmox.DiskResize{Disk: "mp0", Size: 8 << 30})
	fmt.Println("already sized:", errors.Is(err, proxmox.ErrAlreadySized))
	// Output:
	// scsi0: local-lvm:vm-100-disk-0,size=64G
	// already sized: true
}
