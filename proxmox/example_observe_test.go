package proxmox_test

import (
	"context"
	"fmt"
	"log"
	"sync"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

// Count requests by method, path template and status, as a metrics
// library would: the template holds no vmid, UPID or other identifier.
func ExampleWithRequestObserver() {
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	_ = srv.AddGuest(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"name": "web"}})

	var mu sync.Mutex
	counts := map[string]int{}
	id, secret := srv.APIToken()
	c, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(id, secret),
		proxmox.WithRequestObserver(func(ri proxmox.RequestInfo) {
			mu.Lock()
			counts[fmt.Sprintf("%s %s node=%q status=%d", ri.Method, ri.Path, ri.Node, ri.Status)]++
			mu.Unlock()
		}))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	ref := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}
	upid, err := c.Start(ctx, ref)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.WaitTask(ctx, upid); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Guests(ctx); err != nil {
		log.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Println(counts["POST /nodes/{node}/qemu/{vmid}/status/start node=\"pve1\" status=200"])
	fmt.Println(counts["GET /nodes/{node}/tasks/{upid}/status node=\"pve1\" status=200"] > 0)
	fmt.Println(counts["GET /cluster/resources node=\"\" status=200"])
	// Output:
	// 1
	// true
	// 1
}
