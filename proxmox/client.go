package proxmox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/guestward/guestward/internal/backoff"
)

// Client talks to one Proxmox VE API endpoint (any node of a cluster; the
// node proxies requests for other nodes). Create it with [New].
//
// A Client is safe for concurrent use by multiple goroutines; share one per
// endpoint and credential. It holds no goroutines of its own and needs no
// Close: idle connections are closed by the transport's idle timeout, or at
// once by [Client.CloseIdleConnections].
//
// Use a Client through the pointer New returns. A copied Client value
// still works and shares the original's connections and credentials, and
// it prints as safely as the pointer: every fmt verb, slog and
// encoding/json show at most the endpoint and the identity, never a
// secret, even from inside a struct that holds a Client value.
type Client struct {
	base          string // "https://host:8006/api2/json", no trailing slash
	rc            *retryablehttp.Client
	auth          authenticator // nil: no credentials; secrets two pointers away
	log           *slog.Logger
	userAgent     string
	pollMin       time.Duration
	pollMax       time.Duration
	notFoundGrace time.Duration
	now           func() time.Time
	// bufs is a pointer so that a Client holds no lock by value and its
	// value methods (String, Format) are allowed.
	bufs *sync.Pool // *bytes.Buffer for response bodies
	// traced is true when the transport reports connection use through
	// net/http/httptrace (net/http's own Transport does). Only then can
	// a failed write be proven unsent; with any other transport every
	// failed write counts as possibly sent.
	traced bool
	// observe, if set, learns of every attempt (WithRequestObserver).
	observe func(RequestInfo)
}

// maxResponse bounds the size of a response body the client reads.
// /cluster/resources of a very large cluster is a few MiB.
const maxResponse = 64 << 20

// New returns a client for the Proxmox VE API at baseURL, which names the
// server ("https://pve1.example.com:8006") and may include a path prefix of
// a reverse proxy; "/api2/json" is appended unless baseURL already ends with
// it. Only https is accepted, and the server certificate is verified
// against the system roots unless [WithCAPool] or [WithFingerprint] say
// otherwise. Without [WithAPIToken] or [WithPassword] requests are sent
// unauthenticated, which Proxmox answers with 401 except for a few public
// endpoints.
//
// New does no I/O. It returns an error wrapping [ErrInvalidOption] for a bad
// base URL, option, or combination of options.
func New(baseURL string, opts ...Option) (*Client, error) {
	base, host, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	s := settings{
		userAgent:     DefaultUserAgent,
		timeout:       DefaultTimeout,
		retries:       DefaultRetries,
		retryMin:      DefaultRetryWaitMin,
		retryMax:      DefaultRetryWaitMax,
		pollMin:       DefaultTaskPollMin,
		pollMax:       DefaultTaskPollMax,
		notFoundGrace: DefaultTaskNotFoundWait,
		now:           time.Now,
	}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil Option", ErrInvalidOption)
		}
		if err := o.apply(&s); err != nil {
			return nil, err
		}
	}
	hc := s.httpClient
	if hc != nil {
		if s.caPool != nil || len(s.pins) > 0 || s.timeoutSet {
			return nil, fmt.Errorf("%w: WithCAPool, WithFingerprint and WithTimeout configure the client's own transport and cannot be combined with WithHTTPClient", ErrInvalidOption)
		}
		if err := checkTransport(hc.Transport, http.DefaultTransport, s.opaqueOK); err != nil {
			return nil, err
		}
		// A copy, so that the caller's client keeps its own redirect
		// policy.
		own := *hc
		own.CheckRedirect = refuseRedirect
		hc = &own
	} else {
		if s.opaqueOK {
			return nil, fmt.Errorf("%w: WithOpaqueTransport applies only to the client given with WithHTTPClient", ErrInvalidOption)
		}
		hc = &http.Client{
			Transport:     newTransport(host, s.caPool, s.pins),
			Timeout:       s.timeout,
			CheckRedirect: refuseRedirect,
		}
	}
	traced := false
	switch hc.Transport.(type) {
	case nil, *http.Transport:
		traced = true
	}
	c := &Client{
		traced:        traced,
		base:          base,
		auth:          s.auth,
		log:           s.logger,
		userAgent:     s.userAgent,
		pollMin:       s.pollMin,
		pollMax:       s.pollMax,
		notFoundGrace: s.notFoundGrace,
		now:           s.now,
		observe:       s.observe,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.bufs = &sync.Pool{New: func() any { return new(bytes.Buffer) }}
	c.rc = &retryablehttp.Client{
		HTTPClient:     hc,
		Logger:         nil, // we log through slog, without URLs' queries or headers
		RetryWaitMin:   s.retryMin,
		RetryWaitMax:   s.retryMax,
		RetryMax:       s.retries,
		CheckRetry:     checkRetry,
		Backoff:        retryWait,
		ErrorHandler:   retryablehttp.PassthroughErrorHandler,
		RequestLogHook: c.beforeAttempt,
	}
	if c.observe != nil {
		c.rc.CheckRetry = checkRetryObserved
	}
	return c, nil
}

// parseBaseURL checks New's base URL and returns the API's root and the
// host name (or IP address, without brackets) the certificate must be
// issued for.
func parseBaseURL(raw string) (base, host string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes the input, which could hold a password.
		return "", "", fmt.Errorf("%w: base URL is not a valid URL", ErrInvalidOption)
	}
	if u.User != nil {
		return "", "", fmt.Errorf("%w: base URL must not contain user information; use WithAPIToken or WithPassword", ErrInvalidOption)
	}
	if u.Scheme != "https" {
		return "", "", fmt.Errorf("%w: base URL %q: scheme must be https (Proxmox serves the API over TLS only)", ErrInvalidOption, u.Redacted())
	}
	if u.Host == "" || u.Hostname() == "" || u.Opaque != "" {
		return "", "", fmt.Errorf("%w: base URL %q has no host", ErrInvalidOption, u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return "", "", fmt.Errorf("%w: base URL %q must not have a query or fragment", ErrInvalidOption, u.Redacted())
	}
	p := strings.TrimRight(u.EscapedPath(), "/")
	switch {
	case strings.HasSuffix(p, "/api2/json"):
	case strings.Contains(p+"/", "/api2/"):
		return "", "", fmt.Errorf("%w: base URL %q: only the /api2/json format is supported", ErrInvalidOption, u.Redacted())
	default:
		p += "/api2/json"
	}
	return u.Scheme + "://" + u.Host + p, u.Hostname(), nil
}

// refuseRedirect is every client's CheckRedirect. Proxmox never
// redirects an API request; following a redirect could send the
// credentials to another host, or over plain http. The 3xx answer itself
// is returned to the caller as an error.
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// checkTransport refuses a transport given with WithHTTPClient that would
// weaken TLS, or that cannot be inspected unless opaqueOK. rt nil means
// def, which is http.DefaultTransport outside tests.
func checkTransport(rt, def http.RoundTripper, opaqueOK bool) error {
	name := "WithHTTPClient: the client's transport"
	if rt == nil {
		rt, name = def, "WithHTTPClient: http.DefaultTransport (the client's transport is nil)"
	}
	t, ok := rt.(*http.Transport)
	opaque := ""
	switch {
	case !ok:
		opaque = fmt.Sprintf("%s is a %T, whose TLS settings cannot be inspected", name, rt)
	//lint:ignore SA1019 a transport that still sets the deprecated DialTLS must be seen too
	case t.DialTLSContext != nil || t.DialTLS != nil:
		opaque = name + " makes its own TLS connections (DialTLSContext or DialTLS), so its TLS settings say nothing"
	}
	if opaque != "" {
		if opaqueOK {
			return nil
		}
		return fmt.Errorf("%w: %s; give WithOpaqueTransport as well if it verifies the server's certificate", ErrInvalidOption, opaque)
	}
	tc := t.TLSClientConfig
	if tc == nil {
		return nil // net/http's defaults: verified, TLS 1.2 or later
	}
	if tc.InsecureSkipVerify {
		return fmt.Errorf("%w: %s skips certificate verification (InsecureSkipVerify); use WithFingerprint for a self-signed certificate", ErrInvalidOption, name)
	}
	if tc.MinVersion != 0 && tc.MinVersion < tls.VersionTLS12 {
		return fmt.Errorf("%w: %s allows TLS versions before 1.2 (MinVersion %s)", ErrInvalidOption, name, tls.VersionName(tc.MinVersion))
	}
	if tc.KeyLogWriter != nil {
		return fmt.Errorf("%w: %s writes its TLS session keys (KeyLogWriter), which decrypt the credentials", ErrInvalidOption, name)
	}
	for _, id := range tc.CipherSuites {
		for _, bad := range tls.InsecureCipherSuites() {
			if id == bad.ID {
				return fmt.Errorf("%w: %s enables the insecure cipher suite %s", ErrInvalidOption, name, bad.Name)
			}
		}
	}
	return nil
}

// newTransport is the default transport: verified TLS 1.2+, HTTP/1.1 (the
// Proxmox API server does not speak HTTP/2), bounded dial and handshake
// times, and enough idle connections for concurrent callers. host is the
// base URL's host, the only one the client connects to.
func newTransport(host string, pool *x509.CertPool, pins [][sha256.Size]byte) *http.Transport {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if len(pins) > 0 {
		// The pin replaces chain verification: Proxmox's certificates are
		// usually self-signed. VerifyConnection runs regardless.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrFingerprintMismatch
			}
			leaf := cs.PeerCertificates[0]
			sum := sha256.Sum256(leaf.Raw)
			match := false
			for _, p := range pins {
				if subtle.ConstantTimeCompare(sum[:], p[:]) == 1 {
					match = true
				}
			}
			if !match {
				return fmt.Errorf("%w (got %X)", ErrFingerprintMismatch, sum)
			}
			if pool != nil {
				inter := x509.NewCertPool()
				for _, ic := range cs.PeerCertificates[1:] {
					inter.AddCert(ic)
				}
				// The host comes from the URL, not from cs.ServerName:
				// TLS sends no server name for an IP address, and an
				// empty name would skip the check. Verify matches an IP
				// literal against the certificate's IP addresses.
				if host == "" {
					return x509.HostnameError{Certificate: leaf}
				}
				_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: host})
				return err
			}
			return nil
		}
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
	}
}

// CloseIdleConnections closes the connections the client keeps open for
// reuse, for example before a goroutine-leak check in a test. The client
// stays usable; later requests open new connections.
func (c *Client) CloseIdleConnections() { c.rc.HTTPClient.CloseIdleConnections() }

// The formatting methods below have value receivers, so that a Client
// value formats through them as the pointer does; fmt would otherwise walk
// the copy's fields.

// String describes the client: endpoint and identity, never a secret.
func (c Client) String() string {
	id := "no credentials"
	if c.auth != nil {
		id = c.auth.describe()
	}
	return fmt.Sprintf("proxmox.Client(%s, %s)", c.base, id)
}

// GoString is String, so %#v is as safe as %v.
func (c Client) GoString() string { return c.String() }

// Format prints String for every verb, so no fmt verb reaches the fields.
func (c Client) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", c.String())
		return
	}
	_, _ = io.WriteString(f, c.String())
}

// LogValue describes the client to slog without secrets.
func (c Client) LogValue() slog.Value { return slog.StringValue(c.String()) }

// request is one API call.
type request struct {
	method    string
	path      string // escaped, relative to /api2/json, starting with '/'
	query     url.Values
	form      url.Values
	noAuth    bool
	retryable bool // a write that is safe to repeat (log in)
}

// rawResponse is an HTTP answer, body read.
type rawResponse struct {
	status     int
	statusLine string
	body       *bytes.Buffer
}

// call performs r and decodes the data member of the answer into out.
func (c *Client) call(ctx context.Context, r *request, out any) error {
	_, err := c.callTotal(ctx, r, out)
	return err
}

// callTotal is call, also returning the envelope's total (-1 if absent).
func (c *Client) callTotal(ctx context.Context, r *request, out any) (int64, error) {
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	var body []byte
	if r.form != nil {
		body = []byte(r.form.Encode())
	}
	for attempt := 0; ; attempt++ {
		var cr creds
		if !r.noAuth && c.auth != nil {
			var err error
			if cr, err = c.auth.credentials(ctx, c); err != nil {
				return -1, err
			}
		}
		leave, err := enterGate(ctx, r.path)
		if err != nil {
			return -1, fmt.Errorf("proxmox: %s %s: waiting to send: %w", r.method, displayPath(r.path), err)
		}
		resp, err := c.exchange(ctx, r, body, cr)
		leave()
		if err != nil {
			return -1, err
		}
		if resp.status == http.StatusUnauthorized && attempt == 0 && !r.noAuth && c.auth != nil && c.auth.rejected(cr) {
			// Proxmox authenticates before it runs anything, so a 401
			// is never a half-done write: log in again and resend once.
			c.putBuf(resp.body)
			c.log.LogAttrs(ctx, slog.LevelInfo, "proxmox: ticket refused; logging in again",
				slog.String("method", r.method), slog.String("path", r.path))
			continue
		}
		if resp.status < 200 || resp.status > 299 {
			e := c.apiError(r, resp)
			c.putBuf(resp.body)
			return -1, e
		}
		total, err := decodeData(resp.body.Bytes(), out)
		c.putBuf(resp.body)
		if err != nil {
			return -1, c.answerErr(r.method, r.path, err)
		}
		return total, nil
	}
}

func (c *Client) apiError(r *request, resp *rawResponse) *APIError {
	e := decodeAPIError(r.method, displayPath(r.path), resp.status, resp.statusLine, resp.body.Bytes())
	e.Message = c.redact(e.Message)
	for k, v := range e.Errors {
		e.Errors[k] = c.redact(v)
	}
	return e
}

func displayPath(p string) string {
	if d, err := url.PathUnescape(p); err == nil {
		return d
	}
	return p
}

func (c *Client) putBuf(b *bytes.Buffer) {
	if b.Cap() <= 1<<20 {
		b.Reset()
		c.bufs.Put(b)
	}
}

// policy travels with a request's context to the retry hooks.
type policy struct {
	idempotent bool        // safe to send again whatever happened
	traced     bool        // gotConn is meaningful
	gotConn    atomic.Bool // this attempt obtained a connection
	attempts   atomic.Int32
	obs        *attemptObs // nil without WithRequestObserver
}

type policyKey struct{}

// exchange sends one request through the retrying client.
func (c *Client) exchange(ctx context.Context, r *request, body []byte, cr creds) (*rawResponse, error) {
	p := &policy{idempotent: r.method == http.MethodGet || r.retryable, traced: c.traced}
	if c.observe != nil {
		p.obs = newAttemptObs(r)
	}
	rctx := context.WithValue(ctx, policyKey{}, p)
	rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { p.gotConn.Store(true) },
	})
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	// A nil interface means no body at all: Proxmox refuses bodies on GET
	// and chunked bodies everywhere, so an empty POST goes out with
	// Content-Length: 0 and a non-empty one with its exact length.
	var raw any
	if len(body) > 0 {
		raw = body
	}
	req, err := retryablehttp.NewRequestWithContext(rctx, r.method, u, raw)
	if err != nil {
		return nil, fmt.Errorf("proxmox: %s %s: building request: %w", r.method, displayPath(r.path), err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	cr.apply(req.Header, r.method != http.MethodGet)

	start := time.Now()
	resp, err := c.rc.Do(req)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		c.attemptEnded(p, false, nil)
		te := &transportError{method: r.method, path: displayPath(r.path), err: err, unsent: c.traced && !p.gotConn.Load(), ctxDone: ctx.Err() != nil}
		c.log.LogAttrs(ctx, slog.LevelDebug, "proxmox: request failed",
			slog.String("method", r.method), slog.String("path", r.path),
			slog.Int("attempts", int(p.attempts.Load())), slog.String("error", c.redact(err.Error())))
		return nil, te
	}
	buf, err := c.readBody(resp, maxResponse)
	c.attemptEnded(p, true, err)
	if err != nil {
		return nil, &transportError{method: r.method, path: displayPath(r.path), err: fmt.Errorf("reading response: %w", err), ctxDone: ctx.Err() != nil}
	}
	if c.log.Enabled(ctx, slog.LevelDebug) {
		c.log.LogAttrs(ctx, slog.LevelDebug, "proxmox: request",
			slog.String("method", r.method), slog.String("path", r.path),
			slog.Int("status", resp.StatusCode), slog.Int("attempts", int(p.attempts.Load())),
			slog.Duration("duration", time.Since(start)))
	}
	return &rawResponse{status: resp.StatusCode, statusLine: resp.Status, body: buf}, nil
}

// beforeAttempt runs before every attempt of a request (retryablehttp's
// RequestLogHook).
func (c *Client) beforeAttempt(_ retryablehttp.Logger, req *http.Request, retry int) {
	p, _ := req.Context().Value(policyKey{}).(*policy)
	if p == nil {
		return
	}
	p.gotConn.Store(false)
	p.attempts.Store(int32(retry + 1))
	c.attemptBegins(p, retry)
	if retry > 0 {
		c.log.LogAttrs(req.Context(), slog.LevelInfo, "proxmox: retrying request",
			slog.String("method", req.Method), slog.String("path", strings.TrimPrefix(req.URL.EscapedPath(), "/api2/json")),
			slog.Int("retry", retry))
	}
}

// checkRetry is the retry rule. A request is sent again only when that
// cannot do anything Proxmox has not already refused to do:
//   - a GET (or the login POST) after a network error or a 429, 502, 503,
//     504, 595..599 answer;
//   - any request whose attempt never obtained a connection (dial, DNS and
//     TLS handshake failures; certificate failures are final);
//   - any request answered 429, 595 (the node could not connect to the node
//     it proxies to) or 596 (TLS to that node failed), or 500 "can't lock
//     file ... got timeout" for the guest's config lock, which Proxmox
//     takes before it does anything else: in all of these Proxmox provably
//     did nothing. (Other lock files, a storage's say, are taken midway;
//     only a GET is resent after their timeout.)
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	p, _ := ctx.Value(policyKey{}).(*policy)
	if p == nil {
		return false, nil
	}
	if err != nil {
		if isTLSVerifyErr(err) {
			return false, nil
		}
		return p.idempotent || (p.traced && !p.gotConn.Load()), nil
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, 595, 596:
		return true, nil
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, 597, 598, 599:
		return p.idempotent, nil
	case http.StatusInternalServerError:
		return reGuestLockTimeout.MatchString(resp.Status) || (p.idempotent && reLockTimeout.MatchString(resp.Status)), nil
	}
	return false, nil
}

// retryWait is exponential from min, capped at max, with jitter in [d/2, d];
// a Retry-After of a number of seconds is honoured up to max.
func retryWait(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if s := resp.Header.Get("Retry-After"); s != "" {
			if n, err := strconv.Atoi(s); err == nil && n >= 0 {
				return min(time.Duration(n)*time.Second, maxWait)
			}
		}
	}
	return backoff.Delay(attempt+1, minWait, maxWait) // attempt counts from 0
}

// TaskUser returns the user id Proxmox writes into the UPIDs of the tasks
// this client starts, the User of [UPIDInfo]: for an API token the full
// token id, "user@realm!tokenname"; for password authentication the user,
// "user@realm"; "" without credentials. Proxmox compares these ids
// exactly, so a plain == against [UPIDInfo.User] tells this client's tasks
// from others'.
//
// With [WithPassword] the login decides the spelling: for a realm whose
// case-sensitive setting is off (LDAP, Active Directory), Proxmox replaces
// the name as typed with its spelling in the user list, so TaskUser
// returns the configured name until the first login and the name Proxmox
// answered from then on. Token ids are never re-spelled.
//
// Compare against the UPID's user, not [TaskStatus.User] or
// [TaskInfo.User]: for a token's task Proxmox reports those as the
// token's user, with the token name apart in TokenID. Tasks Proxmox starts
// on its own behalf, such as the HA manager's start and stop of an
// HA-managed guest, run as "root@pam", not as TaskUser.
func (c *Client) TaskUser() string {
	if c.auth == nil {
		return ""
	}
	return c.auth.taskUser()
}
