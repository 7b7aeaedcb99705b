package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// listener is one of the agent's HTTP endpoints (-listen, -health-listen):
// a server on a bound address, over TLS when its config has one.
type listener struct {
	srv    *http.Server
	bound  net.Addr
	addr   string // bound, as host:port
	scheme string // http or https
	served chan error
}

// listen binds addr, which flag gave, and serves srv there until stop.
func listen(flag, addr string, srv *http.Server) (*listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-%s: %w", flag, err)
	}
	l := &listener{srv: srv, bound: ln.Addr(), addr: ln.Addr().String(), scheme: scheme(srv.TLSConfig), served: make(chan error, 1)}
	go func() { l.served <- serveOn(srv, ln) }()
	return l, nil
}

// stop lets requests in progress finish for at most grace, then closes
// their connections, and waits until the server has stopped.
func (l *listener) stop(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := l.srv.Shutdown(ctx); err != nil {
		_ = l.srv.Close()
	}
	<-l.served // http.ErrServerClosed, or the listener's failure: stopping either way
}
