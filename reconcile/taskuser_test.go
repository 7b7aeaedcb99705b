package reconcile_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
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
		{"case differs: the client's spelling wins once it logs in", px, "Root@pam!agent", false},
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

// Unset, TaskUser comes from the client's token: Recover then adopts only
// the engine's own task for a lost answer, never an operator's.
func TestTaskUserDerivedFromTheClientLimitsAdoption(t *testing.T) {
	const engineToken, operatorToken = "guestward@pve!engine", "alice@pve!ops"
	f := newFixture(t, []proxmoxtest.Option{
		proxmoxtest.WithAPIToken(engineToken, "engine-secret"),
		proxmoxtest.WithAPIToken(operatorToken, "operator-secret"),
	})
	if got := f.client.TaskUser(); got != engineToken {
		t.Fatalf("client TaskUser %q, want %q", got, engineToken)
	}
	operator, err := proxmox.New(f.srv.URL, proxmox.WithHTTPClient(f.srv.Client()),
		proxmox.WithAPIToken(operatorToken, "operator-secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(operator.CloseIdleConnections)
	eng := f.newEngine(f.j) // no TaskUser

	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	intent(t, f.j, "lost", qemu(100), reconcile.ActionStart, "", time.Now())
	if _, err := operator.Start(ctxT(t), qemu(100)); err != nil {
		t.Fatal(err)
	}
	rep, err := eng.Recover(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Ops) != 1 || rep.Ops[0].To != journal.Failed || rep.Ops[0].UPID != "" {
		t.Fatalf("the operator's task was taken for the engine's: %+v", rep.Ops)
	}
}

// respelled is a client whose user name Proxmox spells differently once
// it has logged in, as a password login on a realm with case-insensitive
// user names does.
type respelled struct {
	reconcile.Proxmox
	user *string
}

func (p respelled) TaskUser() string { return *p.user }

// The engine asks the client for its identity when it matches a task, so a
// spelling learnt at login is the one used.
func TestTaskUserIsAskedWhenMatching(t *testing.T) {
	f := newFixture(t, nil)
	token, _ := f.srv.APIToken()
	before := strings.ToUpper(token[:1]) + token[1:]
	user := before
	eng := f.newEngine(f.j, func(c *reconcile.Config) { c.Proxmox = respelled{Proxmox: c.Proxmox, user: &user} })
	user = token // logged in: Proxmox's spelling

	f.add(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"memory": "512"}})
	intent(t, f.j, "lost", qemu(100), reconcile.ActionStart, "", time.Now())
	upid, err := f.client.Start(ctxT(t), qemu(100))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := eng.Recover(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Ops) != 1 || rep.Ops[0].To != journal.Succeeded || rep.Ops[0].UPID != upid {
		t.Fatalf("the engine's own task was not adopted: %+v", rep.Ops)
	}
}
