package hubkey_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestward/guestward/examples/internal/hubkey"
)

// The thumbprint of the Ed25519 key of RFC 8037, appendix A.3.
func TestKeyIDVector(t *testing.T) {
	x, err := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hubkey.KeyID(x), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; got != want {
		t.Errorf("KeyID = %s, want %s", got, want)
	}
}

func TestGenerateAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.key")
	pub, err := hubkey.Generate(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v", info.Mode().Perm())
	}
	priv, err := hubkey.ReadPrivate(path)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(priv.Public()) {
		t.Error("the private key read does not match the public key")
	}
	keys, err := hubkey.ReadTrusted(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || !keys[hubkey.KeyID(pub)].Equal(pub) {
		t.Errorf("trusted keys %v", keys)
	}
	if _, err := hubkey.Generate(path); err == nil {
		t.Error("Generate overwrote an existing key")
	}
}

func TestReadTrustedRotation(t *testing.T) {
	dir := t.TempDir()
	a, _, _ := ed25519.GenerateKey(rand.Reader)
	b, _, _ := ed25519.GenerateKey(rand.Reader)
	pa, _ := hubkey.MarshalPublic(a)
	pb, _ := hubkey.MarshalPublic(b)
	path := filepath.Join(dir, "trusted.pem")
	if err := os.WriteFile(path, append(append(pa, '\n'), pb...), 0o644); err != nil {
		t.Fatal(err)
	}
	keys, err := hubkey.ReadTrusted(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !keys[hubkey.KeyID(a)].Equal(a) || !keys[hubkey.KeyID(b)].Equal(b) {
		t.Errorf("keys %v", keys)
	}
}

func TestReadRefuses(t *testing.T) {
	dir := t.TempDir()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	pubPEM, _ := hubkey.MarshalPublic(pub)
	keyPath := filepath.Join(dir, "k")
	if _, err := hubkey.Generate(keyPath); err != nil {
		t.Fatal(err)
	}
	privPEM, _ := os.ReadFile(keyPath)
	tests := []struct {
		name, reason, content string
		private               bool
	}{
		{"empty", "no key at all", "", false},
		{"garbage", "not PEM", "hello\n", false},
		{"trailing garbage", "text after the key could hide a mistake", string(pubPEM) + "junk\n", false},
		{"duplicate", "the same key twice", string(pubPEM) + string(pubPEM), false},
		{"private as trusted", "a private key is not a trusted key", string(privPEM), false},
		{"public as private", "the hub needs its private key", string(pubPEM), true},
		{"private trailing", "data after the private key", string(privPEM) + "x", true},
		{"huge", "bounded", strings.Repeat("#", hubkey.MaxFileSize+1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			var err error
			if tt.private {
				_, err = hubkey.ReadPrivate(path)
			} else {
				_, err = hubkey.ReadTrusted(path)
			}
			if err == nil {
				t.Errorf("%s: accepted", tt.reason)
			}
		})
	}
}
