package signedop_test

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

// A hub signs a request for agent-7; the agent, which trusts the hub's
// public key under the id "hub-2026", verifies it. The same token sent to
// another agent, or after it expired, is refused.
func ExampleSign() {
	// A real hub generates its key once (ed25519.GenerateKey) and keeps
	// the private half secret; a fixed seed keeps this example's output
	// stable.
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

	token, err := signedop.Sign(priv, "hub-2026", signedop.Claims{
		Issuer:   "hub",
		Audience: "agent-7",
		IssuedAt: now,
		Expiry:   now.Add(5 * time.Minute),
		Op: reconcile.OneShot{
			Key:  "2026-12-05/web-memory",
			Ref:  proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100},
			Kind: reconcile.ActionSetConfig,
			Set:  map[string]string{"memory": "4096"},
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	agent, err := signedop.NewVerifier("agent-7", map[string]ed25519.PublicKey{"hub-2026": pub})
	if err != nil {
		log.Fatal(err)
	}
	c, err := agent.Verify(token, now.Add(time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("verified:", c.Op.Key, c.Op.Kind, c.Op.Ref, c.Op.Set)

	other, err := signedop.NewVerifier("agent-8", map[string]ed25519.PublicKey{"hub-2026": pub})
	if err != nil {
		log.Fatal(err)
	}
	_, err = other.Verify(token, now.Add(time.Minute))
	fmt.Println("another agent:", errors.Is(err, signedop.ErrAudience))

	_, err = agent.Verify(token, now.Add(time.Hour))
	fmt.Println("an hour later:", errors.Is(err, signedop.ErrExpired))
	// Output:
	// verified: 2026-12-05/web-memory set_config pve1/qemu/100 map[memory:4096]
	// another agent: true
	// an hour later: true
}
