package reconcile

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// HealthHandler returns an http.Handler that answers whether the engine
// is ready, with its [Status] as JSON, wherever the embedder mounts it
// (say, as /healthz):
//
//	mux.Handle("/healthz", engine.HealthHandler())
//
// It answers 503 Service Unavailable until recovery has completed
// (Run's, or an explicit [Engine.Recover]; see Status.Recovered), and
// again from the moment [Engine.Drain] or [Engine.Shutdown] is called;
// 200 OK otherwise. It answers GET and HEAD (HEAD without the body), and
// 405 Method Not Allowed, with an Allow header, to anything else. The
// body is an object:
//
//	{"ready": true, "reason": "...", "status": {...}}
//
// where "status" is the Status in its JSON form; "reason" says why the
// engine is not ready, and is absent when it is. Answers are marked not
// to be cached. The handler is cheap (no I/O, and it never waits for a
// pass) and safe for concurrent use.
//
// # Ready, not converged
//
// A pass that could not act (Proxmox unreachable, a broken desired-state
// file) or guests that failed leave the engine ready: the body says so
// (status.last_error, status.last_pass), but the code stays 200. The code
// answers the question an orchestrator can act on: is this process able
// to do its work, or should it be kept out of rotation until it is. In
// Kubernetes terms, it is a readiness probe: a process that is still
// recovering its journal, or draining to stop, is not ready. It is not a
// liveness probe that should fail when Proxmox is down, since restarting
// the process cannot bring Proxmox back, and a restart loop would only
// interrupt operations that Recover then has to resolve. An embedder that
// wants a stricter rule (unhealthy after N failed passes, say) builds it
// from [Engine.Status].
//
// The body carries error messages from Proxmox and the journal, which
// name guests, nodes and paths (never a secret): mount the handler where
// the people and programs that can reach it may read them.
func (e *Engine) HealthHandler() http.Handler { return healthHandler{e} }

type healthHandler struct{ e *Engine }

var _ http.Handler = healthHandler{}

type healthJSON struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
	Status Status `json:"status"`
}

func (h healthHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: use GET or HEAD", http.StatusMethodNotAllowed)
		return
	}
	s := h.e.Status()
	body := healthJSON{Ready: true, Status: s}
	switch {
	case s.ShutDown:
		body.Ready, body.Reason = false, "shut down"
	case s.Draining:
		body.Ready, body.Reason = false, "draining: no operation starts"
	case !s.Recovered:
		body.Ready, body.Reason = false, "recovery has not completed: operations a previous run left in flight may be unresolved"
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		// Status holds only strings, numbers and times: cannot happen.
		http.Error(w, "encoding the status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	code := http.StatusOK
	if !body.Ready {
		code = http.StatusServiceUnavailable
	}
	hd.Set("Content-Type", "application/json")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b.Bytes())
	}
}
