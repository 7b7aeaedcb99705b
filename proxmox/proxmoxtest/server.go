package proxmoxtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// APIPath is the path prefix of Proxmox's JSON API. Requests go to
// [Server].URL + APIPath + "/nodes/...".
const APIPath = "/api2/json"

// ErrClosed is returned by the blocking [Server] methods ([Server.WaitIdle],
// [Server.AwaitTask]) when the server is closed while they wait, and by
// methods called after [Server.Close].
var ErrClosed = errors.New("proxmoxtest: server closed")

// ErrNoGuest is returned, wrapped, by the guest methods of [Server] when no
// guest has the given reference.
var ErrNoGuest = errors.New("proxmoxtest: no such guest")

// Server is a fake Proxmox VE cluster serving the JSON API over TLS on a
// loopback port. Create it with [NewServer] or [Start], seed it with
// [Server.AddGuest], point the code under test at URL with the
// [Server.Client] HTTP client and the token from [Server.APIToken], and
// inspect or perturb it with the methods below.
//
// A Server is safe for concurrent use by multiple goroutines.
type Server struct {
	// URL is the server's base URL, "https://127.0.0.1:<port>", without a
	// trailing slash. The API lives below URL + [APIPath].
	URL string

	cfg       *config
	log       *slog.Logger
	httpSrv   *http.Server
	listener  net.Listener
	cert      *x509.Certificate
	client    *http.Client
	transport *http.Transport

	// mu guards everything below it, plus the guests and tasks it reaches.
	mu           sync.Mutex
	closed       bool
	closing      chan struct{}
	changed      chan struct{} // closed and replaced on every task event
	nodes        []*node
	nodeByName   map[string]*node
	guests       map[int]*guest
	storages     map[string]StorageKind
	storageOrder []string
	volumes      map[string]bool
	diskNums     map[string]map[int]bool
	rng          *rand.Rand
	macPrefix    string
	authMu       sync.RWMutex // guards tokens and users
	tokens       map[string]*token
	users        map[string]string
	tasks        []*task
	taskByUPID   map[proxmox.UPID]*task
	nextPID      int
	bootTime     time.Time
	staleRes     []byte // non-nil: /cluster/resources answers this snapshot
	haHold       int    // HoldHA depth: the HA manager acts only at 0

	routes             *routeTable
	ticketKey, csrfKey []byte
	defaultToken       tokenSpec

	faultMu  sync.Mutex
	faults   []*FaultHandle
	nFaults  atomic.Int32
	logMu    sync.Mutex
	reqlog   []Request
	enterMu  sync.RWMutex
	entryOff bool
	handlers sync.WaitGroup
	timers   sync.WaitGroup
	connMu   sync.Mutex
	conns    map[net.Conn]bool
	connsWG  sync.WaitGroup
	connsOff bool
	load     loadState // per-node request accounting and workers (load.go)
}

type node struct {
	name   string
	online bool
}

type token struct {
	id, user, name, secret string
	expired                bool
}

// TB is the part of [testing.TB] that [Start] uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Start is [NewServer] for tests: it fails t if the server cannot start and
// closes the server when t ends.
func Start(t TB, opts ...Option) *Server {
	t.Helper()
	s, err := NewServer(opts...)
	if err != nil {
		t.Fatalf("proxmoxtest: %v", err)
		return nil
	}
	t.Cleanup(s.Close)
	return s
}

// NewServer starts a fake Proxmox VE cluster on a random loopback port with a
// freshly generated self-signed certificate, and returns once it accepts
// connections. Unlike net/http/httptest it reports failures as errors
// rather than panicking. The caller must call [Server.Close].
func NewServer(opts ...Option) (*Server, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.apply(cfg); err != nil {
			return nil, err
		}
	}
	// Options apply in any order; the pinned qemu-server joins the release.
	cfg.version.qemuServer = cfg.qemuServer
	if len(cfg.nodes) == 0 {
		cfg.nodes = []string{"pve"}
	}
	if len(cfg.storages) == 0 {
		cfg.storages = []storageSpec{{"local", StorageDir}, {"local-lvm", StorageLVMThin}}
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.logger,
		closing:    make(chan struct{}),
		changed:    make(chan struct{}),
		nodeByName: map[string]*node{},
		guests:     map[int]*guest{},
		storages:   map[string]StorageKind{},
		volumes:    map[string]bool{},
		diskNums:   map[string]map[int]bool{},
		rng:        rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15)),
		tokens:     map[string]*token{},
		users:      map[string]string{},
		taskByUPID: map[proxmox.UPID]*task{},
		nextPID:    0x2a31,
		conns:      map[net.Conn]bool{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.bootTime = cfg.clock.Now().Add(-36 * time.Hour)
	for _, n := range cfg.nodes {
		nd := &node{name: n, online: true}
		s.nodes = append(s.nodes, nd)
		s.nodeByName[n] = nd
	}
	for _, st := range cfg.storages {
		s.storages[st.id] = st.kind
		s.storageOrder = append(s.storageOrder, st.id)
	}
	if cfg.macPrefix != nil {
		s.macPrefix = *cfg.macPrefix
	} else {
		s.macPrefix = cfg.version.defaultMACPrefix()
	}
	for u, p := range cfg.users {
		s.users[u] = p
	}
	if len(cfg.tokens) == 0 {
		cfg.tokens = []tokenSpec{{id: "root@pam!guestward", secret: randomSecret()}}
	}
	s.defaultToken = cfg.tokens[0]
	for _, t := range cfg.tokens {
		m := tokenIDRE.FindStringSubmatch(t.id)
		s.tokens[t.id] = &token{id: t.id, user: m[1], name: m[2], secret: t.secret}
	}
	s.ticketKey, s.csrfKey = randomBytes(32), randomBytes(32)
	s.routes = s.buildRoutes()

	if err := s.startTLS(); err != nil {
		return nil, err
	}
	return s, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = crand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return b
}

func randomSecret() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// startTLS generates a certificate for 127.0.0.1, ::1 and localhost, listens
// on a random loopback port and starts serving.
func (s *Server) startTLS() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return fmt.Errorf("proxmoxtest: generate key: %w", err)
	}
	serial := new(big.Int).SetBytes(randomBytes(16))
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "proxmoxtest", Organization: []string{"PVE Cluster Node (fake)"}},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("proxmoxtest: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("proxmoxtest: parse certificate: %w", err)
	}
	s.cert = cert
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("proxmoxtest: listen: %w", err)
	}
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"}, // pve-api-daemon speaks HTTP/1.1 only
	}
	s.listener = tls.NewListener(ln, tlsCfg)
	errLog := log.New(io.Discard, "", 0)
	if s.cfg.logger != nil {
		errLog = slog.NewLogLogger(s.cfg.logger.Handler(), slog.LevelWarn)
	}
	s.httpSrv = &http.Server{
		Handler:           s,
		ErrorLog:          errLog,
		ReadHeaderTimeout: 30 * time.Second,
		ConnState:         s.connState,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	s.URL = "https://" + ln.Addr().String()
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	s.transport = &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   false,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	s.client = &http.Client{Transport: s.transport}
	s.handlers.Add(1)
	go func() {
		defer s.handlers.Done()
		_ = s.httpSrv.Serve(s.listener) // returns http.ErrServerClosed on Close
	}()
	return nil
}

// connState tracks connections so Close can wait for all of them.
func (s *Server) connState(c net.Conn, state http.ConnState) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	switch state {
	case http.StateNew:
		if s.connsOff {
			c.Close()
			return
		}
		s.conns[c] = true
		s.connsWG.Add(1)
	case http.StateHijacked, http.StateClosed:
		if s.conns[c] {
			delete(s.conns, c)
			s.connsWG.Done()
		}
	}
}

// Close shuts the server down: it stops accepting connections, closes the
// open ones, releases requests blocked in fault gates, stops task timers
// (running tasks stay running forever) and waits until every goroutine the
// server started has returned. Close is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.closing)
	s.enterMu.Lock()
	s.entryOff = true
	s.enterMu.Unlock()
	for _, t := range s.tasks {
		if t.timer != nil && t.timer.Stop() {
			s.timers.Done()
		}
		t.timer = nil
	}
	s.notifyLocked()
	s.mu.Unlock()

	_ = s.httpSrv.Close()
	s.connMu.Lock()
	s.connsOff = true
	for c := range s.conns {
		c.Close()
	}
	s.connMu.Unlock()
	s.handlers.Wait()
	s.connsWG.Wait()
	s.timers.Wait()
	s.transport.CloseIdleConnections()
}

// Client returns an HTTP client that trusts the server's certificate and
// keeps enough idle connections for parallel benchmarks. It has no timeout;
// the code under test is expected to bring its own. The same client is
// returned on every call; Close closes its idle connections.
func (s *Server) Client() *http.Client { return s.client }

// Certificate returns the server's self-signed TLS certificate.
func (s *Server) Certificate() *x509.Certificate { return s.cert }

// Fingerprint returns the SHA-256 fingerprint of the server's certificate
// in the form Proxmox shows it: upper-case hex pairs joined by colons.
func (s *Server) Fingerprint() string {
	sum := sha256.Sum256(s.cert.Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// APIToken returns the id ("user@realm!name") and secret of the server's
// default API token: the first [WithAPIToken], or the generated
// "root@pam!guestward" token.
func (s *Server) APIToken() (id, secret string) { return s.defaultToken.id, s.defaultToken.secret }

// Version returns the Proxmox VE version the server emulates.
func (s *Server) Version() string { return s.cfg.version.text }

// Nodes returns the names of the cluster's nodes, in order.
func (s *Server) Nodes() []string {
	out := make([]string, len(s.nodes))
	for i, n := range s.nodes {
		out[i] = n.name
	}
	return out
}

// SetNodeOnline takes a node off the network or brings it back. Requests
// addressed to an offline node fail as Proxmox's proxy fails them (595, "No
// route to host", empty body, nothing executed), its tasks stop advancing
// only in the sense that their endpoints are unreachable, and
// /cluster/resources reports its guests with status "unknown".
func (s *Server) SetNodeOnline(name string, online bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodeByName[name]
	if !ok {
		return fmt.Errorf("proxmoxtest: no node %q", name)
	}
	n.online = online
	return nil
}

// SetResourcesStale freezes /cluster/resources at its current content
// (stale=true), emulating the ~10 s lag of the RRD data it is built from,
// or lets it follow the live state again (stale=false). Config and status
// endpoints are never stale.
func (s *Server) SetResourcesStale(stale bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !stale {
		s.staleRes = nil
		return
	}
	b, _ := s.resourcesJSONLocked("")
	s.staleRes = b
}

func (s *Server) now() time.Time { return s.cfg.clock.Now() }

// notifyLocked wakes every waiter of WaitIdle / AwaitTask.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitFor blocks until cond (evaluated under s.mu) is true, ctx ends or the
// server closes.
func (s *Server) waitFor(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		if cond() {
			s.mu.Unlock()
			return nil
		}
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// seqPID hands out increasing fake process ids.
func (s *Server) seqPID() int {
	s.nextPID++
	if s.nextPID > 4194304 {
		s.nextPID = 300
	}
	return s.nextPID
}

// pstart is a process start time in clock ticks (100 Hz) since "boot".
func (s *Server) pstart(t time.Time) uint64 {
	d := t.Sub(s.bootTime)
	if d < 0 {
		d = 0
	}
	return uint64(d / (10 * time.Millisecond))
}

func hostCPUs() int { return 8 }
