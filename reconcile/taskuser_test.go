package reconcile_test

import (
	"errors"
	"testing"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/reconcile"
)

// identified is a Proxmox that can tell whom its tasks belong to.
type identified struct {
	reconcile.Proxmox
	user string
}

func (p identified) TaskUser() string { return p.user }

// A TaskUser that cannot match the client's credentials is refused: with it
// the engine would not recognize its own task after a lost answer, and
// would send the write again. Unset, it is derived from the client.
func TestTaskUserFollowsTheClientsIdentity(t *testing.T) {
	f := newFixture(t, nil)
	px := identified{Proxmox: f.client, user: "root@pam!agent"}
	for _, tc := range []struct {
		name     string
		px       reconcile.Proxmox
		taskUser string
		wantErr  bool
	}{
		{"derived", px, "", false},
		{"same as the client", px, "root@pam!agent", false},
		{"the token's user, not the token", px, "root@pam", true},
		{"another token", px, "root@pam!other", true},
		{"case differs", px, "Root@pam!agent", true},
		{"client cannot tell: taken as given", identified{Proxmox: f.client}, "alice@pve", false},
		{"malformed", identified{Proxmox: f.client}, "alice", true},
		{"malformed token", identified{Proxmox: f.client}, "alice@pve!", true},
		{"colon", identified{Proxmox: f.client}, "alice@pve:x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := reconcile.NewEngine(reconcile.Config{Proxmox: tc.px, Journal: journal.NewMemory(), TaskUser: tc.taskUser})
			if tc.wantErr {
				if !errors.Is(err, reconcile.ErrConfig) {
					t.Fatalf("NewEngine: %v, want ErrConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
