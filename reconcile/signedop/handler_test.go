package signedop_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/checkpoint"
	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

var start = reconcile.OneShot{Key: "op-start-1", Ref: web, Kind: reconcile.ActionStart}

func TestHandlerApplies(t *testing.T) {
	a := newAgent(t)
	ans := a.post(a.token(start))
	if ans.status != http.StatusOK || ans.result["state"] != string(journal.Succeeded) {
		t.Fatalf("answer %d %s", ans.status, ans.body)
	}
	if !a.guest().Running {
		t.Error("the guest was not started")
	}
	if ans.header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type %q", ans.header.Get("Content-Type"))
	}
}

// The same token, sent again (after a restart with the journal reopened,
// and once more after the token expired), returns the recorded result and
// sends nothing.
func TestHandlerReplayAcrossRestart(t *testing.T) {
	a := newAgent(t)
	now := time.Now()
	// A token that expired a minute ago; the first agent's verifier
	// tolerates five minutes of skew, the second's only the default.
	tok := a.tokenAt(start, now.Add(-3*time.Minute), now.Add(-time.Minute))
	lenient, err := signedop.NewVerifier("agent-1", map[string]ed25519.PublicKey{"k1": a.priv.Public().(ed25519.PublicKey)}, signedop.WithClockSkew(5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	a.h = signedop.Handler(a.e, lenient)
	first := a.post(tok)
	if first.status != http.StatusOK || first.result["state"] != string(journal.Succeeded) {
		t.Fatalf("first answer %d %s", first.status, first.body)
	}
	sent := a.writes()

	a.restart()
	a.h = signedop.Handler(a.e, lenient)
	again := a.post(tok)
	if again.status != http.StatusOK || again.result["replayed"] != true || again.result["op_id"] != first.result["op_id"] {
		t.Fatalf("replay after restart: %d %s (first %s)", again.status, again.body, first.body)
	}

	a.restart()
	expired := a.post(tok) // a.h verifies with the default skew: expired
	if expired.status != http.StatusOK || expired.result["replayed"] != true || expired.result["op_id"] != first.result["op_id"] {
		t.Fatalf("replay of the expired token: %d %s", expired.status, expired.body)
	}
	if n := a.writes(); n != sent {
		t.Errorf("replays sent %d requests", n-sent)
	}
}

// An expired token whose key was never used is refused and never run,
// however valid it was.
func TestHandlerExpiredNeverRuns(t *testing.T) {
	a := newAgent(t)
	now := time.Now()
	ans := a.post(a.tokenAt(start, now.Add(-10*time.Minute), now.Add(-5*time.Minute)))
	if ans.status != http.StatusUnauthorized || ans.code != "expired" {
		t.Fatalf("answer %d %s", ans.status, ans.body)
	}
	if a.writes() != 0 || a.guest().Running {
		t.Error("an expired token ran")
	}
	if _, ok, err := a.e.Lookup(ctxT(t), start.Key); ok || err != nil {
		t.Errorf("the key is in the journal: %v %v", ok, err)
	}
}

// A different token reusing a JWT ID for another request is refused with
// 409, fresh or expired.
func TestHandlerKeyConflict(t *testing.T) {
	a := newAgent(t)
	if ans := a.post(a.token(start)); ans.status != http.StatusOK {
		t.Fatalf("first: %d %s", ans.status, ans.body)
	}
	sent := a.writes()
	other := start
	other.Kind = reconcile.ActionStop
	if ans := a.post(a.token(other)); ans.status != http.StatusConflict || ans.code != "key_conflict" {
		t.Errorf("fresh token, same jti, other kind: %d %s", ans.status, ans.body)
	}
	now := time.Now()
	if ans := a.post(a.tokenAt(other, now.Add(-10*time.Minute), now.Add(-5*time.Minute))); ans.status != http.StatusConflict || ans.code != "key_conflict" {
		t.Errorf("expired token, same jti, other kind: %d %s", ans.status, ans.body)
	}
	otherGuest := start
	otherGuest.Ref.VMID = 101
	if ans := a.post(a.tokenAt(otherGuest, now.Add(-10*time.Minute), now.Add(-5*time.Minute))); ans.status != http.StatusConflict {
		t.Errorf("expired token, same jti, other guest: %d %s", ans.status, ans.body)
	}
	if n := a.writes(); n != sent {
		t.Errorf("conflicting tokens sent %d requests", n-sent)
	}
}

// An expired token is answered from the journal only for the very request
// its JWT ID ran: the same guest and kind with other parameters is another
// request, refused with 409, not handed the first one's result.
func TestHandlerExpiredOtherParams(t *testing.T) {
	a := newAgent(t)
	set := reconcile.OneShot{Key: "op-set-1", Ref: web, Kind: reconcile.ActionSetConfig,
		Set: map[string]string{"description": "first"}}
	if ans := a.post(a.token(set)); ans.status != http.StatusOK {
		t.Fatalf("first: %d %s", ans.status, ans.body)
	}
	sent := a.writes()
	now := time.Now()
	if ans := a.post(a.tokenAt(set, now.Add(-10*time.Minute), now.Add(-5*time.Minute))); ans.status != http.StatusOK || ans.result["replayed"] != true {
		t.Errorf("expired token, the same request: %d %s", ans.status, ans.body)
	}
	other := set
	other.Set = map[string]string{"description": "second"}
	if ans := a.post(a.tokenAt(other, now.Add(-10*time.Minute), now.Add(-5*time.Minute))); ans.status != http.StatusConflict || ans.code != "key_conflict" || ans.result != nil {
		t.Errorf("expired token, same jti, guest and kind, other parameters: %d %s", ans.status, ans.body)
	}
	if n := a.writes(); n != sent {
		t.Errorf("expired tokens sent %d requests", n-sent)
	}
}

func TestHandlerStatuses(t *testing.T) {
	_, evil := seedKey(9)
	now := time.Now()
	tests := []struct {
		name   string
		reason string
		setup  func(a *agent) *http.Request
		status int
		code   string
	}{
		{"GET", "only POST runs operations", func(a *agent) *http.Request {
			return httptest.NewRequest(http.MethodGet, "/op", nil)
		}, http.StatusMethodNotAllowed, "method"},
		{"PUT", "only POST", func(a *agent) *http.Request {
			return httptest.NewRequest(http.MethodPut, "/op", strings.NewReader(a.token(start)))
		}, http.StatusMethodNotAllowed, "method"},
		{"malformed", "not a token", func(a *agent) *http.Request { return postReq("hello") }, http.StatusBadRequest, "malformed"},
		{"empty body", "no token", func(a *agent) *http.Request { return postReq("") }, http.StatusBadRequest, "malformed"},
		{"oversized", "bounded before reading it all", func(a *agent) *http.Request {
			return postReq(strings.Repeat("A", signedop.DefaultMaxTokenSize+1))
		}, http.StatusRequestEntityTooLarge, "too_large"},
		{"oversized without length", "a chunked body is bounded too", func(a *agent) *http.Request {
			r := postReq(strings.Repeat("A", signedop.DefaultMaxTokenSize+1))
			r.ContentLength = -1
			return r
		}, http.StatusRequestEntityTooLarge, "too_large"},
		{"bad signature", "signed by an untrusted key", func(a *agent) *http.Request {
			return postReq(forge(hdr("k1"), claimsFor(start, now), edSign(evil)))
		}, http.StatusUnauthorized, "signature"},
		{"unknown key", "a kid the agent does not trust", func(a *agent) *http.Request {
			return postReq(forge(hdr("k9"), claimsFor(start, now), edSign(evil)))
		}, http.StatusUnauthorized, "unknown_key"},
		{"alg none", "unsigned", func(a *agent) *http.Request {
			return postReq(forge(`{"alg":"none","kid":"k1","typ":"guestward-op+jwt"}`, claimsFor(start, now), nil))
		}, http.StatusUnauthorized, "algorithm"},
		{"crit", "an extension", func(a *agent) *http.Request {
			return postReq(forge(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","crit":["x"],"x":1}`, claimsFor(start, now), edSign(a.priv)))
		}, http.StatusBadRequest, "critical"},
		{"wrong audience", "for another agent", func(a *agent) *http.Request {
			tok, _ := signedop.Sign(a.priv, "k1", signedop.Claims{Issuer: "hub-1", Audience: "agent-2", IssuedAt: now, Expiry: now.Add(time.Minute), Op: start})
			return postReq(tok)
		}, http.StatusForbidden, "audience"},
		{"invalid op", "Validate refuses a set_config with nothing to change", func(a *agent) *http.Request {
			return postReq(forge(hdr("k1"), strings.Replace(claimsFor(start, now), `"kind":"start"`, `"kind":"set_config"`, 1), edSign(a.priv)))
		}, http.StatusUnprocessableEntity, "invalid_operation"},
		{"not yet valid", "issued in the future", func(a *agent) *http.Request {
			return postReq(a.tokenAt(start, now.Add(5*time.Minute), now.Add(6*time.Minute)))
		}, http.StatusUnauthorized, "not_yet_valid"},
		{"guest not found", "no such guest", func(a *agent) *http.Request {
			op := start
			op.Ref.VMID = 999
			return postReq(a.token(op))
		}, http.StatusNotFound, "guest_not_found"},
		{"draining", "the agent is shutting down", func(a *agent) *http.Request {
			if err := a.e.Drain(ctxT(a.t)); err != nil {
				a.t.Fatal(err)
			}
			return postReq(a.token(start))
		}, http.StatusServiceUnavailable, "draining"},
		{"request canceled", "Apply runs under the request's context", func(a *agent) *http.Request {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return httptest.NewRequestWithContext(ctx, http.MethodPost, "/op", strings.NewReader(a.token(start)))
		}, http.StatusServiceUnavailable, "canceled"},
		{"vetoed", "the agent's policy refuses", func(a *agent) *http.Request {
			a.restart(func(c *reconcile.Config) {
				c.Policy = func(_ context.Context, _ reconcile.Action, _ reconcile.Observed) error { return errors.New("no") }
			})
			return postReq(a.token(start))
		}, http.StatusForbidden, "vetoed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAgent(t)
			ans := a.do(tt.setup(a))
			if ans.status != tt.status || ans.code != tt.code {
				t.Fatalf("%s: answer %d %s, want %d %s", tt.reason, ans.status, ans.body, tt.status, tt.code)
			}
			if tt.status == http.StatusMethodNotAllowed && ans.header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow %q", ans.header.Get("Allow"))
			}
			if tt.status == http.StatusServiceUnavailable && ans.header.Get("Retry-After") == "" {
				t.Error("no Retry-After")
			}
			if a.writes() != 0 {
				t.Errorf("a refused request sent %d requests", a.writes())
			}
		})
	}
}

func postReq(body string) *http.Request {
	return httptest.NewRequest(http.MethodPost, "/op", strings.NewReader(body))
}

// claimsFor is the claims JSON of op for agent-1, valid around now.
func claimsFor(op reconcile.OneShot, now time.Time) string {
	return fmt.Sprintf(`{"iss":"hub-1","aud":"agent-1","iat":%d,"exp":%d,"jti":%q,"op":{"node":%q,"type":%q,"vmid":%d,"kind":%q}}`,
		now.Add(-time.Minute).Unix(), now.Add(4*time.Minute).Unix(), op.Key, op.Ref.Node, op.Ref.Type, op.Ref.VMID, op.Kind)
}

func TestStatusCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 200},
		{signedop.ErrTooLarge, 413},
		{signedop.ErrMalformed, 400},
		{signedop.ErrHeader, 400},
		{signedop.ErrCritical, 400},
		{signedop.ErrAlgorithm, 401},
		{signedop.ErrUnknownKey, 401},
		{signedop.ErrSignature, 401},
		{signedop.ErrLifetime, 401},
		{signedop.ErrNotYetValid, 401},
		{signedop.ErrExpired, 401},
		{&signedop.ExpiredError{}, 401},
		{signedop.ErrAudience, 403},
		{fmt.Errorf("%w: %w", signedop.ErrInvalidOp, reconcile.ErrInvalidOneShot), 422},
		{reconcile.ErrInvalidOneShot, 422},
		{fmt.Errorf("op: %w", reconcile.ErrIrreversible), 403},
		{fmt.Errorf("op: %w", reconcile.ErrVetoed), 403},
		{fmt.Errorf("op: %w", reconcile.ErrKeyConflict), 409},
		{fmt.Errorf("%w: %w", reconcile.ErrInProgress, context.Canceled), 409},
		{fmt.Errorf("op: %w", reconcile.ErrDraining), 503},
		{fmt.Errorf("op: %w", reconcile.ErrUnresolved), 503},
		{fmt.Errorf("op: %w", reconcile.ErrDryRun), 503},
		{fmt.Errorf("%w: %w", reconcile.ErrNotObserved, proxmox.ErrNotFound), 404},
		{fmt.Errorf("%w: %w", reconcile.ErrNotObserved, proxmox.ErrTransient), 502},
		{fmt.Errorf("%w: %w", reconcile.ErrNotObserved, context.Canceled), 503},
		{reconcile.ErrNoKeyLookup, 500},
		{fmt.Errorf("queue: %w", context.DeadlineExceeded), 504},
		{fmt.Errorf("queue: %w", context.Canceled), 503},
		{errors.New("journal: disk full"), 500},
	}
	for _, tt := range tests {
		if got := signedop.StatusCode(tt.err); got != tt.want {
			t.Errorf("StatusCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// No answer quotes the token, any part of it, or anything the request
// chose: markers planted in the header, the claims and the body never come
// back, nor does any run of 12 characters of the token.
func TestHandlerNeverEchoes(t *testing.T) {
	const mark = "ECHO<script>MARK"
	a := newAgent(t)
	now := time.Now()
	markedClaims := strings.Replace(claimsFor(start, now), `"iss":"hub-1"`, `"iss":"`+mark+`"`, 1)
	tokens := map[string]string{
		"kid":             forge(hdr(mark), claimsFor(start, now), edSign(a.priv)),
		"alg":             forge(`{"alg":"`+mark+`","kid":"k1","typ":"guestward-op+jwt"}`, claimsFor(start, now), edSign(a.priv)),
		"typ":             forge(`{"alg":"EdDSA","kid":"k1","typ":"`+mark+`"}`, claimsFor(start, now), edSign(a.priv)),
		"duplicate kid":   forge(`{"alg":"EdDSA","kid":"`+mark+`","kid":"`+mark+`"}`, claimsFor(start, now), edSign(a.priv)),
		"unknown header":  forge(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","`+mark+`":1}`, claimsFor(start, now), edSign(a.priv)),
		"crit":            forge(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","crit":["`+mark+`"]}`, claimsFor(start, now), edSign(a.priv)),
		"bad signature":   forge(hdr("k1"), markedClaims, nil),
		"unknown claim":   forge(hdr("k1"), strings.Replace(claimsFor(start, now), `{`, `{"`+mark+`":1,`, 1), edSign(a.priv)),
		"claim value":     forge(hdr("k1"), strings.Replace(claimsFor(start, now), `"kind":"start"`, `"kind":"`+mark+`"`, 1), edSign(a.priv)),
		"audience":        forge(hdr("k1"), strings.Replace(markedClaims, `"aud":"agent-1"`, `"aud":"`+mark+`"`, 1), edSign(a.priv)),
		"vmid type":       forge(hdr("k1"), strings.Replace(claimsFor(start, now), `"vmid":100`, `"vmid":"`+mark+`"`, 1), edSign(a.priv)),
		"not base64":      mark + "." + mark + "." + mark,
		"raw":             mark,
		"JSON form":       `{"payload":"` + mark + `"}`,
		"accepted":        forge(hdr("k1"), markedClaims, edSign(a.priv)),
		"accepted replay": forge(hdr("k1"), markedClaims, edSign(a.priv)),
	}
	for name, tok := range tokens {
		if name == "bad signature" {
			tok = tok[:strings.LastIndexByte(tok, '.')+1] + enc.EncodeToString(make([]byte, 64))
		}
		ans := a.post(tok)
		for _, leak := range []string{mark, "ECHO", "MARK", "script"} {
			if strings.Contains(ans.body, leak) {
				t.Errorf("%s: answer %d quotes %q: %s", name, ans.status, leak, ans.body)
			}
		}
		const run = 12
		for i := 0; i+run <= len(tok); i++ {
			if strings.Contains(ans.body, tok[i:i+run]) {
				t.Errorf("%s: answer %d holds %q of the token: %s", name, ans.status, tok[i:i+run], ans.body)
				break
			}
		}
	}
}

// An operation sent but interrupted before its outcome was journaled is
// answered 202 with its result; the same token, once the agent has
// resolved it (here after a restart), gets the outcome, and the operation
// ran once.
func TestHandlerInFlight(t *testing.T) {
	a := newAgent(t)
	tok := a.token(start)
	// The request's context reaches the engine: its operation stops once
	// its task is journaled, as a crash there would stop it.
	fp := new(failpoint.Set)
	fp.Enable(checkpoint.AfterTaskRecord, func() error { return errors.New("crash") })
	ans := a.do(httptest.NewRequestWithContext(checkpoint.With(ctxT(t), fp), http.MethodPost, "/op", strings.NewReader(tok)))
	if ans.status != http.StatusAccepted || ans.code != "in_flight" || ans.result["op_id"] == nil {
		t.Fatalf("interrupted: %d %s", ans.status, ans.body)
	}
	// The task goes on in Proxmox; the restarted agent resolves the
	// operation once it has ended (before, it answers "unresolved").
	if err := a.srv.WaitIdle(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	a.restart()
	again := a.post(tok)
	if again.status != http.StatusOK || again.result["state"] != string(journal.Succeeded) || again.result["op_id"] != ans.result["op_id"] {
		t.Fatalf("after the restart: %d %s (first %s)", again.status, again.body, ans.body)
	}
	starts := 0
	for _, r := range a.srv.Requests() {
		if r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/status/start") {
			starts++
		}
	}
	if starts != 1 {
		t.Errorf("%d start requests", starts)
	}
}
