package reconcile

import (
	"context"
	"sync"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// DefaultNodeConcurrency is the default of [Config.NodeConcurrency]. A
// stock Proxmox node serves its API with three worker processes
// (pveproxy's and pvedaemon's max_workers), each running one request at a
// time; two requests in flight keep a node busy without queueing behind
// each other, and leave a worker to the web interface and to other tools.
const DefaultNodeConcurrency = 2

// nodeLimiter bounds the requests in flight on each node, and optionally
// their rate. It implements [proxmox.RequestGate]; it is safe for
// concurrent use. Its memory grows with the number of distinct nodes
// named, which a cluster bounds.
type nodeLimiter struct {
	n     int           // requests in flight per node
	every time.Duration // minimum spacing of requests per node; 0: none

	mu    sync.Mutex
	nodes map[string]*nodeGate
}

type nodeGate struct {
	slots chan struct{}
	next  time.Time // when the next request may go, under mu
}

var _ proxmox.RequestGate = (*nodeLimiter)(nil)

func newNodeLimiter(n int, perSecond float64) *nodeLimiter {
	l := &nodeLimiter{n: n, nodes: make(map[string]*nodeGate)}
	if perSecond > 0 {
		l.every = time.Duration(float64(time.Second) / perSecond)
	}
	return l
}

// Enter waits for one of node's slots and, with a rate, for node's next
// turn. The cluster-wide requests ("") have slots of their own.
func (l *nodeLimiter) Enter(ctx context.Context, node string) (func(), error) {
	l.mu.Lock()
	g := l.nodes[node]
	if g == nil {
		g = &nodeGate{slots: make(chan struct{}, l.n)}
		l.nodes[node] = g
	}
	l.mu.Unlock()
	select {
	case g.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	leave := func() { <-g.slots }
	if l.every > 0 {
		l.mu.Lock()
		now := time.Now()
		at := now
		if g.next.After(now) {
			at = g.next
		}
		g.next = at.Add(l.every)
		l.mu.Unlock()
		if d := at.Sub(now); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				leave()
				return nil, ctx.Err()
			}
		}
	}
	return leave, nil
}

// limitedProxmox passes every request of a [Proxmox] through a
// nodeLimiter. A method that sends one request holds one slot of its node
// for the call; WaitTask, which polls, hands the limiter to the client
// through the context ([proxmox.WithRequestGate]) so that each poll takes a
// slot only while it is in flight. An implementation other than
// *proxmox.Client that ignores the gate polls unbounded.
type limitedProxmox struct {
	px  Proxmox
	lim *nodeLimiter
}

var _ Proxmox = limitedProxmox{}

func (p limitedProxmox) do(ctx context.Context, node string, f func() error) error {
	leave, err := p.lim.Enter(ctx, node)
	if err != nil {
		return err
	}
	defer leave()
	return f()
}

func call[T any](p limitedProxmox, ctx context.Context, node string, f func() (T, error)) (T, error) {
	var out T
	err := p.do(ctx, node, func() error {
		var err error
		out, err = f()
		return err
	})
	return out, err
}

// TaskUser is the wrapped Proxmox's, "" when it cannot tell.
func (p limitedProxmox) TaskUser() string {
	if id, ok := p.px.(interface{ TaskUser() string }); ok {
		return id.TaskUser()
	}
	return ""
}

func (p limitedProxmox) Guests(ctx context.Context) ([]proxmox.Guest, error) {
	return call(p, ctx, "", func() ([]proxmox.Guest, error) { return p.px.Guests(ctx) })
}

func (p limitedProxmox) Status(ctx context.Context, ref proxmox.Ref) (proxmox.GuestStatus, error) {
	return call(p, ctx, ref.Node, func() (proxmox.GuestStatus, error) { return p.px.Status(ctx, ref) })
}

func (p limitedProxmox) Config(ctx context.Context, ref proxmox.Ref) (proxmox.Config, error) {
	return call(p, ctx, ref.Node, func() (proxmox.Config, error) { return p.px.Config(ctx, ref) })
}

func (p limitedProxmox) Pending(ctx context.Context, ref proxmox.Ref) ([]proxmox.PendingItem, error) {
	return call(p, ctx, ref.Node, func() ([]proxmox.PendingItem, error) { return p.px.Pending(ctx, ref) })
}

func (p limitedProxmox) PendingConfig(ctx context.Context, ref proxmox.Ref) (proxmox.PendingConfig, error) {
	return call(p, ctx, ref.Node, func() (proxmox.PendingConfig, error) { return p.px.PendingConfig(ctx, ref) })
}

func (p limitedProxmox) SetConfig(ctx context.Context, ref proxmox.Ref, ch proxmox.ConfigChange) (proxmox.UPID, error) {
	return call(p, ctx, ref.Node, func() (proxmox.UPID, error) { return p.px.SetConfig(ctx, ref, ch) })
}

func (p limitedProxmox) Start(ctx context.Context, ref proxmox.Ref) (proxmox.UPID, error) {
	return call(p, ctx, ref.Node, func() (proxmox.UPID, error) { return p.px.Start(ctx, ref) })
}

func (p limitedProxmox) Stop(ctx context.Context, ref proxmox.Ref) (proxmox.UPID, error) {
	return call(p, ctx, ref.Node, func() (proxmox.UPID, error) { return p.px.Stop(ctx, ref) })
}

func (p limitedProxmox) Shutdown(ctx context.Context, ref proxmox.Ref, timeout time.Duration) (proxmox.UPID, error) {
	return call(p, ctx, ref.Node, func() (proxmox.UPID, error) { return p.px.Shutdown(ctx, ref, timeout) })
}

func (p limitedProxmox) Reboot(ctx context.Context, ref proxmox.Ref) (proxmox.UPID, error) {
	return call(p, ctx, ref.Node, func() (proxmox.UPID, error) { return p.px.Reboot(ctx, ref) })
}

func (p limitedProxmox) Resize(ctx context.Context, ref proxmox.Ref, r proxmox.DiskResize) (proxmox.UPID, error) {
	return call(p, ctx, ref.Node, func() (proxmox.UPID, error) { return p.px.Resize(ctx, ref, r) })
}

func (p limitedProxmox) TaskStatus(ctx context.Context, upid proxmox.UPID) (proxmox.TaskStatus, error) {
	return call(p, ctx, upidNode(upid), func() (proxmox.TaskStatus, error) { return p.px.TaskStatus(ctx, upid) })
}

func (p limitedProxmox) WaitTask(ctx context.Context, upid proxmox.UPID) (proxmox.TaskStatus, error) {
	return p.px.WaitTask(proxmox.WithRequestGate(ctx, p.lim), upid)
}

func (p limitedProxmox) Tasks(ctx context.Context, node string, f proxmox.TaskFilter) ([]proxmox.TaskInfo, error) {
	return call(p, ctx, node, func() ([]proxmox.TaskInfo, error) { return p.px.Tasks(ctx, node, f) })
}

// upidNode is the node a task runs on, "" if the UPID does not parse (the
// call then fails without a request).
func upidNode(upid proxmox.UPID) string {
	info, err := upid.Parse()
	if err != nil {
		return ""
	}
	return info.Node
}
