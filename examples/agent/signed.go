package main

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"sort"
	"time"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/hubkey"
	"github.com/guestward/guestward/examples/internal/output"
	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

// OpsPath is where the agent takes signed operations.
const OpsPath = "/v1/op"

// verifier returns the verifier -hub-keys and -agent-id describe, or nil
// when the agent takes no signed operations (-listen not set).
func (s *settings) verifier() (*signedop.Verifier, error) {
	if s.listen == "" {
		return nil, nil
	}
	keys, err := hubkey.ReadTrusted(s.hubKeys)
	if err != nil {
		return nil, cli.Usagef("-hub-keys: %v", err)
	}
	v, err := signedop.NewVerifier(s.agentID, keys)
	if err != nil {
		return nil, cli.Usagef("-agent-id, -hub-keys: %v", err)
	}
	s.keyIDs = make([]string, 0, len(keys))
	for id := range keys {
		s.keyIDs = append(s.keyIDs, id)
	}
	sort.Strings(s.keyIDs)
	return v, nil
}

// opServer serves signedop.Handler on the -listen address. Its stop lets
// requests in progress finish for at most the grace given, then closes
// their connections, which ends their contexts: an operation interrupted
// so stays in flight in the journal, for Recover.
type opServer struct{ *listener }

// startOps listens on addr and serves signed operations for e, over TLS
// with cfg, or in clear when cfg is nil, which it warns about unless addr
// is loopback.
func startOps(addr string, cfg *tls.Config, e *reconcile.Engine, v *signedop.Verifier, logger *slog.Logger) (*opServer, error) {
	mux := http.NewServeMux()
	mux.Handle(OpsPath, signedop.Handler(e, v))
	l, err := listen("listen", addr, &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		TLSConfig:         cfg,
	})
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		warnClear(logger, l.bound)
	}
	return &opServer{l}, nil
}

// announce says where signed operations are taken, and from whom.
func (o *opServer) announce(out *output.Printer, agentID string, keys []string, indent string) {
	out.Object(struct {
		Type    string   `json:"type"`
		URL     string   `json:"url"`
		AgentID string   `json:"agent_id"`
		KeyIDs  []string `json:"key_ids"`
	}{"listen", o.scheme + "://" + o.addr + OpsPath, agentID, keys})
	out.Textf("%sTaking signed operations for agent %q at %s://%s%s, from %s %v",
		indent, agentID, o.scheme, o.addr, OpsPath, output.Count(len(keys), "hub key"), keys)
}
