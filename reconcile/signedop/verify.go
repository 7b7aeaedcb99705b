package signedop

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

// The refusals of Verify. Each refusal matches exactly one of them
// (errors.Is), except ErrInvalidOp, which also matches
// reconcile.ErrInvalidOneShot. None of them touches a journal or an
// engine, and their messages never quote the token.
var (
	// ErrTooLarge: the token is longer than the verifier's maximum size
	// (WithMaxTokenSize); nothing of it was parsed.
	ErrTooLarge = errors.New("signedop: token too large")
	// ErrMalformed: not a JWS in compact serialization (three base64url
	// parts, unpadded, in canonical form) whose header and claims are
	// strict JSON objects (no member repeated, exactly or in other letter
	// case; no unknown claim, no null, only UTF-8, nothing after the
	// object); or claims missing a required member or holding one of the
	// wrong type (an audience must be one string, not a list). JSON serialization, several signatures and
	// unprotected headers are all malformed here. Claims are only decoded
	// once the signature holds.
	ErrMalformed = errors.New("signedop: malformed token")
	// ErrHeader: the protected header holds a member Verify does not
	// honour: a key or certificate it should fetch or trust (jwk, jku,
	// x5u, x5c, x5t, x5t#S256), any member besides alg, kid, typ and
	// crit, a typ other than TokenType, or a kid that is not a string.
	ErrHeader = errors.New("signedop: header not accepted")
	// ErrCritical: the header has a crit member. Verify understands no
	// extension, so any is refused, even an empty list.
	ErrCritical = errors.New("signedop: critical header parameter not understood")
	// ErrAlgorithm: the header's alg is not exactly "EdDSA" (none, HMAC,
	// RSA and ECDSA included, and any other spelling).
	ErrAlgorithm = errors.New("signedop: algorithm not accepted")
	// ErrUnknownKey: the header has no kid, or names a key the verifier
	// does not trust.
	ErrUnknownKey = errors.New("signedop: unknown key id")
	// ErrSignature: the signature is missing or does not verify under the
	// key the kid names.
	ErrSignature = errors.New("signedop: bad signature")
	// ErrAudience: the token is for another agent.
	ErrAudience = errors.New("signedop: wrong audience")
	// ErrLifetime: the token's lifetime (expiry minus issued-at) is not
	// positive or exceeds the verifier's maximum (WithMaxLifetime), or its
	// not-before is not before its expiry.
	ErrLifetime = errors.New("signedop: token lifetime not accepted")
	// ErrInvalidOp: the operation fails reconcile.OneShot.Validate (the
	// error also matches reconcile.ErrInvalidOneShot).
	ErrInvalidOp = errors.New("signedop: invalid operation")
	// ErrNotYetValid: the token was issued, or becomes valid (nbf), later
	// than now plus the clock skew.
	ErrNotYetValid = errors.New("signedop: token not yet valid")
	// ErrExpired: the token expired before now minus the clock skew. The
	// error is an *ExpiredError, which carries the claims: everything else
	// held.
	ErrExpired = errors.New("signedop: token expired")
)

// ExpiredError is Verify's error for a token that passed every check but
// its expiry: its signature, key, audience, lifetime and operation all
// hold. It carries the claims so that a caller can answer a replay of a
// request that already ran (Engine.Lookup with Claims.Op.Key); it must
// never run the operation. errors.Is(err, ErrExpired) holds.
type ExpiredError struct {
	Claims Claims
	Now    time.Time
}

func (e *ExpiredError) Error() string {
	return fmt.Sprintf("%v: expired at %v, now %v", ErrExpired, e.Claims.Expiry, e.Now.UTC())
}

// Unwrap returns ErrExpired.
func (e *ExpiredError) Unwrap() error { return ErrExpired }

// Defaults of a Verifier's options.
const (
	DefaultMaxLifetime  = 15 * time.Minute
	DefaultClockSkew    = 30 * time.Second
	DefaultMaxTokenSize = 64 << 10
	// MaxTokenSizeLimit bounds WithMaxTokenSize.
	MaxTokenSizeLimit = 1 << 20
)

// An Option configures a Verifier.
type Option interface {
	apply(*Verifier) error
}

type optionFunc func(*Verifier) error

func (f optionFunc) apply(v *Verifier) error { return f(v) }

// WithMaxLifetime sets the longest lifetime (expiry minus issued-at) a
// token may have; default DefaultMaxLifetime. It must be positive. A short
// lifetime bounds how long a stolen, unused token is good for.
func WithMaxLifetime(d time.Duration) Option {
	return optionFunc(func(v *Verifier) error {
		if d <= 0 {
			return fmt.Errorf("signedop: max lifetime %v is not positive", d)
		}
		v.maxLifetime = d
		return nil
	})
}

// WithClockSkew sets how far the hub's clock and the agent's may differ;
// default DefaultClockSkew. It must be at least 0 and less than the
// maximum lifetime.
func WithClockSkew(d time.Duration) Option {
	return optionFunc(func(v *Verifier) error {
		if d < 0 {
			return fmt.Errorf("signedop: clock skew %v is negative", d)
		}
		v.skew = d
		return nil
	})
}

// WithMaxTokenSize sets the longest token accepted, in bytes; default
// DefaultMaxTokenSize, at most MaxTokenSizeLimit, at least 64.
func WithMaxTokenSize(n int) Option {
	return optionFunc(func(v *Verifier) error {
		if n < 64 || n > MaxTokenSizeLimit {
			return fmt.Errorf("signedop: max token size %d is not within [64, %d]", n, MaxTokenSizeLimit)
		}
		v.maxSize = n
		return nil
	})
}

// Verifier checks signed operations for one agent. It is immutable and
// safe for concurrent use.
type Verifier struct {
	audience    string
	keys        map[string]ed25519.PublicKey
	maxLifetime time.Duration
	skew        time.Duration
	maxSize     int
}

// NewVerifier returns a verifier for the agent whose id is audience,
// trusting keys by key id: several at once, so that a hub can roll its
// key over (trust the new one, sign with it, then drop the old one).
// keys is copied. Every key id must be 1 to MaxNameLen bytes of UTF-8
// without control characters or surrounding white space, and every key
// ed25519.PublicKeySize bytes encoding a point of the curve that is not of
// small order (under such a point, which has no private key, anyone can
// forge signatures that crypto/ed25519 accepts); errors wrap ErrInvalidKey.
func NewVerifier(audience string, keys map[string]ed25519.PublicKey, opts ...Option) (*Verifier, error) {
	if err := checkName(audience); err != nil {
		return nil, fmt.Errorf("signedop: audience: %w", err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no trusted key", ErrInvalidKey)
	}
	v := &Verifier{
		audience:    audience,
		keys:        make(map[string]ed25519.PublicKey, len(keys)),
		maxLifetime: DefaultMaxLifetime,
		skew:        DefaultClockSkew,
		maxSize:     DefaultMaxTokenSize,
	}
	for kid, k := range keys {
		if err := checkName(kid); err != nil {
			return nil, fmt.Errorf("%w: key id: %w", ErrInvalidKey, err)
		}
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: key %q of %d bytes, want %d", ErrInvalidKey, kid, len(k), ed25519.PublicKeySize)
		}
		if err := checkPublicPoint(k); err != nil {
			return nil, fmt.Errorf("%w: key %q: %w", ErrInvalidKey, kid, err)
		}
		v.keys[kid] = bytes.Clone(k)
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.apply(v); err != nil {
			return nil, err
		}
	}
	if v.skew >= v.maxLifetime {
		return nil, fmt.Errorf("signedop: clock skew %v is not less than the max lifetime %v", v.skew, v.maxLifetime)
	}
	return v, nil
}

// Audience returns the agent id the verifier accepts tokens for.
func (v *Verifier) Audience() string { return v.audience }

// MaxTokenSize returns the longest token the verifier accepts, in bytes.
func (v *Verifier) MaxTokenSize() int { return v.maxSize }

// headerSchema lets checkStrict read any member, and values of any shape,
// so that Verify can say why a member is refused.
var headerSchema = schema{"": nil, "#": nil}

// keyHeaders are the header members that bring or point to a key; a
// verifier that honoured one would let the token choose its own key.
var keyHeaders = map[string]bool{"jwk": true, "jku": true, "x5u": true, "x5c": true, "x5t": true, "x5t#S256": true}

var b64 = base64.RawURLEncoding.Strict()

// Verify checks token at time now and returns its claims. The checks run
// in this order, and the first that fails decides the error: size
// (ErrTooLarge); the compact form (ErrMalformed); the protected header:
// strict JSON (ErrMalformed), crit (ErrCritical), alg (ErrAlgorithm),
// other members (ErrHeader), kid (ErrUnknownKey); the signature
// (ErrSignature); then the claims, which are read only once the signature
// holds: strict JSON and required members (ErrMalformed), audience
// (ErrAudience), lifetime (ErrLifetime), operation (ErrInvalidOp), and
// last the time: not yet valid (ErrNotYetValid) or expired (an
// *ExpiredError).
//
// Verify does no I/O: it never touches a journal, so a refused token
// costs the agent nothing but the check. A token that passes may still
// have been used: replay is Engine.Apply's to decide, by the JWT ID.
func (v *Verifier) Verify(token string, now time.Time) (Claims, error) {
	if len(token) > v.maxSize {
		return Claims{}, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(token), v.maxSize)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Claims{}, fmt.Errorf("%w: not three dot-separated parts", ErrMalformed)
	}
	for i, p := range parts {
		if p == "" && i != 2 {
			return Claims{}, fmt.Errorf("%w: empty part %d", ErrMalformed, i+1)
		}
		if !isBase64URL(p) {
			return Claims{}, fmt.Errorf("%w: part %d is not unpadded base64url", ErrMalformed, i+1)
		}
	}
	header, err := b64.DecodeString(parts[0])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: header is not canonical base64url", ErrMalformed)
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload is not canonical base64url", ErrMalformed)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: signature is not canonical base64url", ErrMalformed)
	}
	kid, err := v.checkHeader(header)
	if err != nil {
		return Claims{}, err
	}
	key := v.keys[kid]
	if len(sig) != ed25519.SignatureSize {
		return Claims{}, fmt.Errorf("%w: signature of %d bytes, want %d", ErrSignature, len(sig), ed25519.SignatureSize)
	}

	// The library parses and verifies; the checks above have already
	// pinned what it may accept (one compact signature, EdDSA, our key).
	obj, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil || len(obj.Signatures) != 1 {
		return Claims{}, fmt.Errorf("%w: the JWS does not parse", ErrMalformed)
	}
	s := obj.Signatures[0]
	if s.Protected.Algorithm != string(jose.EdDSA) || s.Protected.KeyID != kid || s.Unprotected.Algorithm != "" || s.Unprotected.KeyID != "" {
		return Claims{}, fmt.Errorf("%w: the JWS's header reads otherwise", ErrMalformed)
	}
	verified, err := obj.Verify(key)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: under key id of %d bytes", ErrSignature, len(kid))
	}
	if !bytes.Equal(verified, payload) {
		return Claims{}, fmt.Errorf("%w: the verified payload differs", ErrMalformed)
	}
	return v.checkClaims(payload, now)
}

// checkHeader checks the decoded protected header and returns its kid.
func (v *Verifier) checkHeader(header []byte) (string, error) {
	if _, err := checkStrict(header, headerSchema); err != nil {
		return "", fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(header, &h); err != nil {
		return "", fmt.Errorf("%w: header is not an object", ErrMalformed)
	}
	if _, ok := h["crit"]; ok {
		return "", ErrCritical
	}
	var alg string
	if err := json.Unmarshal(h["alg"], &alg); err != nil || alg != string(jose.EdDSA) {
		return "", fmt.Errorf("%w: want EdDSA", ErrAlgorithm)
	}
	for name := range h {
		switch {
		case keyHeaders[name]:
			return "", fmt.Errorf("%w: a header that carries or points to a key", ErrHeader)
		case name != "alg" && name != "kid" && name != "typ":
			return "", fmt.Errorf("%w: an unknown header member", ErrHeader)
		}
	}
	var typ string
	if err := json.Unmarshal(h["typ"], &typ); err != nil || typ != TokenType {
		return "", fmt.Errorf("%w: typ must be %q", ErrHeader, TokenType)
	}
	raw, ok := h["kid"]
	if !ok {
		return "", fmt.Errorf("%w: no kid", ErrUnknownKey)
	}
	var kid string
	if err := json.Unmarshal(raw, &kid); err != nil {
		return "", fmt.Errorf("%w: kid is not a string", ErrHeader)
	}
	if _, ok := v.keys[kid]; !ok {
		return "", fmt.Errorf("%w: the kid names no trusted key", ErrUnknownKey)
	}
	return kid, nil
}

// checkClaims decodes the signed payload strictly and checks the claims.
func (v *Verifier) checkClaims(payload []byte, now time.Time) (Claims, error) {
	present, err := checkStrict(payload, claimsSchema)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: claims: %w", ErrMalformed, err)
	}
	for _, m := range requiredClaims {
		if !present[m] {
			return Claims{}, fmt.Errorf("%w: claims: %q is missing", ErrMalformed, m)
		}
	}
	var w wireClaims
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		// The decoder's message may quote a value; say only where.
		return Claims{}, fmt.Errorf("%w: claims do not decode", ErrMalformed)
	}
	if err := checkName(w.Iss); err != nil {
		return Claims{}, fmt.Errorf("%w: claims: issuer: %w", ErrMalformed, err)
	}
	for _, d := range []int64{w.Iat, w.Exp} {
		if d < minDate || d > maxDate {
			return Claims{}, fmt.Errorf("%w: claims: a date out of range", ErrMalformed)
		}
	}
	if w.Nbf != nil && (*w.Nbf < minDate || *w.Nbf > maxDate) {
		return Claims{}, fmt.Errorf("%w: claims: a date out of range", ErrMalformed)
	}
	if w.Aud != v.audience {
		return Claims{}, fmt.Errorf("%w: not for this agent", ErrAudience)
	}
	if w.Exp <= w.Iat {
		return Claims{}, fmt.Errorf("%w: expiry not after issued-at", ErrLifetime)
	}
	if life := time.Duration(w.Exp-w.Iat) * time.Second; life > v.maxLifetime {
		return Claims{}, fmt.Errorf("%w: lifetime %v, at most %v", ErrLifetime, life, v.maxLifetime)
	}
	if w.Nbf != nil && *w.Nbf >= w.Exp {
		return Claims{}, fmt.Errorf("%w: not-before not before expiry", ErrLifetime)
	}
	if w.Op.Timeout < 0 || w.Op.Timeout > int64(proxmox.MaxShutdownTimeout/time.Second) {
		return Claims{}, fmt.Errorf("%w: %w: timeout out of range", ErrInvalidOp, reconcile.ErrInvalidOneShot)
	}
	c := fromWire(w)
	if err := c.Op.Validate(); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidOp, err)
	}
	if c.IssuedAt.After(now.Add(v.skew)) {
		return Claims{}, fmt.Errorf("%w: issued after now", ErrNotYetValid)
	}
	if !c.NotBefore.IsZero() && c.NotBefore.After(now.Add(v.skew)) {
		return Claims{}, fmt.Errorf("%w: not before a later time", ErrNotYetValid)
	}
	if !now.Add(-v.skew).Before(c.Expiry) {
		return Claims{}, &ExpiredError{Claims: c, Now: now}
	}
	return c, nil
}

func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
