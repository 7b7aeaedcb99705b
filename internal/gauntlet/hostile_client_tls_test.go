package gauntlet

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/testca"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// The hostile battery's attacks on the connection rather than on the
// answers: an impostor that redirects the engine's requests to plain http,
// an impostor at an IP address with a certificate the client's CA signed
// for another host, HTTP clients that would turn verification off, a
// shutdown timeout too large for Proxmox, and a program that prints its
// client. Each must be refused with a clear error, no credential may leave
// over plain http or reach the impostor, and nothing may reach Proxmox
// that should not.

// TestHostileRedirect: an impostor answers every request with a redirect
// to a plain-http server, and the engine's client is a caller's HTTP
// client, whose own policy would follow it. The pass must abort, the
// one-shot must fail to observe its guest, and neither the plain-http
// server nor Proxmox may see a request.
func TestHostileRedirect(t *testing.T) {
	fig := newFigures(t)
	srv := batteryCluster(t)
	_, secret := srv.APIToken()
	var leaked atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Add(1)
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(plain.Close)
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			fig.add("hostile_connection_cases", 1)
			imp := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, plain.URL+r.URL.RequestURI(), code)
			}))
			imp.Config.ErrorLog = log.New(io.Discard, "", 0)
			imp.StartTLS()
			t.Cleanup(imp.Close)
			client, err := proxmox.New(imp.URL, proxmox.WithHTTPClient(imp.Client()), proxmox.WithAPIToken(srv.APIToken()),
				proxmox.WithRetry(1, time.Millisecond, 2*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(client.CloseIdleConnections)
			e := newBatteryEngine(t, client, staticProvider(t, good))
			ctx := ctxFor(t, time.Minute)
			_, err = e.ReconcileOnce(ctx)
			if !errors.Is(err, reconcile.ErrPassAborted) {
				t.Fatalf("the pass was not aborted: %v", err)
			}
			var ae *proxmox.APIError
			if !errors.As(err, &ae) || ae.StatusCode != code {
				t.Errorf("the pass's error does not carry the %d answer: %v", code, err)
			}
			res, err := e.Apply(ctx, reconcile.OneShot{Key: "start-100", Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}, Kind: reconcile.ActionStart})
			if err == nil || res.Applied() {
				t.Fatalf("a one-shot went through a redirect: %+v %v", res, err)
			}
			for _, text := range []string{fmt.Sprint(err), res.Error} {
				if strings.Contains(text, secret) {
					t.Errorf("an error shows the token secret: %s", text)
				}
			}
		})
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("%d requests followed a redirect to plain http", n)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("%d requests reached Proxmox through the impostor", n)
	}
}

// TestHostileCertificateAtIP: an impostor at an IP address presents a
// certificate that the CA the client trusts issued for another host, and
// that the client has pinned (say, a node's certificate copied to another
// machine). Pin and CA both hold, but the certificate does not name the
// address the client was told to reach: the pass must abort on the
// certificate before any request is sent. The same setup with a
// certificate for the address works, so the refusal is the host check.
func TestHostileCertificateAtIP(t *testing.T) {
	fig := newFigures(t)
	ca := testca.New(t)
	for _, tt := range []struct {
		name string
		addr string
		ip   net.IP
	}{
		{"IPv4", "127.0.0.1:0", net.ParseIP("127.0.0.1")},
		{"IPv6", "[::1]:0", net.ParseIP("::1")},
	} {
		for _, honest := range []bool{false, true} {
			name := tt.name + "/certificate for another host"
			if honest {
				name = tt.name + "/certificate for the address"
			}
			t.Run(name, func(t *testing.T) {
				fig.add("hostile_connection_cases", 1)
				ln, err := net.Listen("tcp", tt.addr)
				if err != nil {
					t.Skipf("cannot listen on %s: %v", tt.addr, err)
				}
				cert := ca.Issue(t, []string{"pve1.other.example"})
				if honest {
					cert = ca.Issue(t, nil, tt.ip)
				}
				srv := batteryCluster(t)
				imp := httptest.NewUnstartedServer(srv)
				imp.Listener.Close()
				imp.Listener = ln
				imp.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
				imp.Config.ErrorLog = log.New(io.Discard, "", 0)
				imp.StartTLS()
				t.Cleanup(imp.Close)
				sum := sha256.Sum256(cert.Certificate[0])
				client, err := proxmox.New(imp.URL, proxmox.WithCAPool(ca.Pool), proxmox.WithFingerprint(hex.EncodeToString(sum[:])),
					proxmox.WithAPIToken(srv.APIToken()), proxmox.WithRetry(1, time.Millisecond, 2*time.Millisecond))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(client.CloseIdleConnections)
				e := newBatteryEngine(t, client, staticProvider(t, good))
				_, err = e.ReconcileOnce(ctxFor(t, time.Minute))
				if honest {
					if err != nil {
						t.Fatalf("pass with a certificate for %s: %v", tt.ip, err)
					}
					return
				}
				if !errors.Is(err, reconcile.ErrPassAborted) {
					t.Fatalf("the pass was not aborted: %v", err)
				}
				var hostErr x509.HostnameError
				if !errors.As(err, &hostErr) {
					t.Errorf("the pass's error is not the host check: %v", err)
				}
				if n := len(srv.Requests()); n != 0 {
					t.Errorf("%d requests reached the impostor", n)
				}
			})
		}
	}
}

// TestHostileHTTPClient: a program hands the client an HTTP client that
// would undo its TLS guarantees. New must refuse each with
// ErrInvalidOption, so no engine is ever built on it.
func TestHostileHTTPClient(t *testing.T) {
	fig := newFigures(t)
	srv := batteryCluster(t)
	withTLS := func(tc *tls.Config) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	type wrapped struct{ http.RoundTripper }
	for _, tt := range []struct {
		name string
		hc   *http.Client
	}{
		{"verification off", withTLS(&tls.Config{InsecureSkipVerify: true})},
		{"verification off, a hook that accepts anything", withTLS(&tls.Config{InsecureSkipVerify: true, VerifyPeerCertificate: func([][]byte, [][]*x509.Certificate) error { return nil }})},
		{"TLS 1.0", withTLS(&tls.Config{MinVersion: tls.VersionTLS10})},
		{"session keys logged", withTLS(&tls.Config{KeyLogWriter: io.Discard})},
		{"a RoundTripper that cannot be inspected", &http.Client{Transport: wrapped{srv.Client().Transport}}},
	} {
		fig.add("hostile_connection_cases", 1)
		c, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(tt.hc), proxmox.WithAPIToken(srv.APIToken()))
		if c != nil || !errors.Is(err, proxmox.ErrInvalidOption) {
			t.Errorf("%s: New = %v, %v; want ErrInvalidOption", tt.name, c, err)
		}
	}
}

// TestHostileShutdownTimeout: a one-shot shutdown whose timeout, a whole
// number of seconds, is too large for Proxmox (near the largest Duration,
// where rounding used to overflow into a negative number). The one-shot's
// validation refuses it before anything is journaled, the client refuses
// it on its own too, and no shutdown may reach Proxmox.
func TestHostileShutdownTimeout(t *testing.T) {
	fig := newFigures(t)
	srv := proxmoxtest.Start(t, proxmoxtest.WithNodes("pve1"))
	ref := proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID, Running: true, Config: map[string]string{"name": "web"}}); err != nil {
		t.Fatal(err)
	}
	client := newClient(t, srv)
	t.Cleanup(client.CloseIdleConnections)
	e := newBatteryEngine(t, client, staticProvider(t, `{"guests": []}`))
	ctx := ctxFor(t, time.Minute)
	for i, d := range []time.Duration{
		time.Duration(1<<63-1) / time.Second * time.Second,
		proxmox.MaxShutdownTimeout + time.Second,
	} {
		fig.add("hostile_connection_cases", 1)
		key := fmt.Sprintf("halt-%d", i)
		_, err := e.Apply(ctx, reconcile.OneShot{Key: key, Ref: ref, Kind: reconcile.ActionShutdown, Timeout: d})
		if !errors.Is(err, reconcile.ErrInvalidOneShot) {
			t.Errorf("shutdown with timeout %s: %v, want ErrInvalidOneShot", d, err)
		}
		if _, ok, err := e.Lookup(ctx, key); ok || err != nil {
			t.Errorf("shutdown with timeout %s: journaled (%v, %v); a refused one-shot spends no key", d, ok, err)
		}
		if _, err := client.Shutdown(ctx, ref, d); !errors.Is(err, proxmox.ErrInvalidArgument) {
			t.Errorf("client shutdown with timeout %s: %v, want ErrInvalidArgument", d, err)
		}
	}
	for _, r := range srv.Requests() {
		if strings.HasSuffix(r.Path, "/status/shutdown") {
			t.Errorf("a shutdown reached Proxmox with timeout %q", r.Params["timeout"])
		}
	}
}

// TestHostilePrinting: a program prints its configuration, with the client
// in it, every way Go offers, including a copy of the client's value in a
// field fmt cannot call methods on. The token secret must never show.
func TestHostilePrinting(t *testing.T) {
	fig := newFigures(t)
	srv := batteryCluster(t)
	_, secret := srv.APIToken()
	client := newClient(t, srv)
	t.Cleanup(client.CloseIdleConnections)
	type settings struct {
		Config reconcile.Config
		copied proxmox.Client
	}
	cfg := settings{Config: reconcile.Config{Proxmox: client, Journal: journal.NewMemory()}, copied: *client}
	var out strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		fig.add("hostile_connection_cases", 1)
		fmt.Fprintf(&out, verb+"\n", cfg)
		fmt.Fprintf(&out, verb+"\n", &cfg)
		fmt.Fprintf(&out, verb+"\n", *client)
	}
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "settings", cfg, "client", *client)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "settings", cfg, "client", *client)
	for _, v := range []any{*client, client, struct{ Client proxmox.Client }{*client}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%T): %v", v, err)
		}
		out.Write(b)
	}
	if strings.Contains(out.String(), secret) {
		t.Fatalf("the token secret was printed:\n%s", out.String())
	}
}

// staticProvider is a provider of a fixed desired-state file.
func staticProvider(t *testing.T, file string) reconcile.DesiredProvider {
	t.Helper()
	ds, err := reconcile.ParseDesiredJSON([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	prov, err := reconcile.NewStaticProvider(ds)
	if err != nil {
		t.Fatal(err)
	}
	return prov
}
