package signedop_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/guestward/guestward/reconcile/signedop"
)

// A trusted key of small order would let anyone forge: crypto/ed25519
// accepts, under the identity point, the same signature for every message.
// NewVerifier refuses such keys, and keys that are no point.
func TestNewVerifierRefusesWeakKeys(t *testing.T) {
	identity := make([]byte, 32)
	identity[0] = 1
	forged := make([]byte, 64)
	forged[0] = 1 // R = the identity, S = 0
	if !ed25519.Verify(identity, []byte("any message"), forged) {
		t.Log("crypto/ed25519 no longer accepts the forgery; the check stays as a guard")
	}
	weak := map[string]string{
		// The eight points of order dividing 8, as they are usually
		// encoded, and non-canonical encodings of some of them.
		"identity":               "0100000000000000000000000000000000000000000000000000000000000000",
		"order 2":                "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"order 4":                "0000000000000000000000000000000000000000000000000000000000000000",
		"order 4, other sign":    "0000000000000000000000000000000000000000000000000000000000000080",
		"order 8 a":              "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
		"order 8 b":              "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
		"order 8 c":              "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
		"order 8 d":              "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
		"identity, y = p + 1":    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"order 4, y = p":         "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"not a point (y = 2)":    "0200000000000000000000000000000000000000000000000000000000000000",
		"identity with sign bit": "0100000000000000000000000000000000000000000000000000000000000080",
	}
	for name, h := range weak {
		key, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := signedop.NewVerifier("agent-1", map[string]ed25519.PublicKey{"k": key}); !errors.Is(err, signedop.ErrInvalidKey) {
			t.Errorf("%s: NewVerifier = %v, want ErrInvalidKey", name, err)
		}
	}
	for range 50 {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := signedop.NewVerifier("agent-1", map[string]ed25519.PublicKey{"k": pub}); err != nil {
			t.Fatalf("a generated key %x refused: %v", pub, err)
		}
	}
}
