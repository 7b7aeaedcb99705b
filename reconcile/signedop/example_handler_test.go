package signedop_test

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

// An agent serves Handler; a hub posts a signed start. The same token sent
// again is answered from the journal, and nothing is sent to Proxmox.
func ExampleHandler() {
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	web := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100,
		Config: map[string]string{"name": "web"}}); err != nil {
		log.Fatal(err)
	}
	client, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()))
	if err != nil {
		log.Fatal(err)
	}
	jnl := journal.NewMemory() // a real agent uses journal.OpenFile
	defer jnl.Close()
	engine, err := reconcile.NewEngine(reconcile.Config{Proxmox: client, Journal: jnl})
	if err != nil {
		log.Fatal(err)
	}

	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		log.Fatal(err)
	}
	verifier, err := signedop.NewVerifier("agent-7", map[string]ed25519.PublicKey{"hub-2026": pub})
	if err != nil {
		log.Fatal(err)
	}
	agent := httptest.NewServer(signedop.Handler(engine, verifier))
	defer agent.Close()

	now := time.Now()
	token, err := signedop.Sign(priv, "hub-2026", signedop.Claims{
		Issuer: "hub", Audience: "agent-7", IssuedAt: now, Expiry: now.Add(5 * time.Minute),
		Op: reconcile.OneShot{Key: "deploy-4711/start-web", Ref: web, Kind: reconcile.ActionStart},
	})
	if err != nil {
		log.Fatal(err)
	}
	for range 2 {
		resp, err := http.Post(agent.URL, "application/jose", strings.NewReader(token))
		if err != nil {
			log.Fatal(err)
		}
		var res struct {
			State    string `json:"state"`
			Replayed bool   `json:"replayed"`
		}
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(resp.StatusCode, res.State, "replayed:", res.Replayed)
	}
	fmt.Println("start tasks:", srv.TaskCount(web, "qmstart"))
	// Output:
	// 200 succeeded replayed: false
	// 200 succeeded replayed: true
	// start tasks: 1
}
