package signedop_test

import (
	"net/http"
	"testing"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/reconcile"
)

// Setting cipassword cannot be undone: Proxmox never gives the prior value
// back. Without a signed approval the agent refuses it (403) and sends
// nothing, leaving the key unused; the same request with the approval, under
// the same JWT ID (the approval is not part of the request), is applied.
//
// This relies on Engine.Apply's reversibility gate.
func TestHandlerIrreversibleNeedsSignedApproval(t *testing.T) {
	a := newAgent(t)
	op := reconcile.OneShot{Key: "op-cipassword-1", Ref: web, Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"cipassword": "s3cret-pass"}}

	ans := a.post(a.token(op))
	if ans.status != http.StatusForbidden || ans.code != "irreversible" {
		t.Fatalf("without approval: %d %s, want 403 irreversible", ans.status, ans.body)
	}
	if n := a.writes(); n != 0 {
		t.Errorf("without approval, %d requests sent", n)
	}
	if _, ok, err := a.e.Lookup(ctxT(t), op.Key); ok || err != nil {
		t.Errorf("without approval, the key is journaled: %v %v", ok, err)
	}
	if _, set := a.guest().Config["cipassword"]; set {
		t.Error("without approval, cipassword was set")
	}

	op.AllowIrreversible = true
	ans = a.post(a.token(op))
	if ans.status != http.StatusOK || ans.result["state"] != string(journal.Succeeded) {
		t.Fatalf("with approval: %d %s", ans.status, ans.body)
	}
	if _, set := a.guest().Config["cipassword"]; !set {
		t.Error("with approval, cipassword was not set")
	}
}
