package signedop_test

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

func validClaims() signedop.Claims {
	return signedop.Claims{
		Issuer:   "hub-1",
		Audience: "agent-1",
		IssuedAt: t0.Add(-time.Minute),
		Expiry:   t0.Add(4 * time.Minute),
		Op: reconcile.OneShot{
			Key:               "op-1",
			Ref:               proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100},
			Kind:              reconcile.ActionSetConfig,
			Set:               map[string]string{"memory": "4096", "description": "héllo \"quoted\" <b>"},
			Delete:            []string{"args"},
			Digest:            "0123456789abcdef0123456789abcdef01234567",
			AllowIrreversible: true,
		},
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	_, priv := seedKey(1)
	v := newTestVerifier(t)
	cases := map[string]func(*signedop.Claims){
		"set_config": func(*signedop.Claims) {},
		"shutdown with timeout and nbf": func(c *signedop.Claims) {
			c.Op = reconcile.OneShot{Key: "op-2", Ref: proxmox.Ref{Node: "pve1", Type: proxmox.LXC, VMID: 200}, Kind: reconcile.ActionShutdown, Timeout: 90 * time.Second}
			c.NotBefore = t0.Add(-10 * time.Second)
		},
		"fractions dropped": func(c *signedop.Claims) {
			c.IssuedAt = c.IssuedAt.Add(400 * time.Millisecond)
		},
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			c := validClaims()
			edit(&c)
			tok, err := signedop.Sign(priv, "k1", c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(tok, t0)
			if err != nil {
				t.Fatal(err)
			}
			want := c
			want.IssuedAt = c.IssuedAt.Truncate(time.Second).UTC()
			want.Expiry = c.Expiry.UTC()
			if !c.NotBefore.IsZero() {
				want.NotBefore = c.NotBefore.UTC()
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("claims after the round trip (-want +got):\n%s", d)
			}
		})
	}
}

// The header Sign writes is exactly the one the forged tokens use, so
// that the refusal table tests what Sign's tokens look like.
func TestSignHeader(t *testing.T) {
	_, priv := seedKey(1)
	tok, err := signedop.Sign(priv, "k1", validClaims())
	if err != nil {
		t.Fatal(err)
	}
	h, err := enc.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var got, want map[string]any
	if err := json.Unmarshal(h, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(hdr("k1")), &want); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("header (-want +got):\n%s", d)
	}
}

func TestSignRefuses(t *testing.T) {
	_, priv := seedKey(1)
	tests := []struct {
		name   string
		reason string
		priv   ed25519.PrivateKey
		kid    string
		edit   func(*signedop.Claims)
		want   error
	}{
		{"short key", "not an Ed25519 private key", priv[:32], "k1", nil, signedop.ErrInvalidKey},
		{"nil key", "no key", nil, "k1", nil, signedop.ErrInvalidKey},
		{"empty kid", "the verifier selects the key by id", priv, "", nil, signedop.ErrInvalidKey},
		{"kid with newline", "control characters", priv, "k\n1", nil, signedop.ErrInvalidKey},
		{"no issuer", "required", priv, "k1", func(c *signedop.Claims) { c.Issuer = "" }, signedop.ErrInvalidClaims},
		{"no audience", "required", priv, "k1", func(c *signedop.Claims) { c.Audience = "" }, signedop.ErrInvalidClaims},
		{"long audience", "bounded", priv, "k1", func(c *signedop.Claims) { c.Audience = strings.Repeat("a", signedop.MaxNameLen+1) }, signedop.ErrInvalidClaims},
		{"no expiry", "required", priv, "k1", func(c *signedop.Claims) { c.Expiry = time.Time{} }, signedop.ErrInvalidClaims},
		{"no issued-at", "required", priv, "k1", func(c *signedop.Claims) { c.IssuedAt = time.Time{} }, signedop.ErrInvalidClaims},
		{"expiry before issue", "no lifetime", priv, "k1", func(c *signedop.Claims) { c.Expiry = c.IssuedAt }, signedop.ErrInvalidClaims},
		{"nbf after expiry", "never valid", priv, "k1", func(c *signedop.Claims) { c.NotBefore = c.Expiry }, signedop.ErrInvalidClaims},
		{"before the epoch", "out of range", priv, "k1", func(c *signedop.Claims) { c.IssuedAt = time.Unix(-5, 0) }, signedop.ErrInvalidClaims},
		{"invalid op", "no key", priv, "k1", func(c *signedop.Claims) { c.Op.Key = "" }, reconcile.ErrInvalidOneShot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validClaims()
			if tt.edit != nil {
				tt.edit(&c)
			}
			tok, err := signedop.Sign(tt.priv, tt.kid, c)
			if !errors.Is(err, tt.want) {
				t.Fatalf("%s: Sign = %v, want %v", tt.reason, err, tt.want)
			}
			if tok != "" {
				t.Errorf("a token despite the error")
			}
		})
	}
}

func TestNewVerifierRefuses(t *testing.T) {
	pub, _ := seedKey(1)
	tests := []struct {
		name     string
		reason   string
		audience string
		keys     map[string]ed25519.PublicKey
		opts     []signedop.Option
	}{
		{"empty audience", "tokens name their agent", "", map[string]ed25519.PublicKey{"k1": pub}, nil},
		{"audience with space", "a stray blank is a second id", "agent-1 ", map[string]ed25519.PublicKey{"k1": pub}, nil},
		{"no keys", "nothing could verify", "agent-1", nil, nil},
		{"empty kid", "a token must name its key", "agent-1", map[string]ed25519.PublicKey{"": pub}, nil},
		{"short key", "not an Ed25519 public key", "agent-1", map[string]ed25519.PublicKey{"k1": pub[:31]}, nil},
		{"nil key", "no key", "agent-1", map[string]ed25519.PublicKey{"k1": nil}, nil},
		{"private key as public", "64 bytes", "agent-1", map[string]ed25519.PublicKey{"k1": make([]byte, 64)}, nil},
		{"zero lifetime", "no token could be valid", "agent-1", map[string]ed25519.PublicKey{"k1": pub}, []signedop.Option{signedop.WithMaxLifetime(0)}},
		{"negative skew", "meaningless", "agent-1", map[string]ed25519.PublicKey{"k1": pub}, []signedop.Option{signedop.WithClockSkew(-time.Second)}},
		{"skew over lifetime", "the skew would swallow the lifetime", "agent-1", map[string]ed25519.PublicKey{"k1": pub}, []signedop.Option{signedop.WithMaxLifetime(time.Minute), signedop.WithClockSkew(time.Minute)}},
		{"tiny size", "no token fits", "agent-1", map[string]ed25519.PublicKey{"k1": pub}, []signedop.Option{signedop.WithMaxTokenSize(10)}},
		{"huge size", "bounded", "agent-1", map[string]ed25519.PublicKey{"k1": pub}, []signedop.Option{signedop.WithMaxTokenSize(signedop.MaxTokenSizeLimit + 1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := signedop.NewVerifier(tt.audience, tt.keys, tt.opts...)
			if err == nil || v != nil {
				t.Fatalf("%s: NewVerifier = %v, %v; want an error", tt.reason, v, err)
			}
		})
	}
}

// The verifier keeps its own copy of the keys: a caller changing its map
// or the key bytes afterwards changes nothing.
func TestNewVerifierCopiesKeys(t *testing.T) {
	pub, priv := seedKey(1)
	other, _ := seedKey(2)
	key := append(ed25519.PublicKey(nil), pub...)
	keys := map[string]ed25519.PublicKey{"k1": key}
	v, err := signedop.NewVerifier("agent-1", keys)
	if err != nil {
		t.Fatal(err)
	}
	copy(key, other)
	keys["k2"] = pub
	delete(keys, "k1")
	tok, err := signedop.Sign(priv, "k1", validClaims())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok, t0); err != nil {
		t.Errorf("Verify after the caller changed its map: %v", err)
	}
	tok2, _ := signedop.Sign(priv, "k2", validClaims())
	if _, err := v.Verify(tok2, t0); !errors.Is(err, signedop.ErrUnknownKey) {
		t.Errorf("a key added to the caller's map later is trusted: %v", err)
	}
}

func TestVerifierOptions(t *testing.T) {
	_, priv := seedKey(1)
	c := validClaims()
	c.IssuedAt, c.Expiry = t0.Add(-time.Minute), t0.Add(time.Hour)
	tok, err := signedop.Sign(priv, "k1", c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newTestVerifier(t).Verify(tok, t0); !errors.Is(err, signedop.ErrLifetime) {
		t.Errorf("default lifetime: %v", err)
	}
	if _, err := newTestVerifier(t, signedop.WithMaxLifetime(2*time.Hour)).Verify(tok, t0); err != nil {
		t.Errorf("WithMaxLifetime(2h): %v", err)
	}
	if _, err := newTestVerifier(t, signedop.WithMaxLifetime(2*time.Hour), signedop.WithClockSkew(0)).Verify(tok, c.Expiry); !errors.Is(err, signedop.ErrExpired) {
		t.Errorf("no skew, at expiry: %v", err)
	}
	if _, err := newTestVerifier(t, signedop.WithMaxLifetime(2*time.Hour), signedop.WithClockSkew(5*time.Minute)).Verify(tok, c.Expiry.Add(4*time.Minute)); err != nil {
		t.Errorf("5m skew, 4m after expiry: %v", err)
	}
	if _, err := newTestVerifier(t, signedop.WithMaxLifetime(2*time.Hour), signedop.WithMaxTokenSize(len(tok)-1)).Verify(tok, t0); !errors.Is(err, signedop.ErrTooLarge) {
		t.Errorf("max size one short: %v", err)
	}
	if _, err := newTestVerifier(t, signedop.WithMaxLifetime(2*time.Hour), signedop.WithMaxTokenSize(len(tok))).Verify(tok, t0); err != nil {
		t.Errorf("max size exact: %v", err)
	}
}

// An expired token whose every other check holds carries its claims in
// the error, for a replay to be answered; the returned Claims stay empty.
func TestVerifyExpiredCarriesClaims(t *testing.T) {
	_, priv := seedKey(1)
	c := validClaims()
	tok, err := signedop.Sign(priv, "k1", c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := newTestVerifier(t).Verify(tok, c.Expiry.Add(time.Hour))
	var exp *signedop.ExpiredError
	if !errors.As(err, &exp) || !errors.Is(err, signedop.ErrExpired) {
		t.Fatalf("Verify = %v, want an *ExpiredError", err)
	}
	if exp.Claims.Op.Key != c.Op.Key || exp.Claims.Op.Ref != c.Op.Ref {
		t.Errorf("ExpiredError claims %+v", exp.Claims)
	}
	if got.Op.Key != "" {
		t.Errorf("Verify returned claims with the error: %+v", got)
	}
	// Expired and for another agent: the audience decides, no claims.
	c.Audience = "agent-2"
	tok, _ = signedop.Sign(priv, "k1", c)
	if _, err := newTestVerifier(t).Verify(tok, c.Expiry.Add(time.Hour)); !errors.Is(err, signedop.ErrAudience) || errors.As(err, &exp) {
		t.Errorf("expired, wrong audience: %v", err)
	}
}
