// Package hubkey stores the Ed25519 keys the example hub signs operations
// with and the example agent trusts: the private key in a PEM file
// ("PRIVATE KEY", PKCS #8, as openssl genpkey -algorithm ed25519 writes it),
// the public keys in a PEM file of "PUBLIC KEY" blocks (PKIX, as openssl pkey
// -pubout writes them). A key's id is its JWK thumbprint (RFC 7638), so the
// hub and the agent derive the same id from the key alone and no id can be
// misconfigured. It is not part of guestward's API.
package hubkey

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxFileSize bounds a key file; a key is under 200 bytes of PEM.
const MaxFileSize = 64 << 10

// KeyID returns the JWK thumbprint of pub (RFC 7638, SHA-256), base64url:
// the hash of {"crv":"Ed25519","kty":"OKP","x":...}, its members in that
// order as the RFC requires.
func KeyID(pub ed25519.PublicKey) string {
	jwk := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	sum := sha256.Sum256([]byte(jwk))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Generate makes a new key pair, writes the private key to path (mode 0600,
// never over an existing file) and the public key to path+".pub", and
// returns the public key.
func Generate(path string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	pubPEM, err := MarshalPublic(pub)
	if err != nil {
		return nil, err
	}
	if err := writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(path+".pub", pubPEM, 0o644); err != nil {
		return nil, err
	}
	return pub, nil
}

// MarshalPublic returns pub as a PEM "PUBLIC KEY" block.
func MarshalPublic(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadPrivate reads the private key at path: one PEM "PRIVATE KEY" block
// holding an Ed25519 key, and nothing else.
func ReadPrivate(path string) (ed25519.PrivateKey, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: no PEM PRIVATE KEY block", path)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%s: data after the key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, not an Ed25519 key", path, k)
	}
	return priv, nil
}

// ReadTrusted reads the public keys at path: one or more PEM "PUBLIC KEY"
// blocks, each an Ed25519 key, nothing else but blank space between them.
// It returns them by key id (KeyID). Listing two keys is how a hub's key is
// rolled over: trust the new one, switch the hub to it, drop the old one.
func ReadTrusted(path string) (map[string]ed25519.PublicKey, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	keys := map[string]ed25519.PublicKey{}
	rest := data
	for n := 1; len(bytes.TrimSpace(rest)) > 0; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%s: key %d: not a PEM block", path, n)
		}
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%s: key %d: a PEM %q block, want PUBLIC KEY", path, n, block.Type)
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: key %d: %w", path, n, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%s: key %d: a %T, not an Ed25519 key", path, n, k)
		}
		id := KeyID(pub)
		if _, dup := keys[id]; dup {
			return nil, fmt.Errorf("%s: key %d: listed twice", path, n)
		}
		keys[id] = pub
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no public key", path)
	}
	return keys, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, errors.New(path + ": larger than a key file can be")
	}
	return data, nil
}
