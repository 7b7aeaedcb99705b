package proxmoxtest

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Load emulation.
//
// A Proxmox node serves the API with a small, fixed pool of worker
// processes: pveproxy and pvedaemon each start max_workers => 3 (pve-manager
// PVE/Service/pveproxy.pm and pvedaemon.pm; an administrator may raise it
// with MAX_WORKERS in /etc/default/pveproxy, read by pve-http-server's
// PVE::APIServer::Utils). A worker runs one API handler at a time, so a
// node handles a few requests at once and queues the rest; a request for
// another node is proxied there (the proxying itself is asynchronous and
// holds no worker) and handled by that node's workers. [WithNodeWorkers]
// and [WithLatency] reproduce this, and [Server.NodeLoad] shows what each
// node went through, so that tests and benchmarks see the cost of their
// requests where a real cluster would feel it.

// WithLatency adds d to the handling of every request, while it holds one
// of its node's workers (see [WithNodeWorkers]): the time a real node
// spends in its API handler and on the network. [WithNodeLatency]
// overrides it for one node. Default 0. It sleeps in real time; tests
// that need latency under their control use a [Fault] with Wait.
func WithLatency(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < 0 {
			return fmt.Errorf("proxmoxtest: negative latency %v", d)
		}
		c.latency = d
		return nil
	})
}

// WithNodeLatency is [WithLatency] for the requests handled by one node,
// say a slow or distant one. Options for several nodes accumulate.
func WithNodeLatency(node string, d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < 0 {
			return fmt.Errorf("proxmoxtest: negative latency %v for node %q", d, node)
		}
		if c.nodeLatency == nil {
			c.nodeLatency = map[string]time.Duration{}
		}
		c.nodeLatency[node] = d
		return nil
	})
}

// WithNodeWorkers makes each node handle at most n requests at once; the
// others wait, in no particular order, for a worker to be free, as
// connections wait for a pveproxy worker. A stock node has 3. 0, the
// default, means no limit.
//
// A request belongs to the node its path names (/nodes/{node}/...); a
// cluster-wide one (/cluster/resources, /version) to the node serving the
// API, the first of [WithNodes].
func WithNodeWorkers(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 0 {
			return fmt.Errorf("proxmoxtest: negative worker count %d", n)
		}
		c.nodeWorkers = n
		return nil
	})
}

// NodeLoad is what one node went through since the server started or
// since [Server.ResetNodeLoad]. It is a plain value.
type NodeLoad struct {
	// Requests counts the requests that reached the node, answered or
	// not.
	Requests int
	// InFlight is the number of requests the node holds now, waiting for
	// a worker or being handled; MaxInFlight the most it held at once.
	// They count the requests a client has outstanding on the node,
	// whatever the node's worker limit.
	InFlight, MaxInFlight int
}

// nodeLoad is the live counterpart of NodeLoad, with the node's workers.
type nodeLoad struct {
	NodeLoad
	workers chan struct{} // nil: no limit
}

// loadState is the server's load accounting; its zero value is ready.
type loadState struct {
	mu    sync.Mutex
	nodes map[string]*nodeLoad
}

// NodeLoad returns the load of every node that received a request, by
// node name.
func (s *Server) NodeLoad() map[string]NodeLoad {
	s.load.mu.Lock()
	defer s.load.mu.Unlock()
	out := make(map[string]NodeLoad, len(s.load.nodes))
	for name, nl := range s.load.nodes {
		out[name] = nl.NodeLoad
	}
	return out
}

// ResetNodeLoad zeroes the request counts and maxima; requests in flight
// stay counted as in flight.
func (s *Server) ResetNodeLoad() {
	s.load.mu.Lock()
	defer s.load.mu.Unlock()
	for _, nl := range s.load.nodes {
		nl.Requests, nl.MaxInFlight = 0, nl.InFlight
	}
}

// requestNode names the node that handles a request for urlPath.
func (s *Server) requestNode(urlPath string) string {
	p := strings.TrimPrefix(urlPath, APIPath)
	if rest, ok := strings.CutPrefix(p, "/nodes/"); ok {
		if node, _, _ := strings.Cut(rest, "/"); node != "" && node != "localhost" {
			return node
		}
	}
	return s.cfg.nodes[0]
}

// loadEnter counts a request on its node, waits for one of the node's
// workers and for the node's latency. It returns false, with the request
// counted out again, when the client gave up or the server is closing
// first; otherwise the caller calls the returned leave once the request
// is answered.
func (s *Server) loadEnter(r *http.Request) (leave func(), ok bool) {
	name := s.requestNode(r.URL.Path)
	s.load.mu.Lock()
	if s.load.nodes == nil {
		s.load.nodes = map[string]*nodeLoad{}
	}
	nl := s.load.nodes[name]
	if nl == nil {
		nl = &nodeLoad{}
		if s.cfg.nodeWorkers > 0 {
			nl.workers = make(chan struct{}, s.cfg.nodeWorkers)
		}
		s.load.nodes[name] = nl
	}
	nl.Requests++
	nl.InFlight++
	nl.MaxInFlight = max(nl.MaxInFlight, nl.InFlight)
	s.load.mu.Unlock()
	out := func() {
		s.load.mu.Lock()
		nl.InFlight--
		s.load.mu.Unlock()
	}
	if nl.workers != nil {
		select {
		case nl.workers <- struct{}{}:
		case <-r.Context().Done():
			out()
			return nil, false
		case <-s.closing:
			out()
			return nil, false
		}
	}
	leave = func() {
		if nl.workers != nil {
			<-nl.workers
		}
		out()
	}
	d, ok := s.cfg.nodeLatency[name]
	if !ok {
		d = s.cfg.latency
	}
	if d > 0 {
		s.sleep(r, d)
	}
	return leave, true
}
