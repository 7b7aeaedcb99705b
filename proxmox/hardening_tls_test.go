package proxmox

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/testca"
)

func fingerprint(c tls.Certificate) string {
	sum := sha256.Sum256(c.Certificate[0])
	return hex.EncodeToString(sum[:])
}

// versionServer serves GET /version over TLS with cert at addr
// ("127.0.0.1:0", "[::1]:0"), counting the requests that reach it. It
// skips the test if addr cannot be listened on (no IPv6).
func versionServer(t *testing.T, addr string, cert tls.Certificate) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	n := new(atomic.Int32)
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		reply(w, map[string]any{"version": "8.1.4", "release": "8.1", "repoid": "ec5affc9e41f1d79"})
	}))
	ts.Listener.Close()
	ts.Listener = ln
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts, n
}

// TestPinAndPoolCheckTheURLHost: with both WithFingerprint and
// WithCAPool, the certificate must also be issued for the host the base
// URL names, IP literals included. Before the fix, the host check used
// the TLS server name, which is empty for an IP address, and a
// certificate for another host was accepted at https://127.0.0.1 and
// https://[::1].
func TestPinAndPoolCheckTheURLHost(t *testing.T) {
	ca := testca.New(t)
	v4, v6 := net.ParseIP("127.0.0.1"), net.ParseIP("::1")
	tests := []struct {
		name string
		addr string
		cert tls.Certificate
		opts func(cert tls.Certificate) []Option
		ok   bool
	}{
		{"IPv4 URL, certificate for another host", "127.0.0.1:0", ca.Issue(t, []string{"other.example"}), pinAndPool(ca), false},
		{"IPv4 URL, certificate for another IP", "127.0.0.1:0", ca.Issue(t, nil, net.ParseIP("10.0.0.1")), pinAndPool(ca), false},
		{"IPv4 URL, certificate for the IPv6 loopback", "127.0.0.1:0", ca.Issue(t, nil, v6), pinAndPool(ca), false},
		{"IPv4 URL, certificate for its IP", "127.0.0.1:0", ca.Issue(t, []string{"other.example"}, v4), pinAndPool(ca), true},
		{"IPv6 URL, certificate for another host", "[::1]:0", ca.Issue(t, []string{"other.example"}), pinAndPool(ca), false},
		{"IPv6 URL, certificate for the IPv4 loopback", "[::1]:0", ca.Issue(t, nil, v4), pinAndPool(ca), false},
		{"IPv6 URL, certificate for its IP", "[::1]:0", ca.Issue(t, nil, v6), pinAndPool(ca), true},
		// Controls: a pin alone accepts exactly its certificate whatever
		// it names; a pool alone checks the host as Go always does.
		{"pin alone, certificate for another host", "127.0.0.1:0", ca.Issue(t, []string{"other.example"}),
			func(c tls.Certificate) []Option { return []Option{WithFingerprint(fingerprint(c))} }, true},
		{"pool alone, certificate for another host", "127.0.0.1:0", ca.Issue(t, []string{"other.example"}),
			func(tls.Certificate) []Option { return []Option{WithCAPool(ca.Pool)} }, false},
		{"pool alone, certificate for its IP", "[::1]:0", ca.Issue(t, nil, v6),
			func(tls.Certificate) []Option { return []Option{WithCAPool(ca.Pool)} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, n := versionServer(t, tt.addr, tt.cert)
			lg, _ := testLogger(t)
			opts := append([]Option{WithAPIToken(testTokenID, testSecret), WithLogger(lg), WithRetry(2, time.Millisecond, time.Millisecond)}, tt.opts(tt.cert)...)
			c, err := New(ts.URL, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseIdleConnections()
			_, err = c.Version(context.Background())
			if tt.ok {
				if err != nil {
					t.Fatalf("Version: %v", checkErr(t, err))
				}
				return
			}
			if err == nil {
				t.Fatalf("%s accepted a certificate for %v %v", ts.URL, tt.cert.Leaf.DNSNames, tt.cert.Leaf.IPAddresses)
			}
			checkErr(t, err)
			var hostErr x509.HostnameError
			if !errors.As(err, &hostErr) {
				t.Errorf("want an x509.HostnameError, got %v", err)
			}
			if errors.Is(err, ErrTransient) {
				t.Errorf("a refused certificate is not transient: %v", err)
			}
			if got := n.Load(); got != 0 {
				t.Errorf("%d requests reached the server through a refused connection", got)
			}
		})
	}
}

func pinAndPool(ca *testca.CA) func(tls.Certificate) []Option {
	return func(c tls.Certificate) []Option {
		return []Option{WithCAPool(ca.Pool), WithFingerprint(fingerprint(c))}
	}
}

// TestPinAndPoolCheckDNSNames covers host names, which the end-to-end test
// cannot dial without a resolver: the verification newTransport installs
// is given the URL's host and a handshake's state.
func TestPinAndPoolCheckDNSNames(t *testing.T) {
	ca := testca.New(t)
	cert := ca.Issue(t, []string{"pve1.example.com", "*.pve.example.com"}, net.ParseIP("192.0.2.7"), net.ParseIP("2001:db8::7"))
	sum := sha256.Sum256(cert.Certificate[0])
	for host, ok := range map[string]bool{
		"pve1.example.com":      true,
		"PVE1.Example.COM":      true,
		"node3.pve.example.com": true,
		"pve2.example.com":      false,
		"example.com":           false,
		"192.0.2.7":             true,
		"2001:db8::7":           true,
		"192.0.2.8":             false,
		"2001:db8::8":           false,
		"":                      false,
	} {
		tc := newTransport(host, ca.Pool, [][sha256.Size]byte{sum}).TLSClientConfig
		// The server name a handshake reports is deliberately a name the
		// certificate holds: only the URL's host may decide.
		err := tc.VerifyConnection(tls.ConnectionState{ServerName: "pve1.example.com", PeerCertificates: []*x509.Certificate{cert.Leaf}})
		if (err == nil) != ok {
			t.Errorf("host %q: err = %v, want ok = %v", host, err, ok)
		}
	}
}

// TestNewRefusesAnEmptyHost: a base URL with a port and no host name would
// leave the certificate nothing to be checked against.
func TestNewRefusesAnEmptyHost(t *testing.T) {
	for _, u := range []string{"https://:8006", "https://:8006/api2/json", "https://[]:8006"} {
		c, err := New(u)
		if c != nil || !errors.Is(err, ErrInvalidOption) {
			t.Errorf("New(%q) = %v, %v; want ErrInvalidOption", u, c, err)
		}
	}
}

// opaqueRT is a RoundTripper the client cannot look into.
type opaqueRT struct{ http.RoundTripper }

// TestHTTPClientCannotWeakenTLS: a client given with WithHTTPClient is
// inspected, and refused if its transport turns verification off or
// weakens TLS, or cannot be inspected without WithOpaqueTransport. Before
// the fix every one of these was accepted.
func TestHTTPClientCannotWeakenTLS(t *testing.T) {
	insecure := func(tc *tls.Config) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	dialTLS := &http.Transport{DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return tls.Dial(network, addr, &tls.Config{InsecureSkipVerify: true})
	}}
	anyCert := func(tls.ConnectionState) error { return nil }
	refused := []struct {
		name string
		opts []Option
	}{
		{"InsecureSkipVerify", []Option{WithHTTPClient(insecure(&tls.Config{InsecureSkipVerify: true}))}},
		{"InsecureSkipVerify with a VerifyConnection", []Option{WithHTTPClient(insecure(&tls.Config{InsecureSkipVerify: true, VerifyConnection: anyCert}))}},
		{"InsecureSkipVerify with WithOpaqueTransport", []Option{WithHTTPClient(insecure(&tls.Config{InsecureSkipVerify: true})), WithOpaqueTransport()}},
		{"TLS 1.0 allowed", []Option{WithHTTPClient(insecure(&tls.Config{MinVersion: tls.VersionTLS10}))}},
		{"session keys written", []Option{WithHTTPClient(insecure(&tls.Config{KeyLogWriter: io.Discard}))}},
		{"insecure cipher suite", []Option{WithHTTPClient(insecure(&tls.Config{CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_RC4_128_SHA}}))}},
		{"another RoundTripper", []Option{WithHTTPClient(&http.Client{Transport: opaqueRT{http.DefaultTransport}})}},
		{"a Transport that dials TLS itself", []Option{WithHTTPClient(&http.Client{Transport: dialTLS})}},
		{"WithOpaqueTransport without WithHTTPClient", []Option{WithOpaqueTransport()}},
	}
	for _, tt := range refused {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			c, err := New("https://pve:8006", tt.opts...)
			if c != nil || !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("New = %v, %v; want ErrInvalidOption", c, err)
			}
			checkErr(t, err)
		})
	}
	accepted := []struct {
		name string
		opts []Option
	}{
		{"nil transport", []Option{WithHTTPClient(&http.Client{})}},
		{"transport without TLS settings", []Option{WithHTTPClient(&http.Client{Transport: &http.Transport{}})}},
		{"own roots and an extra check", []Option{WithHTTPClient(insecure(&tls.Config{RootCAs: x509.NewCertPool(), VerifyConnection: anyCert, MinVersion: tls.VersionTLS13}))}},
		{"a proxy", []Option{WithHTTPClient(&http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}})}},
		{"another RoundTripper, vouched for", []Option{WithHTTPClient(&http.Client{Transport: opaqueRT{http.DefaultTransport}}), WithOpaqueTransport()}},
		{"a Transport that dials TLS itself, vouched for", []Option{WithHTTPClient(&http.Client{Transport: dialTLS}), WithOpaqueTransport()}},
	}
	for _, tt := range accepted {
		t.Run("accepted/"+tt.name, func(t *testing.T) {
			if _, err := New("https://pve:8006", tt.opts...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDefaultTransportIsInspected: a nil transport means
// http.DefaultTransport, which a program may have replaced; it is
// inspected like any other. (The global is not touched: checkTransport is
// given the default to use.)
func TestDefaultTransportIsInspected(t *testing.T) {
	for _, tt := range []struct {
		name     string
		def      http.RoundTripper
		opaqueOK bool
		ok       bool
	}{
		{"net/http's default", http.DefaultTransport, false, true},
		{"replaced by an insecure Transport", &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, true, false},
		{"replaced by another RoundTripper", opaqueRT{}, false, false},
		{"replaced by another RoundTripper, vouched for", opaqueRT{}, true, true},
	} {
		err := checkTransport(nil, tt.def, tt.opaqueOK)
		if (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: %v, want ok = %v", tt.name, err, tt.ok)
		}
	}
}

// TestRedirectsAreNeverFollowed: a server (or an impostor) that answers
// with a redirect to plain http must not receive the credentials there,
// whatever the redirect policy of the client given with WithHTTPClient.
// Before the fix, that client followed a 307 and sent the token's
// Authorization header, or the login form with the password, in clear
// text.
func TestRedirectsAreNeverFollowed(t *testing.T) {
	var leaked atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Add(1)
		body, _ := io.ReadAll(r.Body)
		// Recorded only to be scanned: the suite fails if a secret
		// arrived here.
		recordText(r.Header.Get("Authorization") + " " + r.Header.Get("Cookie") + " " + string(body))
		reply(w, map[string]any{"version": "8.1.4"})
	}))
	t.Cleanup(plain.Close)
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		s := newSrv(t)
		redirect := func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, plain.URL+r.URL.Path, code)
		}
		s.handle("GET /version", redirect)
		s.handle("POST /nodes/pve1/qemu/100/status/start", redirect)
		s.handle("POST /access/ticket", redirect)
		hc := s.ts.Client()
		for _, auth := range []Option{WithAPIToken(testTokenID, testSecret), WithPassword("root@pam", testPassword)} {
			c, err := New(s.ts.URL, WithHTTPClient(hc), auth, WithRetry(2, time.Millisecond, time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Version(context.Background())
			checkRedirectErr(t, code, err)
			_, err = c.Start(context.Background(), testRef)
			checkRedirectErr(t, code, err)
		}
		if hc.CheckRedirect != nil {
			t.Errorf("New changed the caller's client's CheckRedirect")
		}
	}
	if n := leaked.Load(); n != 0 {
		t.Fatalf("%d requests followed a redirect to %s", n, plain.URL)
	}
}

func checkRedirectErr(t *testing.T, code int, err error) {
	t.Helper()
	checkErr(t, err)
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != code {
		t.Errorf("after a %d answer: %v, want an *APIError with that status", code, err)
	}
	if errors.Is(err, ErrTransient) {
		t.Errorf("a redirect is not transient: %v", err)
	}
}
