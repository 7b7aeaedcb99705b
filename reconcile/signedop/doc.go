// Package signedop carries one-shot operations from a hub to an agent over
// a network neither trusts: the hub signs each request, the agent checks
// the signature and runs the request through [reconcile.Engine.Apply],
// at most once.
//
// # The model
//
// A hub holds an Ed25519 private key; each agent trusts the matching public
// key under a key id, and knows its own id. To ask an agent for an
// operation, the hub fills a [Claims] (the agent's id as the audience, a
// short validity window, and the [reconcile.OneShot] itself, whose Key is
// the token's JWT ID) and calls [Sign], which returns a JSON Web Signature
// in compact serialization. The agent hands the token to
// [Verifier.Verify], which returns the claims only if every check holds,
// and then to Apply; [Handler] does both for a POST over HTTP.
//
// The three parties and what each can do:
//
//   - The signature proves the hub wrote the request; the audience
//     keeps a request for one agent from being played to another; the
//     expiry and the verifier's maximum lifetime bound how long a token
//     captured on the way is good for.
//   - The JWT ID is the operation's idempotency key. Apply claims it in the
//     journal before anything is sent, so a token replayed, at once or
//     after a restart, returns the recorded result and sends nothing, and a
//     different token reusing the JWT ID for another request is refused
//     (reconcile.ErrKeyConflict). Once its token has expired, a request is
//     still answered from the journal if it ran, and never run if it did
//     not (see [ExpiredError]).
//   - An action that cannot be undone runs only when the signed request
//     approves it (the "allow_irreversible" member, OneShot.AllowIrreversible):
//     the approval is covered by the signature like everything else.
//
// # The format
//
// The token is header.payload.signature, each part unpadded base64url.
// The protected header is exactly {"alg":"EdDSA","kid":...,"typ":
// "guestward-op+jwt"}: Verify refuses any other algorithm (none, HMAC,
// RSA, ECDSA included), a key id it does not trust, any header that carries
// or points to a key (jwk, jku, x5u, x5c, x5t), any crit, any other member.
// The payload is a JWT claims set:
//
//	{"iss":"hub-1","aud":"agent-7","iat":1767787200,"exp":1767787500,
//	 "nbf":1767787200,"jti":"2026-12-05/web-memory",
//	 "op":{"node":"pve1","type":"qemu","vmid":100,"kind":"set_config",
//	       "set":{"memory":"4096"},"delete":["args"],"digest":"...",
//	       "allow_irreversible":false}}
//
// nbf and the operation's parameters may be left out (set, delete and
// digest for set_config; "timeout", in whole seconds, for shutdown;
// allow_irreversible); everything else is required, and the operation
// must pass reconcile.OneShot.Validate. Header and claims are read strictly: a member repeated (also
// in other letter case, which encoding/json would otherwise match), an
// unknown member, null, bytes that are not UTF-8, or data after the object
// make the token malformed. Only JSON Web Signature's compact form is
// accepted: its JSON form, several signatures and unprotected headers are
// not.
//
// # Errors
//
// Each refusal of Verify matches one sentinel (ErrMalformed, ErrSignature,
// ErrAlgorithm, ...; see [Verifier.Verify] for the order of the checks),
// so that a caller maps them to answers without reading text; [StatusCode]
// is the mapping [Handler] uses. Messages never quote the token; only the
// message of an invalid operation quotes values of the signed operation (its
// key, an option's name), as reconcile.OneShot.Validate words it. Handler's
// answers quote nothing of the request.
//
// # What it does not do
//
// It does not hide a request from the network: the signature gives
// integrity and authenticity, not confidentiality, so an operation carrying
// a secret should travel over TLS. It never fetches a key, nor takes one from
// a token: the trusted keys are the ones given to NewVerifier, and removing a
// key from them is the only revocation. It does not decide what a hub may
// ask for: the engine's Policy and validation apply to signed operations as
// to any other.
package signedop
