package main

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"

	"github.com/guestward/guestward/examples/internal/output"
	"github.com/guestward/guestward/reconcile"
)

// HealthPath is where -health-listen serves the engine's health.
const HealthPath = "/healthz"

// healthServer serves reconcile's health handler on the -health-listen
// address.
type healthServer struct{ *listener }

// healthGrace is how long stopping waits for a probe in progress: the
// handler never waits, so a second is plenty.
const healthGrace = time.Second

// startHealth listens on addr and serves e's health at HealthPath, over
// TLS with cfg, or in clear when cfg is nil.
func startHealth(addr string, cfg *tls.Config, e *reconcile.Engine, logger *slog.Logger) (*healthServer, error) {
	mux := http.NewServeMux()
	mux.Handle(HealthPath, e.HealthHandler())
	l, err := listen("health-listen", addr, &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      5 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		TLSConfig:         cfg,
	})
	if err != nil {
		return nil, err
	}
	return &healthServer{l}, nil
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
