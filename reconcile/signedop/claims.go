package signedop

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

// TokenType is the "typ" header of every token Sign makes; Verify requires
// it, so that a token signed by the same key for another purpose (another
// kind of JWT) is never taken for an operation.
const TokenType = "guestward-op+jwt"

// MaxNameLen bounds a key id, an issuer and an audience, in bytes.
const MaxNameLen = 256

// Claims is what a signed operation says: who signed it for whom, when it
// may be used, and the operation. Times travel in whole seconds (a JWT
// NumericDate): Sign drops fractions, and Verify returns times in UTC.
//
// A Claims is a plain value; Verify returns a fresh one each time.
type Claims struct {
	// Issuer names the hub that signed ("iss"); required. The verifier
	// trusts keys, not names: the issuer is recorded, the key id decides.
	Issuer string
	// Audience is the id of the one agent the operation is for ("aud");
	// required, a single string.
	Audience string
	// IssuedAt ("iat") and Expiry ("exp") are required; Expiry must come
	// after IssuedAt, within the verifier's maximum lifetime.
	IssuedAt time.Time
	Expiry   time.Time
	// NotBefore ("nbf") is optional: the zero time leaves it out.
	NotBefore time.Time
	// Op is the operation. Op.Key is the JWT ID ("jti"), and so the
	// idempotency key Engine.Apply runs it under: one token, one run,
	// ever. Op.AllowIrreversible is the signed approval of an action that
	// cannot be undone.
	Op reconcile.OneShot
}

// The wire form of the claims: a JWT claims set with the operation in
// "op". Every member but nbf and those of the operation's parameters is
// required; the decoder refuses unknown members, members in other letter
// case, repeated members and null (see checkStrict).
type wireClaims struct {
	Iss string  `json:"iss"`
	Aud string  `json:"aud"`
	Iat int64   `json:"iat"`
	Exp int64   `json:"exp"`
	Nbf *int64  `json:"nbf,omitempty"`
	Jti string  `json:"jti"`
	Op  *wireOp `json:"op"`
}

type wireOp struct {
	Node              string            `json:"node"`
	Type              string            `json:"type"`
	VMID              int               `json:"vmid"`
	Kind              string            `json:"kind"`
	Set               map[string]string `json:"set,omitempty"`
	Delete            []string          `json:"delete,omitempty"`
	Digest            string            `json:"digest,omitempty"`
	Timeout           int64             `json:"timeout,omitempty"` // seconds
	AllowIrreversible bool              `json:"allow_irreversible,omitempty"`
}

// claimsSchema is the wire form's members, as checkStrict reads them.
// TestSchemaMatchesTags keeps it in step with the struct tags.
var claimsSchema = schema{
	"":       {"iss", "aud", "iat", "exp", "nbf", "jti", "op"},
	"op":     {"node", "type", "vmid", "kind", "set", "delete", "digest", "timeout", "allow_irreversible"},
	"op.set": nil,
}

// requiredClaims must be present; the others may be left out.
var requiredClaims = []string{"iss", "aud", "iat", "exp", "jti", "op", "op.node", "op.type", "op.vmid", "op.kind"}

// The range of a NumericDate we accept: after the epoch, before the year
// 10000, so that every value converts to a time.Time and back exactly.
const (
	minDate = 1
	maxDate = 253402300799
)

// ErrInvalidClaims is returned, wrapped, by Sign for claims it cannot
// sign: a missing or overlong issuer or audience, a missing time, an
// expiry not after the issue time, or an operation that fails
// reconcile.OneShot.Validate (the error then matches
// reconcile.ErrInvalidOneShot too).
var ErrInvalidClaims = errors.New("signedop: invalid claims")

// ErrInvalidKey is returned, wrapped, by Sign for a private key or key id
// it cannot use, and by NewVerifier for a trusted key it cannot use.
var ErrInvalidKey = errors.New("signedop: invalid key")

// Sign returns c as a compact JWS (header.payload.signature) signed with
// priv under EdDSA, its header naming keyID ("kid") and TokenType
// ("typ"). It checks what Verify would refuse in any case: the key and
// key id, the names, the times (required, in range, expiry after issue
// and after not-before), and the operation (reconcile.OneShot.Validate).
// It does not check the lifetime against any verifier's maximum.
func Sign(priv ed25519.PrivateKey, keyID string, c Claims) (string, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("%w: private key of %d bytes, want %d", ErrInvalidKey, len(priv), ed25519.PrivateKeySize)
	}
	if err := checkName(keyID); err != nil {
		return "", fmt.Errorf("%w: key id: %w", ErrInvalidKey, err)
	}
	w, err := toWire(c)
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(w)
	if err != nil {
		return "", fmt.Errorf("signedop: encoding claims: %w", err)
	}
	opts := (&jose.SignerOptions{}).WithType(TokenType).WithHeader(jose.HeaderKey("kid"), keyID)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, opts)
	if err != nil {
		return "", fmt.Errorf("signedop: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("signedop: signing: %w", err)
	}
	return obj.CompactSerialize()
}

func toWire(c Claims) (wireClaims, error) {
	if err := checkName(c.Issuer); err != nil {
		return wireClaims{}, fmt.Errorf("%w: issuer: %w", ErrInvalidClaims, err)
	}
	if err := checkName(c.Audience); err != nil {
		return wireClaims{}, fmt.Errorf("%w: audience: %w", ErrInvalidClaims, err)
	}
	iat, err := numericDate("issued-at", c.IssuedAt)
	if err != nil {
		return wireClaims{}, err
	}
	exp, err := numericDate("expiry", c.Expiry)
	if err != nil {
		return wireClaims{}, err
	}
	if exp <= iat {
		return wireClaims{}, fmt.Errorf("%w: expiry %v is not after issued-at %v", ErrInvalidClaims, c.Expiry, c.IssuedAt)
	}
	w := wireClaims{Iss: c.Issuer, Aud: c.Audience, Iat: iat, Exp: exp, Jti: c.Op.Key}
	if !c.NotBefore.IsZero() {
		nbf, err := numericDate("not-before", c.NotBefore)
		if err != nil {
			return wireClaims{}, err
		}
		if nbf >= exp {
			return wireClaims{}, fmt.Errorf("%w: not-before %v is not before expiry %v", ErrInvalidClaims, c.NotBefore, c.Expiry)
		}
		w.Nbf = &nbf
	}
	if err := c.Op.Validate(); err != nil {
		return wireClaims{}, fmt.Errorf("%w: %w", ErrInvalidClaims, err)
	}
	w.Op = &wireOp{
		Node:              c.Op.Ref.Node,
		Type:              string(c.Op.Ref.Type),
		VMID:              c.Op.Ref.VMID,
		Kind:              string(c.Op.Kind),
		Set:               c.Op.Set,
		Delete:            c.Op.Delete,
		Digest:            c.Op.Digest,
		Timeout:           int64(c.Op.Timeout / time.Second),
		AllowIrreversible: c.Op.AllowIrreversible,
	}
	return w, nil
}

func numericDate(what string, t time.Time) (int64, error) {
	if t.IsZero() {
		return 0, fmt.Errorf("%w: %s is missing", ErrInvalidClaims, what)
	}
	s := t.Unix()
	if s < minDate || s > maxDate {
		return 0, fmt.Errorf("%w: %s %v out of range", ErrInvalidClaims, what, t)
	}
	return s, nil
}

// fromWire turns decoded wire claims into Claims; the operation is
// checked by the caller.
func fromWire(w wireClaims) Claims {
	c := Claims{
		Issuer:   w.Iss,
		Audience: w.Aud,
		IssuedAt: time.Unix(w.Iat, 0).UTC(),
		Expiry:   time.Unix(w.Exp, 0).UTC(),
		Op: reconcile.OneShot{
			Key:               w.Jti,
			Ref:               proxmox.Ref{Node: w.Op.Node, Type: proxmox.GuestType(w.Op.Type), VMID: w.Op.VMID},
			Kind:              reconcile.ActionKind(w.Op.Kind),
			Set:               w.Op.Set,
			Delete:            w.Op.Delete,
			Digest:            w.Op.Digest,
			Timeout:           time.Duration(w.Op.Timeout) * time.Second,
			AllowIrreversible: w.Op.AllowIrreversible,
		},
	}
	// An empty set or delete list is no change, as when left out: the
	// claims come back the same from every spelling.
	if len(c.Op.Set) == 0 {
		c.Op.Set = nil
	}
	if len(c.Op.Delete) == 0 {
		c.Op.Delete = nil
	}
	if w.Nbf != nil {
		c.NotBefore = time.Unix(*w.Nbf, 0).UTC()
	}
	return c
}

// checkName checks a key id, issuer or audience: 1 to MaxNameLen bytes of
// UTF-8 without control characters or white space at either end.
func checkName(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > MaxNameLen:
		return fmt.Errorf("%d bytes, more than %d", len(s), MaxNameLen)
	case !utf8.ValidString(s):
		return errors.New("not UTF-8")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return errors.New("holds a control character")
	case strings.TrimSpace(s) != s:
		return errors.New("white space at either end")
	}
	return nil
}
