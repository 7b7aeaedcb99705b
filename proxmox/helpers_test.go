package proxmox

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Secrets used by every test. The suite checks that none of them, nor any
// ticket or CSRF token a test server issues (they all carry the markers
// below), ever appears in an error or a log line.
const (
	testTokenID  = "guestward@pve!ci"
	testSecret   = "5e8d1c2a-0b7f-4c1e-9d7b-2f11a0c3e9aa"
	testPassword = "hunter2-correct-horse"
	ticketMarker = "TICKETSECRET"
	csrfMarker   = "CSRFSECRET"
)

var secretsUnderTest = []string{testSecret, testPassword, ticketMarker, csrfMarker}

// leakSink collects every error text and log line the tests produce, so
// TestMain can scan the whole suite's output for secrets at the end.
var leakSink struct {
	sync.Mutex
	texts int
	buf   bytes.Buffer
}

func recordText(s string) {
	leakSink.Lock()
	leakSink.texts++
	leakSink.buf.WriteString(s)
	leakSink.buf.WriteByte('\n')
	leakSink.Unlock()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		leakSink.Lock()
		out, n := leakSink.buf.String(), leakSink.texts
		leakSink.Unlock()
		// Only judge a full run: a -run filter may select tests that
		// produce nothing.
		if n > 0 {
			for _, s := range secretsUnderTest {
				if strings.Contains(out, s) {
					fmt.Fprintf(os.Stderr, "FAIL: secret %q appeared in an error or log line during the suite\n", s)
					code = 1
				}
			}
		}
	}
	os.Exit(code)
}

// assertNoSecret fails t if text contains a secret, and records it for the
// suite-wide scan.
func assertNoSecret(t testing.TB, what, text string) {
	t.Helper()
	recordText(text)
	for _, s := range secretsUnderTest {
		if strings.Contains(text, s) {
			t.Errorf("%s leaks secret %q: %s", what, s, text)
		}
	}
}

// checkErr scans every printed form of err for secrets and returns err.
func checkErr(t testing.TB, err error) error {
	t.Helper()
	if err == nil {
		return nil
	}
	assertNoSecret(t, "error", err.Error())
	assertNoSecret(t, "error %+v", fmt.Sprintf("%+v", err))
	assertNoSecret(t, "error %#v", fmt.Sprintf("%#v", err))
	return err
}

// wantErr asserts err matches every target and scans it for secrets.
func wantErr(t testing.TB, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want %v", targets)
	}
	checkErr(t, err)
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Errorf("error %q does not match %v", err, target)
		}
	}
}

// logBuffer is a slog handler target that is scanned for secrets at the
// end of the test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// testLogger returns a Debug-level logger whose output is scanned for
// secrets when t ends.
func testLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	t.Cleanup(func() {
		for _, line := range strings.Split(lb.String(), "\n") {
			if line != "" {
				assertNoSecret(t, "log line", line)
			}
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// recorded is one request as the test server saw it.
type recorded struct {
	Method        string
	Path          string
	RawPath       string
	RawQuery      string
	Header        http.Header
	Body          string
	ContentLength int64
	Chunked       bool
}

// srv is a TLS test server with per-test routes. Routes are keyed
// "METHOD /path" (path relative to /api2/json); an unknown route gets
// Proxmox's 501.
type srv struct {
	ts     *httptest.Server
	mu     sync.Mutex
	reqs   []recorded
	routes map[string]http.HandlerFunc
}

func newSrv(t testing.TB) *srv {
	s := &srv{routes: map[string]http.HandlerFunc{}}
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	// Refused certificates and dropped connections are what some tests
	// are about; keep the server's complaints out of the test output.
	s.ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.ts.StartTLS()
	t.Cleanup(s.ts.Close)
	return s
}

func (s *srv) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := recorded{
		Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: string(body), ContentLength: r.ContentLength,
		Chunked: len(r.TransferEncoding) > 0,
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, rec)
	h := s.routes[r.Method+" "+strings.TrimPrefix(r.URL.Path, "/api2/json")]
	s.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if h == nil {
		rawReply(w, 501, fmt.Sprintf("Method '%s %s' not implemented", r.Method, r.URL.Path), `{"data":null}`)
		return
	}
	h(w, r)
}

func (s *srv) handle(route string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes[route] = h
}

func (s *srv) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.reqs...)
}

func (s *srv) count(route string) int {
	n := 0
	for _, r := range s.requests() {
		if r.Method+" "+strings.TrimPrefix(r.Path, "/api2/json") == route {
			n++
		}
	}
	return n
}

// client returns a client for s with fast retries and polling, logging to
// a scanned buffer, and no credentials unless opts add them.
func (s *srv) client(t testing.TB, opts ...Option) *Client {
	t.Helper()
	lg, _ := testLogger(t)
	base := []Option{
		WithHTTPClient(s.ts.Client()),
		WithLogger(lg),
		WithRetry(3, time.Millisecond, 2*time.Millisecond),
		WithTaskPolling(time.Millisecond, 2*time.Millisecond),
	}
	c, err := New(s.ts.URL, append(base, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", checkErr(t, err))
	}
	return c
}

func (s *srv) tokenClient(t testing.TB, opts ...Option) *Client {
	t.Helper()
	return s.client(t, append([]Option{WithAPIToken(testTokenID, testSecret)}, opts...)...)
}

// reply writes {"data": v} with status 200.
func reply(w http.ResponseWriter, v any) {
	b, err := json.Marshal(map[string]any{"data": v})
	if err != nil {
		panic(err)
	}
	replyRaw(w, string(b))
}

// replyRaw writes body verbatim with status 200.
func replyRaw(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Server", "pve-api-daemon/3.0")
	_, _ = io.WriteString(w, body)
}

// rawReply writes a response with Proxmox's own reason phrase, which
// net/http's ResponseWriter cannot do, and closes the connection as
// Proxmox does after any status >= 400.
func rawReply(w http.ResponseWriter, status int, reason, body string) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	writeRawResponse(buf.Writer, status, reason, body)
	_ = buf.Flush()
}

func writeRawResponse(w *bufio.Writer, status int, reason, body string) {
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\n", status, reason)
	fmt.Fprintf(w, "Connection: close\r\nContent-Type: application/json;charset=UTF-8\r\nServer: pve-api-daemon/3.0\r\n")
	fmt.Fprintf(w, "Content-Length: %d\r\n\r\n%s", len(body), body)
}

// hangUp closes the connection without an answer.
func hangUp(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

var (
	testRef    = Ref{Node: "pve1", Type: QEMU, VMID: 100}
	testLXCRef = Ref{Node: "pve1", Type: LXC, VMID: 200}
	testUPID   = UPID("UPID:pve1:00007323:001036A5:6419CAF8:qmstart:100:guestward@pve!ci:")
)
