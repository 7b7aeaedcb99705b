package main

import (
	"crypto/tls"
	"flag"
	"log/slog"
	"net"
	"net/http"

	"github.com/guestward/guestward/examples/internal/cli"
)

// validateTLS checks the TLS flags against each other and the listeners,
// without I/O.
func (s *settings) validateTLS() error {
	switch {
	case (s.tlsCert == "") != (s.tlsKey == ""):
		return cli.Usagef("-tls-cert and -tls-key go together: set both (the certificate and its private key, PEM) or neither")
	case s.tlsClientCA != "" && s.tlsCert == "":
		return cli.Usagef("-tls-client-ca asks clients for a certificate, which needs TLS: set -tls-cert and -tls-key too")
	case s.tlsClientCA != "" && s.listen == "":
		return cli.Usagef("-tls-client-ca applies to -listen only: set -listen, or drop -tls-client-ca")
	case s.tlsCert != "" && s.listen == "" && s.healthAddr == "":
		return cli.Usagef("-tls-cert and -tls-key apply to -listen and -health-listen: set one of them, or drop the TLS flags")
	}
	return nil
}

// loadTLS reads the certificate, its key and the client CAs the TLS flags
// name, and keeps the listeners' configurations in s: nil for both when
// TLS is off. Every error is a *cli.UsageError naming the flag.
func (s *settings) loadTLS() error {
	if s.tlsCert == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(s.tlsCert, s.tlsKey)
	if err != nil {
		return cli.Usagef("-tls-cert %s, -tls-key %s: %v", s.tlsCert, s.tlsKey, err)
	}
	base := &tls.Config{
		Certificates: []tls.Certificate{cert},
		// TLS 1.3 is what Go negotiates whenever the client offers it;
		// 1.2 stays for clients that do not, with Go's default suites.
		MinVersion: tls.VersionTLS12,
	}
	s.healthTLS = base.Clone()
	s.opsTLS = base.Clone()
	if s.tlsClientCA == "" {
		return nil
	}
	pool, err := cli.CertPool("tls-client-ca", s.tlsClientCA)
	if err != nil {
		return err
	}
	s.opsTLS.ClientCAs = pool
	s.opsTLS.ClientAuth = tls.RequireAndVerifyClientCert
	return nil
}

// registerTLS defines the TLS flags on fs.
func (s *settings) registerTLS(fs *flag.FlagSet) {
	fs.StringVar(&s.tlsCert, "tls-cert", "", "serve -listen and -health-listen over TLS with this PEM certificate `file` (the chain, leaf first); needs -tls-key (env GUESTWARD_TLS_CERT)")
	fs.StringVar(&s.tlsKey, "tls-key", "", "PEM private key `file` of -tls-cert (env GUESTWARD_TLS_KEY)")
	fs.StringVar(&s.tlsClientCA, "tls-client-ca", "", "with -tls-cert: PEM `file` of the CA certificates that sign hub client certificates; -listen then refuses a client without one (mutual TLS) (env GUESTWARD_TLS_CLIENT_CA)")
}

func tlsBindings() []cli.Binding {
	return []cli.Binding{
		{Flag: "tls-cert", Env: "GUESTWARD_TLS_CERT"},
		{Flag: "tls-key", Env: "GUESTWARD_TLS_KEY"},
		{Flag: "tls-client-ca", Env: "GUESTWARD_TLS_CLIENT_CA"},
	}
}

// warnClear warns that signed operations taken in clear on a non-loopback
// address can be read on the network. addr is the address bound, so a
// host name is judged by what it resolved to, and an empty host (every
// interface) is not loopback.
func warnClear(logger *slog.Logger, addr net.Addr) {
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return
	}
	logger.Warn("-listen takes signed operations in clear on a non-loopback address: anyone on the path can read them, "+
		"secrets they set included; the signatures still hold, and a captured token can be replayed only for what it signs, "+
		"until it expires; set -tls-cert and -tls-key to serve TLS", "address", addr.String())
}

// scheme is the URL scheme a listener serving with cfg answers on.
func scheme(cfg *tls.Config) string {
	if cfg != nil {
		return "https"
	}
	return "http"
}

// serveOn serves srv on ln, over TLS when srv has a TLSConfig (its
// certificate is in the config, so no file is named here).
func serveOn(srv *http.Server, ln net.Listener) error {
	if srv.TLSConfig != nil {
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}
