package signedop_test

import (
	"crypto/ed25519"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

var sentinels = []error{
	signedop.ErrTooLarge, signedop.ErrMalformed, signedop.ErrHeader, signedop.ErrCritical,
	signedop.ErrAlgorithm, signedop.ErrUnknownKey, signedop.ErrSignature, signedop.ErrAudience,
	signedop.ErrLifetime, signedop.ErrInvalidOp, signedop.ErrNotYetValid, signedop.ErrExpired,
}

func newTestVerifier(t testing.TB, opts ...signedop.Option) *signedop.Verifier {
	t.Helper()
	pub1, _ := seedKey(1)
	pub2, _ := seedKey(2)
	v, err := signedop.NewVerifier("agent-1", map[string]ed25519.PublicKey{"k1": pub1, "k2": pub2}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyRefusals(t *testing.T) {
	pub1, priv1 := seedKey(1)
	_, priv2 := seedKey(2)
	_, evil := seedKey(9)
	evilPub := evil.Public().(ed25519.PublicKey)
	ok := func(kid string, priv ed25519.PrivateKey, edit map[string]any) string {
		return forge(hdr(kid), claimsJSON(edit), edSign(priv))
	}
	withHeader := func(h string) string { return forge(h, claimsJSON(nil), edSign(priv1)) }
	withClaims := func(c string) string { return forge(hdr("k1"), c, edSign(priv1)) }
	good := ok("k1", priv1, nil)
	parts := strings.Split(good, ".")
	at := func(d time.Duration) int64 { return t0.Add(d).Unix() }

	tests := []struct {
		name   string
		reason string
		token  string
		want   error // nil: accepted
	}{
		{"valid", "the baseline every case departs from", good, nil},
		{"second key", "key rotation: any trusted key id, its own key", ok("k2", priv2, nil), nil},

		// Signatures.
		{"bit flipped", "a signature over other bytes", parts[0] + "." + parts[1] + "." + flip(parts[2]), signedop.ErrSignature},
		{"payload changed", "the claims are what the signature covers", parts[0] + "." + enc.EncodeToString([]byte(claimsJSON(map[string]any{"jti": "op-2"}))) + "." + parts[2], signedop.ErrSignature},
		{"no signature", "an empty third part", parts[0] + "." + parts[1] + ".", signedop.ErrSignature},
		{"short signature", "not 64 bytes", parts[0] + "." + parts[1] + "." + enc.EncodeToString([]byte("abc")), signedop.ErrSignature},
		{"other key, known kid", "signed by a key the kid does not name", ok("k1", priv2, nil), signedop.ErrSignature},
		{"attacker key", "signed by an untrusted key under a trusted kid", ok("k1", evil, nil), signedop.ErrSignature},

		// Algorithms.
		{"alg none", "unsigned token", forge(`{"alg":"none","kid":"k1","typ":"guestward-op+jwt"}`, claimsJSON(nil), nil), signedop.ErrAlgorithm},
		{"alg None", "none in other case", forge(`{"alg":"None","kid":"k1","typ":"guestward-op+jwt"}`, claimsJSON(nil), nil), signedop.ErrAlgorithm},
		{"HS256 with public key", "the classic confusion: the public key used as an HMAC secret", forge(`{"alg":"HS256","kid":"k1","typ":"guestward-op+jwt"}`, claimsJSON(nil), hmacSign(pub1)), signedop.ErrAlgorithm},
		{"RS256", "another asymmetric algorithm", forge(`{"alg":"RS256","kid":"k1","typ":"guestward-op+jwt"}`, claimsJSON(nil), edSign(priv1)), signedop.ErrAlgorithm},
		{"ES256", "another asymmetric algorithm", forge(`{"alg":"ES256","kid":"k1","typ":"guestward-op+jwt"}`, claimsJSON(nil), edSign(priv1)), signedop.ErrAlgorithm},
		{"alg eddsa", "alg compares exactly", withHeader(`{"alg":"eddsa","kid":"k1","typ":"guestward-op+jwt"}`), signedop.ErrAlgorithm},
		{"alg Ed25519", "the curve is not the JOSE name", withHeader(`{"alg":"Ed25519","kid":"k1","typ":"guestward-op+jwt"}`), signedop.ErrAlgorithm},
		{"alg missing", "no algorithm at all", withHeader(`{"kid":"k1","typ":"guestward-op+jwt"}`), signedop.ErrAlgorithm},
		{"alg not a string", "a list of algorithms", withHeader(`{"alg":["EdDSA"],"kid":"k1","typ":"guestward-op+jwt"}`), signedop.ErrAlgorithm},

		// Keys.
		{"unknown kid", "a key the verifier does not trust", ok("k3", priv1, nil), signedop.ErrUnknownKey},
		{"kid case", "key ids compare exactly", ok("K1", priv1, nil), signedop.ErrUnknownKey},
		{"no kid", "the key must be named", withHeader(`{"alg":"EdDSA","typ":"guestward-op+jwt"}`), signedop.ErrUnknownKey},
		{"kid not a string", "a kid of another type", withHeader(`{"alg":"EdDSA","kid":1,"typ":"guestward-op+jwt"}`), signedop.ErrHeader},
		{"embedded jwk", "a key carried by the token is never trusted", forge(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","jwk":{"kty":"OKP","crv":"Ed25519","x":"`+enc.EncodeToString(evilPub)+`"}}`, claimsJSON(nil), edSign(evil)), signedop.ErrHeader},
		{"jku", "a key URL is never fetched", withHeader(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","jku":"https://evil.example/keys"}`), signedop.ErrHeader},
		{"x5u", "a certificate URL is never fetched", withHeader(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","x5u":"https://evil.example/cert"}`), signedop.ErrHeader},
		{"x5c", "a certificate chain is never trusted", withHeader(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","x5c":["MIIB"]}`), signedop.ErrHeader},
		{"unknown header member", "only alg, kid and typ are read", withHeader(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","zip":"DEF"}`), signedop.ErrHeader},
		{"no typ", "the token type is required", withHeader(`{"alg":"EdDSA","kid":"k1"}`), signedop.ErrHeader},
		{"typ JWT", "a token of another kind", withHeader(`{"alg":"EdDSA","kid":"k1","typ":"JWT"}`), signedop.ErrHeader},
		{"crit", "no extension is understood", withHeader(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","crit":["exp"],"exp":1}`), signedop.ErrCritical},
		{"crit b64", "not even the one the library knows", withHeader(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","crit":["b64"],"b64":true}`), signedop.ErrCritical},
		{"crit empty", "an empty crit list is invalid JWS", withHeader(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","crit":[]}`), signedop.ErrCritical},
		{"duplicate alg", "the last of a repeated member would win", withHeader(`{"alg":"none","kid":"k1","typ":"guestward-op+jwt","alg":"EdDSA"}`), signedop.ErrMalformed},
		{"duplicate kid", "which key would be meant?", withHeader(`{"alg":"EdDSA","kid":"k2","typ":"guestward-op+jwt","kid":"k1"}`), signedop.ErrMalformed},
		{"header case variant", "ALG repeats alg but for case", withHeader(`{"alg":"EdDSA","kid":"k1","typ":"guestward-op+jwt","ALG":"none"}`), signedop.ErrMalformed},
		{"header null", "the header must be an object", withHeader(`null`), signedop.ErrMalformed},
		{"header list", "the header must be an object", withHeader(`["EdDSA"]`), signedop.ErrMalformed},
		{"header not JSON", "garbage", withHeader(`{alg:EdDSA}`), signedop.ErrMalformed},
		{"header trailing", "data after the header object", withHeader(hdr("k1") + `{}`), signedop.ErrMalformed},
		{"header not UTF-8", "bytes encoding/json would replace", withHeader("{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"typ\":\"guestward-op+jwt\",\"x\":\"\xff\"}"), signedop.ErrMalformed},

		// Audience.
		{"wrong audience", "a token for another agent", ok("k1", priv1, map[string]any{"aud": "agent-2"}), signedop.ErrAudience},
		{"audience case", "agent ids compare exactly", ok("k1", priv1, map[string]any{"aud": "Agent-1"}), signedop.ErrAudience},
		{"audience list", "one audience, a string: a list could name many agents", ok("k1", priv1, map[string]any{"aud": []string{"agent-1"}}), signedop.ErrMalformed},
		{"audience missing", "required", ok("k1", priv1, map[string]any{"aud": nil}), signedop.ErrMalformed},

		// Time.
		{"expired", "expired beyond the skew", ok("k1", priv1, map[string]any{"iat": at(-10 * time.Minute), "exp": at(-31 * time.Second)}), signedop.ErrExpired},
		{"expired at the edge", "now - skew reaching exp is expired", ok("k1", priv1, map[string]any{"iat": at(-10 * time.Minute), "exp": at(-30 * time.Second)}), signedop.ErrExpired},
		{"expired within skew", "a small clock difference is tolerated", ok("k1", priv1, map[string]any{"iat": at(-10 * time.Minute), "exp": at(-29 * time.Second)}), nil},
		{"issued in the future", "iat later than now beyond the skew", ok("k1", priv1, map[string]any{"iat": at(31 * time.Second), "exp": at(5 * time.Minute)}), signedop.ErrNotYetValid},
		{"issued within skew", "iat slightly ahead is tolerated", ok("k1", priv1, map[string]any{"iat": at(30 * time.Second), "exp": at(5 * time.Minute)}), nil},
		{"nbf ahead", "not valid yet", ok("k1", priv1, map[string]any{"nbf": at(31 * time.Second)}), signedop.ErrNotYetValid},
		{"nbf within skew", "tolerated", ok("k1", priv1, map[string]any{"nbf": at(30 * time.Second)}), nil},
		{"lifetime over max", "exp - iat above 15 minutes", ok("k1", priv1, map[string]any{"iat": at(-time.Minute), "exp": at(14*time.Minute + time.Second)}), signedop.ErrLifetime},
		{"lifetime at max", "exactly the maximum is accepted", ok("k1", priv1, map[string]any{"iat": at(-time.Minute), "exp": at(14 * time.Minute)}), nil},
		{"exp equals iat", "no lifetime", ok("k1", priv1, map[string]any{"iat": at(0), "exp": at(0)}), signedop.ErrLifetime},
		{"exp before iat", "negative lifetime", ok("k1", priv1, map[string]any{"iat": at(0), "exp": at(-time.Second)}), signedop.ErrLifetime},
		{"nbf after exp", "never valid", ok("k1", priv1, map[string]any{"nbf": at(5 * time.Minute)}), signedop.ErrLifetime},
		{"exp missing", "expiry is required", ok("k1", priv1, map[string]any{"exp": nil}), signedop.ErrMalformed},
		{"iat missing", "issued-at is required, to bound the lifetime", ok("k1", priv1, map[string]any{"iat": nil}), signedop.ErrMalformed},
		{"exp fractional", "a NumericDate in whole seconds", withClaims(strings.Replace(claimsJSON(nil), `"exp":`+itoa(at(4*time.Minute)), `"exp":`+itoa(at(4*time.Minute))+`.5`, 1)), signedop.ErrMalformed},
		{"exp string", "a date is a number", ok("k1", priv1, map[string]any{"exp": itoa(at(4 * time.Minute))}), signedop.ErrMalformed},
		{"exp huge", "out of range", ok("k1", priv1, map[string]any{"exp": int64(1) << 60}), signedop.ErrMalformed},
		{"iat zero", "out of range", ok("k1", priv1, map[string]any{"iat": 0}), signedop.ErrMalformed},

		// Claims decoding.
		{"claim case variant", "encoding/json would read ISS as iss", withClaims(strings.Replace(claimsJSON(nil), `"iss"`, `"ISS"`, 1)), signedop.ErrMalformed},
		{"claim kelvin sign", "encoding/json folds K (U+212A) to k", withClaims(strings.Replace(claimsJSON(nil), `"kind"`, "\"\u212aind\"", 1)), signedop.ErrMalformed},
		{"duplicate jti", "the last would win", withClaims(strings.Replace(claimsJSON(nil), `"jti":"op-1"`, `"jti":"op-1","jti":"op-2"`, 1)), signedop.ErrMalformed},
		{"duplicate in op", "a repeated vmid", withClaims(strings.Replace(claimsJSON(nil), `"vmid":100`, `"vmid":100,"vmid":101`, 1)), signedop.ErrMalformed},
		{"op case variant", "VMID repeats vmid but for case", withClaims(strings.Replace(claimsJSON(nil), `"vmid":100`, `"vmid":100,"VMID":101`, 1)), signedop.ErrMalformed},
		{"duplicate set option", "a repeated option in set", withClaims(strings.Replace(claimsJSON(map[string]any{"op": map[string]any{"node": "pve1", "type": "qemu", "vmid": 100, "kind": "set_config", "set": map[string]string{"memory": "1024"}}}), `"memory":"1024"`, `"memory":"1024","memory":"4096"`, 1)), signedop.ErrMalformed},
		{"unknown claim", "a member nobody reads", ok("k1", priv1, map[string]any{"admin": true}), signedop.ErrMalformed},
		{"unknown op member", "a parameter the op does not have", ok("k1", priv1, map[string]any{"op": map[string]any{"node": "pve1", "type": "qemu", "vmid": 100, "kind": "start", "force": true}}), signedop.ErrMalformed},
		{"null jti", "null is not a key", withClaims(strings.Replace(claimsJSON(nil), `"jti":"op-1"`, `"jti":null`, 1)), signedop.ErrMalformed},
		{"null op", "null is not an operation", withClaims(strings.Replace(claimsJSON(nil), `"op":{`, `"op":null,"x":{`, 1)), signedop.ErrMalformed},
		{"null set", "null is not a change", ok("k1", priv1, map[string]any{"op": map[string]any{"node": "pve1", "type": "qemu", "vmid": 100, "kind": "start", "set": nil}}), signedop.ErrMalformed},
		{"op missing", "the operation is required", ok("k1", priv1, map[string]any{"op": nil}), signedop.ErrMalformed},
		{"op kind missing", "required", ok("k1", priv1, map[string]any{"op": map[string]any{"node": "pve1", "type": "qemu", "vmid": 100}}), signedop.ErrMalformed},
		{"vmid string", "wrong type", ok("k1", priv1, map[string]any{"op": map[string]any{"node": "pve1", "type": "qemu", "vmid": "100", "kind": "start"}}), signedop.ErrMalformed},
		{"claims not UTF-8", "bytes encoding/json would replace", withClaims(strings.Replace(claimsJSON(nil), `"hub-1"`, "\"hub-\xff\"", 1)), signedop.ErrMalformed},
		{"lone surrogate", "an escape encoding/json would replace", withClaims(strings.Replace(claimsJSON(nil), `"hub-1"`, `"hub-\ud800"`, 1)), signedop.ErrMalformed},
		{"claims trailing", "data after the claims", withClaims(claimsJSON(nil) + ` {}`), signedop.ErrMalformed},
		{"claims list", "claims are an object", withClaims(`[` + claimsJSON(nil) + `]`), signedop.ErrMalformed},
		{"issuer empty", "the signer names itself", ok("k1", priv1, map[string]any{"iss": ""}), signedop.ErrMalformed},
		{"issuer padded", "a name Sign would refuse (found by FuzzVerify)", ok("k1", priv1, map[string]any{"iss": " hub-1"}), signedop.ErrMalformed},
		{"empty set", "no change, as when left out", ok("k1", priv1, map[string]any{"op": map[string]any{"node": "pve1", "type": "qemu", "vmid": 100, "kind": "set_config", "set": map[string]string{}, "delete": []string{"args"}}}), nil},

		// The operation.
		{"invalid kind", "a kind Apply does not know", ok("k1", priv1, map[string]any{"op": map[string]any{"node": "pve1", "type": "qemu", "vmid": 100, "kind": "destroy"}}), signedop.ErrInvalidOp},
		{"empty jti", "the idempotency key is required", ok("k1", priv1, map[string]any{"jti": ""}), signedop.ErrInvalidOp},
		{"negative timeout", "out of range", ok("k1", priv1, map[string]any{"op": map[string]any{"node": "pve1", "type": "qemu", "vmid": 100, "kind": "shutdown", "timeout": -1}}), signedop.ErrInvalidOp},
		{"huge timeout", "would overflow a duration", ok("k1", priv1, map[string]any{"op": map[string]any{"node": "pve1", "type": "qemu", "vmid": 100, "kind": "shutdown", "timeout": int64(1) << 40}}), signedop.ErrInvalidOp},
		{"bad vmid", "not a guest", ok("k1", priv1, map[string]any{"op": map[string]any{"node": "pve1", "type": "qemu", "vmid": 7, "kind": "start"}}), signedop.ErrInvalidOp},

		// Compact form.
		{"two parts", "no signature part", parts[0] + "." + parts[1], signedop.ErrMalformed},
		{"four parts", "a JWE-like shape", good + ".x", signedop.ErrMalformed},
		{"empty", "nothing", "", signedop.ErrMalformed},
		{"padding", "base64url without padding", parts[0] + "=." + parts[1] + "." + parts[2], signedop.ErrMalformed},
		{"standard base64", "+ and / are not base64url", strings.Replace(good, "-", "+", 1) + "+", signedop.ErrMalformed},
		{"leading space", "the token is exact", " " + good, signedop.ErrMalformed},
		{"trailing newline", "the token is exact", good + "\n", signedop.ErrMalformed},
		{"empty header", "no header", "." + parts[1] + "." + parts[2], signedop.ErrMalformed},
		{"empty payload", "no claims", parts[0] + ".." + parts[2], signedop.ErrMalformed},
		{"non-canonical base64", "trailing bits set", parts[0] + "." + parts[1] + "." + nonCanonical(parts[2]), signedop.ErrMalformed},
		{"JSON serialization", "only the compact form is accepted", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, signedop.ErrMalformed},

		// Size.
		{"oversized", "refused before parsing", strings.Repeat("A", signedop.DefaultMaxTokenSize+1), signedop.ErrTooLarge},
	}
	v := newTestVerifier(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(tt.token, t0)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("%s: Verify: %v", tt.reason, err)
				}
				if c.Op.Key == "" {
					t.Fatalf("accepted claims without a key: %+v", c)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("%s: Verify = %v, want %v", tt.reason, err, tt.want)
			}
			for _, s := range sentinels {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("error %v also matches %v", err, s)
				}
			}
			if tt.want == signedop.ErrInvalidOp && !errors.Is(err, reconcile.ErrInvalidOneShot) {
				t.Errorf("ErrInvalidOp %v does not match reconcile.ErrInvalidOneShot", err)
			}
			var exp *signedop.ExpiredError
			if got := errors.As(err, &exp); got != (tt.want == signedop.ErrExpired) {
				t.Errorf("errors.As ExpiredError = %v for %v", got, err)
			}
			if c.Op.Key != "" || c.Audience != "" {
				t.Errorf("refused token returned claims %+v", c)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// flip changes the first character of a base64url string.
func flip(s string) string {
	c := byte('A')
	if s[0] == 'A' {
		c = 'B'
	}
	return string(c) + s[1:]
}

// nonCanonical sets the unused low bits of the last character of an
// unpadded base64url string, which a lenient decoder ignores.
func nonCanonical(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[last^1])
}
