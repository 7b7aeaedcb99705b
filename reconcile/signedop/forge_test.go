package signedop_test

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
)

// Tokens in these tests are built by hand, from crypto/ed25519 and
// crypto/hmac, so that a fault in the JOSE library Sign and Verify use
// cannot hide one in the tests.

var enc = base64.RawURLEncoding

// t0 is the tests' "now".
var t0 = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

// seedKey returns a deterministic key pair.
func seedKey(b byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = b
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return priv.Public().(ed25519.PublicKey), priv
}

// forge joins a header and payload, given as JSON text, and signs them
// with sign (nil: no signature).
func forge(header, payload string, sign func(input []byte) []byte) string {
	input := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + enc.EncodeToString(sig)
}

func edSign(priv ed25519.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte { return ed25519.Sign(priv, in) }
}

func hmacSign(secret []byte) func([]byte) []byte {
	return func(in []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(in)
		return m.Sum(nil)
	}
}

// hdr is the header Sign writes, for key id kid.
func hdr(kid string) string {
	return `{"alg":"EdDSA","kid":` + quote(kid) + `,"typ":"guestward-op+jwt"}`
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// claimsJSON returns a valid claims set as JSON text, with the members
// edit changes (a nil value removes the member). Member order is fixed.
func claimsJSON(edit map[string]any) string {
	base := []struct {
		k string
		v any
	}{
		{"iss", "hub-1"},
		{"aud", "agent-1"},
		{"iat", t0.Add(-time.Minute).Unix()},
		{"exp", t0.Add(4 * time.Minute).Unix()},
		{"jti", "op-1"},
		{"op", map[string]any{"node": "pve1", "type": "qemu", "vmid": 100, "kind": "start"}},
	}
	var b strings.Builder
	b.WriteByte('{')
	first := true
	put := func(k string, v any) {
		if !first {
			b.WriteByte(',')
		}
		first = false
		vb, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		b.WriteString(quote(k) + ":" + string(vb))
	}
	for _, m := range base {
		v, ok := edit[m.k]
		switch {
		case !ok:
			put(m.k, m.v)
		case v != nil:
			put(m.k, v)
		}
	}
	for k, v := range edit {
		known := false
		for _, m := range base {
			known = known || m.k == k
		}
		if !known && v != nil {
			put(k, v)
		}
	}
	b.WriteByte('}')
	return b.String()
}
