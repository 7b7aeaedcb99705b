// Package etcdtest starts etcd servers inside the current process, on
// loopback ports, for this module's tests, benchmarks and demonstration.
// It is not API.
//
// A [Cluster] has one or more members; a member can be stopped and started
// again on the same ports and data, which is how tests take quorum away and
// give it back. Clients made by [Cluster.Client] talk to every member.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Options tune a cluster.
type Options struct {
	// Members is the number of members; 0 means 1.
	Members int
	// Sync makes etcd fsync its log as in production. Tests leave it off:
	// they check the protocol, not the disk, and fsync on a loaded
	// machine only slows them down.
	Sync bool
}

// Cluster is a set of embedded etcd members. Safe for concurrent use.
type Cluster struct {
	mu      sync.Mutex
	cfgs    []*embed.Config
	members []*embed.Etcd // nil: stopped
	clients []string
}

// Start starts a cluster whose data lives under dir and waits until it
// serves.
func Start(dir string, o Options) (*Cluster, error) {
	n := o.Members
	if n <= 0 {
		n = 1
	}
	// Ports are chosen by binding to port 0 and releasing; a port taken in
	// between makes StartEtcd fail, and Start tries again with new ports.
	var lastErr error
	for try := 0; try < 5; try++ {
		c, err := start(dir, n, o, try)
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func start(dir string, n int, o Options, try int) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	var initial []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("m%d", i)
		initial = append(initial, fmt.Sprintf("%s=http://127.0.0.1:%d", name, ports[2*i+1]))
	}
	for i := 0; i < n; i++ {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, fmt.Sprintf("try%d-%s", try, cfg.Name))
		cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]))
		pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]))
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = fmt.Sprintf("etcdtest-%d", ports[0])
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.UnsafeNoFsync = !o.Sync
		// A loaded two-core machine under -race misses 100 ms heartbeats;
		// slower ticks keep the raft leader stable.
		cfg.TickMs, cfg.ElectionMs = 100, 2000
		c.cfgs = append(c.cfgs, cfg)
		c.clients = append(c.clients, cu.String())
	}
	c.members = make([]*embed.Etcd, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range c.cfgs {
		wg.Go(func() { c.members[i], errs[i] = startMember(c.cfgs[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func startMember(cfg *embed.Config) (*embed.Etcd, error) {
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdtest: start %s: %w", cfg.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcdtest: %s: %w", cfg.Name, err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcdtest: %s not ready after a minute", cfg.Name)
	}
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Endpoints returns the client URLs of every member.
func (c *Cluster) Endpoints() []string { return append([]string(nil), c.clients...) }

// Client returns a new client of the cluster; the caller closes it.
func (c *Cluster) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// Stop stops member i (its data stays).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	e := c.members[i]
	c.members[i] = nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts stopped member i again on its ports and data, and waits
// until it runs (it serves once it has a quorum again).
func (c *Cluster) Restart(i int) error {
	cfg := *c.cfgs[i]
	cfg.ClusterState = embed.ClusterStateFlagExisting
	e, err := embed.StartEtcd(&cfg)
	if err != nil {
		return fmt.Errorf("etcdtest: restart %s: %w", cfg.Name, err)
	}
	c.mu.Lock()
	c.members[i] = e
	c.mu.Unlock()
	return nil
}

// WaitReady waits until every running member serves or ctx ends.
func (c *Cluster) WaitReady(ctx context.Context) error {
	c.mu.Lock()
	ms := append([]*embed.Etcd(nil), c.members...)
	c.mu.Unlock()
	for _, e := range ms {
		if e == nil {
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close stops every member.
func (c *Cluster) Close() {
	for i := range c.members {
		c.Stop(i)
	}
}
