package signedop_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/guestward/guestward/reconcile/signedop"
)

// FuzzVerify feeds Verify raw tokens, and header and claims signed with a
// trusted key so that the fuzzer reaches the claims reader behind a valid
// signature. Nothing may panic, and whatever is accepted must be what the
// signature covers: an independent check with crypto/ed25519 holds, the
// payload decoded by plain encoding/json says the same as the claims
// returned, and Verify and Sign agree on a second round.
func FuzzVerify(f *testing.F) {
	_, priv := seedKey(1)
	good, err := signedop.Sign(priv, "k1", validClaims())
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(good, ".")
	header, _ := enc.DecodeString(parts[0])
	payload, _ := enc.DecodeString(parts[1])
	f.Add(good, header, payload, byte(0))
	f.Add("", header, payload, byte(1))
	f.Add("", []byte(`{"alg":"none","kid":"k1","typ":"guestward-op+jwt"}`), payload, byte(1))
	f.Add("", header, []byte(claimsJSON(map[string]any{"nbf": t0.Unix()})), byte(1))
	f.Add("", header, []byte(strings.Replace(string(payload), `"iss"`, `"ISS"`, 1)), byte(1))
	f.Add("", header, []byte(claimsJSON(map[string]any{"op": map[string]any{"node": "pve1", "type": "lxc", "vmid": 200, "kind": "shutdown", "timeout": 30}})), byte(1))
	f.Add(parts[0]+"."+parts[1]+".", header, payload, byte(0))
	f.Add(`{"payload":"`+parts[1]+`"}`, header, payload, byte(0))

	v := newTestVerifier(f)
	pub := priv.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, raw string, header, payload []byte, mode byte) {
		token := raw
		if mode%2 == 1 {
			token = forge(string(header), string(payload), edSign(priv))
		}
		c, err := v.Verify(token, t0)
		if err != nil {
			if c.Op.Key != "" || c.Audience != "" {
				t.Fatalf("claims returned with %v", err)
			}
			return
		}
		// The signature holds by crypto/ed25519's own check.
		p := strings.Split(token, ".")
		sig, err := enc.DecodeString(p[2])
		if err != nil || !ed25519.Verify(pub, []byte(p[0]+"."+p[1]), sig) {
			t.Fatalf("accepted a token whose signature crypto/ed25519 refuses")
		}
		// The claims returned are those of the signed payload.
		body, err := enc.DecodeString(p[1])
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatalf("accepted claims plain JSON cannot read: %v", err)
		}
		op, _ := m["op"].(map[string]any)
		checks := []struct {
			name string
			got  any
			raw  any
		}{
			{"iss", c.Issuer, m["iss"]},
			{"aud", c.Audience, m["aud"]},
			{"jti", c.Op.Key, m["jti"]},
			{"iat", json.Number(itoa(c.IssuedAt.Unix())), m["iat"]},
			{"exp", json.Number(itoa(c.Expiry.Unix())), m["exp"]},
			{"op.node", c.Op.Ref.Node, op["node"]},
			{"op.type", string(c.Op.Ref.Type), op["type"]},
			{"op.vmid", json.Number(itoa(int64(c.Op.Ref.VMID))), op["vmid"]},
			{"op.kind", string(c.Op.Kind), op["kind"]},
		}
		for _, ch := range checks {
			if ch.got != ch.raw {
				t.Fatalf("%s: claims say %v, payload %v", ch.name, ch.got, ch.raw)
			}
		}
		if nbf, ok := m["nbf"]; ok != !c.NotBefore.IsZero() || ok && nbf != json.Number(itoa(c.NotBefore.Unix())) {
			t.Fatalf("nbf: claims %v, payload %v", c.NotBefore, nbf)
		}
		if c.Op.Timeout%time.Second != 0 {
			t.Fatalf("timeout %v", c.Op.Timeout)
		}
		// Accepted again, the same; and signed again, the same.
		again, err := v.Verify(token, t0)
		if err != nil || !cmp.Equal(c, again) {
			t.Fatalf("second Verify: %v %s", err, cmp.Diff(c, again))
		}
		tok2, err := signedop.Sign(priv, "k1", c)
		if err != nil {
			t.Fatalf("Sign refuses accepted claims: %v", err)
		}
		c2, err := v.Verify(tok2, t0)
		if err != nil || !cmp.Equal(c, c2) {
			t.Fatalf("re-signed: %v %s", err, cmp.Diff(c, c2))
		}
	})
}
