package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/guestward/guestward/examples/internal/output"
	"github.com/guestward/guestward/reconcile"
)

// HealthPath is where -health-listen serves the engine's health.
const HealthPath = "/healthz"

// healthServer serves reconcile's health handler on the -health-listen
// address.
type healthServer struct {
	srv    *http.Server
	addr   string
	scheme string // http or https
	served chan error
}

// startHealth listens on addr and serves e's health at HealthPath, over
// TLS with cfg, or in clear when cfg is nil.
func startHealth(addr string, cfg *tls.Config, e *reconcile.Engine, logger *slog.Logger) (*healthServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-health-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(HealthPath, e.HealthHandler())
	h := &healthServer{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       5 * time.Second,
			WriteTimeout:      5 * time.Second,
			MaxHeaderBytes:    8 << 10,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
			TLSConfig:         cfg,
		},
		addr:   ln.Addr().String(),
		scheme: scheme(cfg),
		served: make(chan error, 1),
	}
	go func() { h.served <- serveOn(h.srv, ln) }()
	return h, nil
}

// stop closes the listener, letting a probe in progress finish briefly:
// the handler never waits, so a second is plenty.
func (h *healthServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		_ = h.srv.Close()
	}
	<-h.served
}

// announce says where the health is served.
func (h *healthServer) announce(out *output.Printer) {
	url := h.scheme + "://" + h.addr + HealthPath
	out.Object(struct {
		Type string `json:"type"`
		URL  string `json:"url"`
	}{"health", url})
	how := "plain HTTP"
	if h.scheme == "https" {
		how = "TLS"
	}
	out.Textf("Health at %s (%s): 503 until recovery has completed and while stopping, 200 otherwise", url, how)
}
