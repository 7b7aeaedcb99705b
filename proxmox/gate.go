package proxmox

import (
	"context"
	"net/url"
	"strings"
)

// A RequestGate paces the requests a [Client] sends, node by node: before
// each HTTP request the client calls Enter with the node the request is
// for, sends the request only once Enter returns, and calls leave once the
// answer has been read. It lets a caller bound the requests in flight on
// each node (a Proxmox node runs a handful of API workers) across calls
// that send several requests, such as [Client.WaitTask]'s polling.
//
// node is the node named by the request's path (/nodes/{node}/...), or ""
// for a cluster-wide request (/cluster/resources, /version), which the
// node the client talks to answers. Enter must return ctx.Err() when ctx
// ends first; the request is then not sent. Implementations must be safe
// for concurrent use.
type RequestGate interface {
	Enter(ctx context.Context, node string) (leave func(), err error)
}

type gateKey struct{}

// WithRequestGate returns a copy of ctx that makes every request a
// [Client] sends under it pass g, the way net/http/httptrace attaches a
// trace to a context. A gate set on a context replaces one set on its
// parents.
func WithRequestGate(ctx context.Context, g RequestGate) context.Context {
	return context.WithValue(ctx, gateKey{}, g)
}

// enterGate passes the request for path (escaped, below /api2/json)
// through the context's gate, if any.
func enterGate(ctx context.Context, path string) (leave func(), err error) {
	g, _ := ctx.Value(gateKey{}).(RequestGate)
	if g == nil {
		return func() {}, nil
	}
	return g.Enter(ctx, pathNode(path))
}

// pathNode returns the node an API path addresses, "" for a cluster-wide
// path.
func pathNode(path string) string {
	rest, ok := strings.CutPrefix(path, "/nodes/")
	if !ok {
		return ""
	}
	node, _, _ := strings.Cut(rest, "/")
	if n, err := url.PathUnescape(node); err == nil {
		return n
	}
	return node
}
