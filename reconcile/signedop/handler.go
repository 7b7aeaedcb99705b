package signedop

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

// How Handler answers each error, first match wins. The messages are ours
// and fixed: an answer never quotes the request.
var statusTable = []struct {
	err     error
	also    error // when set, the error must match it too
	status  int
	code    string
	message string
}{
	{ErrTooLarge, nil, http.StatusRequestEntityTooLarge, "too_large", "the token is larger than this agent accepts"},
	{ErrMalformed, nil, http.StatusBadRequest, "malformed", "the body is not a well-formed signed operation in compact form"},
	{ErrHeader, nil, http.StatusBadRequest, "header", "the token's header holds a member this agent does not accept"},
	{ErrCritical, nil, http.StatusBadRequest, "critical", "the token requires an extension this agent does not understand"},
	{ErrAlgorithm, nil, http.StatusUnauthorized, "algorithm", "the token is not signed with EdDSA"},
	{ErrUnknownKey, nil, http.StatusUnauthorized, "unknown_key", "the token does not name a key this agent trusts"},
	{ErrSignature, nil, http.StatusUnauthorized, "signature", "the token's signature does not verify"},
	{ErrLifetime, nil, http.StatusUnauthorized, "lifetime", "the token's validity period is longer than this agent accepts, or empty"},
	{ErrNotYetValid, nil, http.StatusUnauthorized, "not_yet_valid", "the token is not valid yet"},
	{ErrExpired, nil, http.StatusUnauthorized, "expired", "the token has expired, and its operation never ran here"},
	{ErrAudience, nil, http.StatusForbidden, "audience", "the token is for another agent"},
	{ErrInvalidOp, nil, http.StatusUnprocessableEntity, "invalid_operation", "the signed operation cannot be run as given"},
	{reconcile.ErrInvalidOneShot, nil, http.StatusUnprocessableEntity, "invalid_operation", "the signed operation cannot be run as given"},
	{reconcile.ErrIrreversible, nil, http.StatusForbidden, "irreversible", "the operation cannot be undone and the signed request does not approve that"},
	{reconcile.ErrVetoed, nil, http.StatusForbidden, "vetoed", "this agent's policy refused the operation"},
	{reconcile.ErrKeyConflict, nil, http.StatusConflict, "key_conflict", "the token's JWT ID was used for another request"},
	{reconcile.ErrInProgress, nil, http.StatusConflict, "in_progress", "an operation with this JWT ID is still running"},
	{reconcile.ErrDraining, nil, http.StatusServiceUnavailable, "draining", "this agent is shutting down and starts no operation"},
	{reconcile.ErrUnresolved, nil, http.StatusServiceUnavailable, "unresolved", "an earlier operation on this guest is not resolved yet"},
	{reconcile.ErrDryRun, nil, http.StatusServiceUnavailable, "dry_run", "this agent runs in dry-run mode and sends no operation"},
	{context.DeadlineExceeded, nil, http.StatusGatewayTimeout, "timeout", "the operation did not start in time"},
	{context.Canceled, nil, http.StatusServiceUnavailable, "canceled", "the request was canceled before the operation started"},
	{reconcile.ErrNotObserved, proxmox.ErrNotFound, http.StatusNotFound, "guest_not_found", "no such guest on the node and type the operation names"},
	{reconcile.ErrNotObserved, nil, http.StatusBadGateway, "not_observed", "the guest could not be observed"},
	{reconcile.ErrNoKeyLookup, nil, http.StatusInternalServerError, "no_key_lookup", "this agent's journal cannot look up operations by key"},
}

// StatusCode returns the HTTP status Handler answers err with: 200 for
// nil, and for Verify's and Apply's refusals:
//
//	413 ErrTooLarge
//	400 ErrMalformed, ErrHeader, ErrCritical
//	401 ErrAlgorithm, ErrUnknownKey, ErrSignature, ErrLifetime,
//	    ErrNotYetValid, ErrExpired
//	403 ErrAudience, reconcile.ErrIrreversible, reconcile.ErrVetoed
//	409 reconcile.ErrKeyConflict, reconcile.ErrInProgress
//	422 ErrInvalidOp, reconcile.ErrInvalidOneShot
//	503 reconcile.ErrDraining, reconcile.ErrUnresolved, reconcile.ErrDryRun
//	504 context.DeadlineExceeded (the request's context ended first)
//	503 context.Canceled
//	404 reconcile.ErrNotObserved with proxmox.ErrNotFound
//	502 reconcile.ErrNotObserved otherwise
//	500 anything else (reconcile.ErrNoKeyLookup, a journal that fails)
//
// An error that matches several is answered by the first in this list.
// Handler answers 202 instead for an operation Apply journaled but left in
// flight, whatever the error.
func StatusCode(err error) int {
	status, _, _ := classify(err)
	return status
}

func classify(err error) (status int, code, message string) {
	if err == nil {
		return http.StatusOK, "", ""
	}
	for _, row := range statusTable {
		if errors.Is(err, row.err) && (row.also == nil || errors.Is(err, row.also)) {
			return row.status, row.code, row.message
		}
	}
	return http.StatusInternalServerError, "internal", "the agent failed to handle the operation"
}

// Handler returns an HTTP handler that runs signed operations on e.
//
// It accepts POST only (405 otherwise, with an Allow header); the body is
// the compact token itself, nothing around it, at most v's maximum token
// size (413 beyond). The token is verified at the time of the request
// and its operation run by e.Apply under the request's context, its
// approval of an irreversible action taken from the signed claims.
//
// The answer is JSON. An operation that ran, or ran before (a replay:
// "replayed" is true), is answered 200 with its reconcile.Result, also when
// it failed (its "state" says so). An operation journaled but left in
// flight (the request's context ended, the answer from Proxmox was lost)
// is answered 202 with its Result and an error; the same token, sent
// again, returns its outcome once the engine has resolved it. Every other
// refusal is answered with the status StatusCode gives and a body
// {"error":{"code":...,"message":...}} whose code names the sentinel and
// whose message is fixed: no answer quotes the token, or anything the
// request chose, so that a refusal cannot be turned into a reflection.
//
// An expired token is answered from the journal: when its signature,
// key, audience and operation hold and its JWT ID names the very request
// it carries (the same guest, kind and parameters, compared as Apply
// compares them), which already ran, with that request's recorded Result
// (200, or 202 while in flight); otherwise it is refused (401, code
// "expired"; 409 when the JWT ID names another request) and never run.
//
// Handler is safe for concurrent use; e serializes what must be.
func Handler(e *reconcile.Engine, v *Verifier) http.Handler {
	return &handler{e: e, v: v, now: time.Now}
}

type handler struct {
	e   *reconcile.Engine
	v   *Verifier
	now func() time.Time
}

// errorBody is the answer to a refusal.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Result *reconcile.Result `json:"result,omitempty"`
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, http.StatusMethodNotAllowed, "method", "only POST is accepted", nil)
		return
	}
	if h.e == nil || h.v == nil {
		h.fail(w, http.StatusInternalServerError, "internal", "the handler has no engine or verifier", nil)
		return
	}
	limit := int64(h.v.maxSize)
	if r.ContentLength > limit {
		h.refuse(w, ErrTooLarge, nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.refuse(w, ErrTooLarge, nil)
			return
		}
		h.fail(w, http.StatusBadRequest, "body", "the request body could not be read", nil)
		return
	}
	ctx := r.Context()
	claims, err := h.v.Verify(string(body), h.now())
	var expired *ExpiredError
	switch {
	case errors.As(err, &expired):
		h.replayExpired(ctx, w, expired)
		return
	case err != nil:
		h.refuse(w, err, nil)
		return
	}
	res, err := h.e.Apply(ctx, claims.Op)
	switch {
	case err == nil:
		h.answer(w, http.StatusOK, res)
	case res.OpID != "":
		// Journaled, and left in flight: the same token asks again.
		h.fail(w, http.StatusAccepted, "in_flight", "the operation was sent and its outcome is not known yet; send the same token again for it", &res)
	default:
		h.refuse(w, err, nil)
	}
}

// replayExpired answers an expired token from the journal, and never
// runs it.
func (h *handler) replayExpired(ctx context.Context, w http.ResponseWriter, exp *ExpiredError) {
	op := exp.Claims.Op
	res, ok, err := h.e.LookupRequest(ctx, op)
	switch {
	case err != nil:
		h.refuse(w, err, nil)
	case !ok || res.KeyUnused:
		h.refuse(w, exp, nil)
	case res.State != journal.Succeeded && res.State != journal.Failed:
		h.fail(w, http.StatusAccepted, "in_flight", "the operation was sent and its outcome is not known yet; send the same token again for it", &res)
	default:
		h.answer(w, http.StatusOK, res)
	}
}

func (h *handler) refuse(w http.ResponseWriter, err error, res *reconcile.Result) {
	status, code, message := classify(err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	h.fail(w, status, code, message, res)
}

func (h *handler) fail(w http.ResponseWriter, status int, code, message string, res *reconcile.Result) {
	var b errorBody
	b.Error.Code, b.Error.Message, b.Result = code, message, res
	h.answer(w, status, b)
}

func (h *handler) answer(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data = []byte(`{"error":{"code":"internal","message":"the answer could not be encoded"}}`)
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

var _ http.Handler = (*handler)(nil)
