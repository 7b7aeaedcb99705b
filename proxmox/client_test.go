package proxmox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		url  string
		opts []Option
	}{
		{"http scheme", "http://pve:8006", nil},
		{"no scheme", "pve:8006", nil},
		{"no host", "https:///api2/json", nil},
		{"user info", "https://root:" + testPassword + "@pve:8006", nil},
		{"query", "https://pve:8006/?x=1", nil},
		{"fragment", "https://pve:8006/#x", nil},
		{"extjs format", "https://pve:8006/api2/extjs", nil},
		{"unparsable", "https://pve:8006/%zz" + testPassword, nil},
		{"nil option", "https://pve:8006", []Option{nil}},
		{"bad token id", "https://pve:8006", []Option{WithAPIToken("root", testSecret)}},
		{"token id without name", "https://pve:8006", []Option{WithAPIToken("root@pam", testSecret)}},
		{"empty secret", "https://pve:8006", []Option{WithAPIToken(testTokenID, "")}},
		{"secret with newline", "https://pve:8006", []Option{WithAPIToken(testTokenID, testSecret+"\n")}},
		{"two auths", "https://pve:8006", []Option{WithAPIToken(testTokenID, testSecret), WithPassword("root@pam", testPassword)}},
		{"bad user", "https://pve:8006", []Option{WithPassword("root", testPassword)}},
		{"empty password", "https://pve:8006", []Option{WithPassword("root@pam", "")}},
		{"bad fingerprint", "https://pve:8006", []Option{WithFingerprint("AB:CD")}},
		{"nil pool", "https://pve:8006", []Option{WithCAPool(nil)}},
		{"nil http client", "https://pve:8006", []Option{WithHTTPClient(nil)}},
		{"http client and pin", "https://pve:8006", []Option{WithHTTPClient(&http.Client{}), WithFingerprint(strings.Repeat("ab", 32))}},
		{"http client and timeout", "https://pve:8006", []Option{WithHTTPClient(&http.Client{}), WithTimeout(time.Second)}},
		{"zero timeout", "https://pve:8006", []Option{WithTimeout(0)}},
		{"negative retries", "https://pve:8006", []Option{WithRetry(-1, 0, 0)}},
		{"retry max < min", "https://pve:8006", []Option{WithRetry(1, time.Second, time.Millisecond)}},
		{"poll zero", "https://pve:8006", []Option{WithTaskPolling(0, time.Second)}},
		{"negative grace", "https://pve:8006", []Option{WithTaskNotFoundGrace(-time.Second)}},
		{"user agent newline", "https://pve:8006", []Option{WithUserAgent("x\ny")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.url, tt.opts...)
			if c != nil || !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("New = %v, %v; want ErrInvalidOption", c, err)
			}
			checkErr(t, err)
		})
	}
}

func TestNewBaseURL(t *testing.T) {
	tests := map[string]string{
		"https://pve:8006":                    "https://pve:8006/api2/json",
		"https://pve:8006/":                   "https://pve:8006/api2/json",
		"https://pve:8006/api2/json":          "https://pve:8006/api2/json",
		"https://pve:8006/api2/json/":         "https://pve:8006/api2/json",
		"https://proxy.example/pve":           "https://proxy.example/pve/api2/json",
		"https://[::1]:8006":                  "https://[::1]:8006/api2/json",
		"https://proxy.example/pve/api2/json": "https://proxy.example/pve/api2/json",
	}
	for in, want := range tests {
		c, err := New(in)
		if err != nil {
			t.Fatalf("New(%q): %v", in, err)
		}
		if c.base != want {
			t.Errorf("New(%q).base = %q, want %q", in, c.base, want)
		}
	}
}

// TestPrintedFormsHideSecrets prints clients and options every way a
// program might and checks no secret shows.
func TestPrintedFormsHideSecrets(t *testing.T) {
	opts := []Option{WithAPIToken(testTokenID, testSecret), WithPassword("root@pam", testPassword)}
	for _, o := range opts {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
			assertNoSecret(t, "option "+verb, fmt.Sprintf(verb, o))
		}
		assertNoSecret(t, "option slice", fmt.Sprintf("%+v %#v", opts, opts))
	}
	if got := fmt.Sprint(opts[0]); got != `proxmox.WithAPIToken("guestward@pve!ci", "[redacted]")` {
		t.Errorf("option prints as %s", got)
	}
	tc, err := New("https://pve:8006", WithAPIToken(testTokenID, testSecret))
	if err != nil {
		t.Fatal(err)
	}
	s := newSrv(t)
	pc := s.client(t, WithPassword("root@pam", testPassword))
	for _, c := range []*Client{tc, pc} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			assertNoSecret(t, "client "+verb, fmt.Sprintf(verb, c))
		}
		// A copy of the struct, printed by reflection: fmt cannot call
		// methods on unexported fields, so the secret must not be
		// reachable from them by value.
		v := reflect.ValueOf(c).Elem().Interface()
		assertNoSecret(t, "client struct", fmt.Sprintf("%+v %#v", v, v))
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "client", c, "opts", opts)
		slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "client", c, "opts", opts)
		assertNoSecret(t, "slog", buf.String())
	}
	if !strings.Contains(tc.String(), testTokenID) || !strings.Contains(tc.String(), "https://pve:8006/api2/json") {
		t.Errorf("String() should name endpoint and token id: %s", tc)
	}
}

func TestRequestEncoding(t *testing.T) {
	s := newSrv(t)
	s.handle("POST /nodes/pve1/qemu/100/config", func(w http.ResponseWriter, r *http.Request) { reply(w, string(testUPID)) })
	s.handle("PUT /nodes/pve1/lxc/200/config", func(w http.ResponseWriter, r *http.Request) { reply(w, nil) })
	s.handle("POST /nodes/pve1/qemu/100/status/start", func(w http.ResponseWriter, r *http.Request) { reply(w, string(testUPID)) })
	s.handle("POST /nodes/pve1/lxc/200/status/shutdown", func(w http.ResponseWriter, r *http.Request) {
		reply(w, "UPID:pve1:00007324:001036A6:6419CAF8:vzshutdown:200:guestward@pve!ci:")
	})
	s.handle("GET /nodes/pve1/qemu/100/config", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"cores": 2, "digest": strings.Repeat("a", 40)})
	})
	c := s.tokenClient(t, WithUserAgent("test-agent/1"))
	ctx := context.Background()
	digest := "aa9ce37c4df320889d4ab5382a2947efa4c1d815"

	upid, err := c.SetConfig(ctx, testRef, ConfigChange{
		Set:    map[string]string{"tags": "a;b", "description": "line 1\nline 2 & more", "onboot": "1", "name": "web 1+2"},
		Delete: []string{"net1", "ide2", "net1"},
		Digest: digest,
	})
	if err != nil || upid != testUPID {
		t.Fatalf("SetConfig qemu = %q, %v", upid, checkErr(t, err))
	}
	upid, err = c.SetConfig(ctx, testLXCRef, ConfigChange{Set: map[string]string{"cores": "2"}})
	if err != nil || upid != "" {
		t.Fatalf("SetConfig lxc = %q, %v; want synchronous", upid, checkErr(t, err))
	}
	if _, err := c.Start(ctx, testRef); err != nil {
		t.Fatal(checkErr(t, err))
	}
	if _, err := c.Shutdown(ctx, testLXCRef, 89500*time.Millisecond); err != nil {
		t.Fatal(checkErr(t, err))
	}
	if _, err := c.CurrentConfig(ctx, testRef); err != nil {
		t.Fatal(checkErr(t, err))
	}

	reqs := s.requests()
	if len(reqs) != 5 {
		t.Fatalf("got %d requests, want 5", len(reqs))
	}
	for _, r := range reqs {
		if got := r.Header.Get("Authorization"); got != "PVEAPIToken="+testTokenID+"="+testSecret {
			t.Errorf("%s %s: Authorization header wrong", r.Method, r.Path)
		}
		if r.Header.Get("CSRFPreventionToken") != "" || r.Header.Get("Cookie") != "" {
			t.Errorf("%s %s: token requests carry no ticket or CSRF token", r.Method, r.Path)
		}
		if r.Header.Get("User-Agent") != "test-agent/1" {
			t.Errorf("User-Agent = %q", r.Header.Get("User-Agent"))
		}
		if r.Chunked {
			t.Errorf("%s %s: chunked body; Proxmox refuses those", r.Method, r.Path)
		}
		if int(r.ContentLength) != len(r.Body) {
			t.Errorf("%s %s: Content-Length %d for a %d-byte body", r.Method, r.Path, r.ContentLength, len(r.Body))
		}
	}
	qemu := reqs[0]
	wantBody := "delete=net1%2Cide2&description=line+1%0Aline+2+%26+more&digest=" + digest + "&name=web+1%2B2&onboot=1&tags=a%3Bb"
	if qemu.Method != "POST" || qemu.Body != wantBody {
		t.Errorf("qemu SetConfig: %s body\n%s\nwant\n%s", qemu.Method, qemu.Body, wantBody)
	}
	if qemu.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type = %q", qemu.Header.Get("Content-Type"))
	}
	if strings.Contains(qemu.Body, ";") {
		t.Error("';' must be escaped: Proxmox splits form fields on it")
	}
	form, _ := url.ParseQuery(qemu.Body)
	if form.Get("tags") != "a;b" || form.Get("description") != "line 1\nline 2 & more" || form.Get("delete") != "net1,ide2" {
		t.Errorf("body decodes to %v", form)
	}
	if lxc := reqs[1]; lxc.Method != "PUT" || lxc.Body != "cores=2" {
		t.Errorf("lxc SetConfig: %s %q", lxc.Method, lxc.Body)
	}
	if start := reqs[2]; start.Body != "" || start.ContentLength != 0 {
		t.Errorf("start: body %q length %d", start.Body, start.ContentLength)
	}
	if sd := reqs[3]; sd.Body != "timeout=90" {
		t.Errorf("shutdown body %q, want timeout rounded up to 90", sd.Body)
	}
	if get := reqs[4]; get.Method != "GET" || get.RawQuery != "current=1" || get.Body != "" || get.Header.Get("Content-Type") != "" {
		t.Errorf("current config: %s ?%s body %q", get.Method, get.RawQuery, get.Body)
	}
}

func TestBadInputSendsNothing(t *testing.T) {
	s := newSrv(t)
	c := s.tokenClient(t)
	ctx := context.Background()
	bad := Ref{Node: "pve1", Type: QEMU, VMID: 42}
	check := func(name string, err error, target error) {
		t.Helper()
		if !errors.Is(err, target) {
			t.Errorf("%s: %v, want %v", name, err, target)
		}
		checkErr(t, err)
	}
	_, err := c.Config(ctx, bad)
	check("Config", err, ErrInvalidRef)
	_, err = c.CurrentConfig(ctx, bad)
	check("CurrentConfig", err, ErrInvalidRef)
	_, err = c.Pending(ctx, Ref{Node: "bad_node", Type: QEMU, VMID: 100})
	check("Pending", err, ErrInvalidRef)
	_, err = c.Status(ctx, Ref{Node: "pve1", Type: "vm", VMID: 100})
	check("Status", err, ErrInvalidRef)
	_, err = c.SetConfig(ctx, bad, ConfigChange{Set: map[string]string{"cores": "2"}})
	check("SetConfig ref", err, ErrInvalidRef)
	_, err = c.SetConfig(ctx, testRef, ConfigChange{Set: map[string]string{"name": "a\nb"}})
	check("SetConfig newline", err, ErrInvalidConfig)
	_, err = c.SetConfig(ctx, testRef, ConfigChange{Set: map[string]string{"description": strings.Repeat("ü", MaxDescription+1)}})
	check("SetConfig long description", err, ErrInvalidConfig)
	_, err = c.Start(ctx, bad)
	check("Start", err, ErrInvalidRef)
	_, err = c.Stop(ctx, Ref{})
	check("Stop", err, ErrInvalidRef)
	_, err = c.Shutdown(ctx, testRef, -time.Second)
	check("Shutdown", err, ErrInvalidArgument)
	_, err = c.Reboot(ctx, Ref{Node: "pve1", Type: LXC, VMID: 1000000000})
	check("Reboot", err, ErrInvalidRef)
	_, err = c.TaskStatus(ctx, "UPID:bad")
	check("TaskStatus", err, ErrInvalidUPID)
	_, err = c.WaitTask(ctx, "")
	check("WaitTask", err, ErrInvalidUPID)
	_, err = c.Tasks(ctx, "pve 1", TaskFilter{})
	check("Tasks node", err, ErrInvalidArgument)
	_, err = c.Tasks(ctx, "pve1", TaskFilter{VMID: 5})
	check("Tasks vmid", err, ErrInvalidArgument)
	_, err = c.Tasks(ctx, "pve1", TaskFilter{Type: "qm:start"})
	check("Tasks type", err, ErrInvalidArgument)
	_, err = c.Tasks(ctx, "pve1", TaskFilter{Since: time.Unix(100, 0), Until: time.Unix(50, 0)})
	check("Tasks range", err, ErrInvalidArgument)
	_, err = c.Tasks(ctx, "pve1", TaskFilter{Limit: -1})
	check("Tasks limit", err, ErrInvalidArgument)
	if n := len(s.requests()); n != 0 {
		t.Fatalf("bad input sent %d requests", n)
	}
}

func TestConfigChangeValidate(t *testing.T) {
	long := strings.Repeat("x", MaxDescription)
	tests := []struct {
		name string
		ch   ConfigChange
		ok   bool
	}{
		{"set", ConfigChange{Set: map[string]string{"cores": "2"}}, true},
		{"delete", ConfigChange{Delete: []string{"net1"}}, true},
		{"empty", ConfigChange{}, false},
		{"digest only", ConfigChange{Digest: strings.Repeat("a", 40)}, false},
		{"key with dash", ConfigChange{Set: map[string]string{"nets-host-mtu": "1"}}, true},
		{"upper-case key (pve-configid is case-insensitive)", ConfigChange{Set: map[string]string{"Cores": "2"}}, true},
		{"one-letter key", ConfigChange{Set: map[string]string{"a": "1"}}, false},
		{"key with dot", ConfigChange{Set: map[string]string{"lxc.apparmor": "x"}}, false},
		{"key digit first", ConfigChange{Set: map[string]string{"0net": "x"}}, false},
		{"empty key", ConfigChange{Set: map[string]string{"": "x"}}, false},
		{"control digest", ConfigChange{Set: map[string]string{"digest": strings.Repeat("a", 40)}}, false},
		{"control delete", ConfigChange{Set: map[string]string{"delete": "net1"}}, false},
		{"control skiplock", ConfigChange{Set: map[string]string{"skiplock": "1"}}, false},
		{"control vmid", ConfigChange{Set: map[string]string{"vmid": "100"}}, false},
		{"bad delete key", ConfigChange{Delete: []string{"net 1"}}, false},
		{"set and delete", ConfigChange{Set: map[string]string{"net1": "x"}, Delete: []string{"net1"}}, false},
		{"newline in name", ConfigChange{Set: map[string]string{"name": "a\nb"}}, false},
		{"CR in net0", ConfigChange{Set: map[string]string{"net0": "virtio\r"}}, false},
		{"newline in description", ConfigChange{Set: map[string]string{"description": "a\r\nb"}}, true},
		{"description at limit", ConfigChange{Set: map[string]string{"description": long}}, true},
		{"description over limit", ConfigChange{Set: map[string]string{"description": long + "x"}}, false},
		{"description counts characters not bytes", ConfigChange{Set: map[string]string{"description": strings.Repeat("é", MaxDescription)}}, true},
		{"NUL", ConfigChange{Set: map[string]string{"name": "a\x00b"}}, false},
		{"invalid UTF-8", ConfigChange{Set: map[string]string{"name": "a\xffb"}}, false},
		{"digest", ConfigChange{Set: map[string]string{"cores": "2"}, Digest: "AA9CE37C4DF320889D4AB5382A2947EFA4C1D815"}, true},
		{"short digest", ConfigChange{Set: map[string]string{"cores": "2"}, Digest: "abc"}, false},
		{"sha256 digest", ConfigChange{Set: map[string]string{"cores": "2"}, Digest: strings.Repeat("a", 64)}, false},
		{"body over 64 KiB", ConfigChange{Set: map[string]string{"args": strings.Repeat("%", 30000)}}, false},
		{"empty value is a value", ConfigChange{Set: map[string]string{"tags": ""}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.ch.Validate()
			if tt.ok && err != nil {
				t.Fatalf("Validate = %v, want nil", err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestReadRetries(t *testing.T) {
	tests := []struct {
		name     string
		failures []func(http.ResponseWriter)
		requests int
		wantErr  []error
	}{
		{"503 then ok", []func(http.ResponseWriter){
			func(w http.ResponseWriter) { rawReply(w, 503, "Service Unavailable", "") },
			func(w http.ResponseWriter) { rawReply(w, 503, "Service Unavailable", "") },
		}, 3, nil},
		{"595 proxy failure", []func(http.ResponseWriter){
			func(w http.ResponseWriter) { rawReply(w, 595, "Network is unreachable", "") },
		}, 2, nil},
		{"dropped connection", []func(http.ResponseWriter){hangUp}, 2, nil},
		{"exhausted", []func(http.ResponseWriter){
			func(w http.ResponseWriter) { rawReply(w, 599, "Too many redirections", "") },
			func(w http.ResponseWriter) { rawReply(w, 599, "Too many redirections", "") },
			func(w http.ResponseWriter) { rawReply(w, 599, "Too many redirections", "") },
			func(w http.ResponseWriter) { rawReply(w, 599, "Too many redirections", "") },
		}, 4, []error{ErrTransient}},
		{"500 is final", []func(http.ResponseWriter){
			func(w http.ResponseWriter) {
				rawReply(w, 500, "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist", `{"data":null}`)
			},
		}, 1, []error{ErrNotFound}},
		{"401 is final for tokens", []func(http.ResponseWriter){
			func(w http.ResponseWriter) { rawReply(w, 401, "invalid token value!", "") },
		}, 1, []error{ErrUnauthorized}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSrv(t)
			var n atomic.Int32
			s.handle("GET /nodes/pve1/qemu/100/config", func(w http.ResponseWriter, r *http.Request) {
				i := int(n.Add(1)) - 1
				if i < len(tt.failures) {
					tt.failures[i](w)
					return
				}
				reply(w, map[string]any{"cores": 1, "digest": strings.Repeat("b", 40)})
			})
			cfg, err := s.tokenClient(t).Config(context.Background(), testRef)
			if got := s.count("GET /nodes/pve1/qemu/100/config"); got != tt.requests {
				t.Errorf("server saw %d requests, want %d", got, tt.requests)
			}
			if tt.wantErr == nil {
				if err != nil || cfg.Values["cores"] != "1" {
					t.Fatalf("Config = %+v, %v", cfg, checkErr(t, err))
				}
				return
			}
			wantErr(t, err, tt.wantErr...)
		})
	}
}

func TestWriteRetryRule(t *testing.T) {
	tests := []struct {
		name     string
		first    func(http.ResponseWriter)
		requests int
		wantErr  []error
		notErr   []error
	}{
		{"dropped after send: never resent", hangUp, 1, []error{ErrOutcomeUnknown, ErrTransient}, nil},
		{"503 from a proxy: outcome unknown", func(w http.ResponseWriter) { rawReply(w, 503, "Service Unavailable", "") }, 1,
			[]error{ErrOutcomeUnknown, ErrTransient}, nil},
		{"597: request was sent", func(w http.ResponseWriter) { rawReply(w, 597, "Connection reset", "") }, 1,
			[]error{ErrOutcomeUnknown}, nil},
		{"595: target node unreachable, resent", func(w http.ResponseWriter) { rawReply(w, 595, "Connection refused", "") }, 2, nil, nil},
		{"596: TLS to target failed, resent", func(w http.ResponseWriter) { rawReply(w, 596, "TLS failed", "") }, 2, nil, nil},
		{"429: resent", func(w http.ResponseWriter) { rawReply(w, 429, "Too Many Requests", "") }, 2, nil, nil},
		{"config lock timeout: nothing done, resent", func(w http.ResponseWriter) {
			rawReply(w, 500, "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout", `{"data":null}`)
		}, 2, nil, nil},
		{"storage lock timeout: taken midway, not resent", func(w http.ResponseWriter) {
			rawReply(w, 500, "can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout", `{"data":null}`)
		}, 1, []error{ErrTransient}, []error{ErrLocked}},
		{"locked guest: final", func(w http.ResponseWriter) { rawReply(w, 500, "VM is locked (backup)", `{"data":null}`) }, 1,
			[]error{ErrLocked}, []error{ErrTransient, ErrOutcomeUnknown}},
		{"digest mismatch: final", func(w http.ResponseWriter) {
			rawReply(w, 500, "checksum mismatch (file change by other user?)", `{"data":null,"message":"checksum mismatch (file change by other user?)\n"}`)
		}, 1, []error{ErrDigestMismatch}, []error{ErrTransient}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSrv(t)
			var n atomic.Int32
			s.handle("POST /nodes/pve1/qemu/100/config", func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 {
					tt.first(w)
					return
				}
				reply(w, string(testUPID))
			})
			upid, err := s.tokenClient(t).SetConfig(context.Background(), testRef, ConfigChange{Set: map[string]string{"cores": "4"}})
			if got := s.count("POST /nodes/pve1/qemu/100/config"); got != tt.requests {
				t.Errorf("server saw %d requests, want %d", got, tt.requests)
			}
			if tt.wantErr == nil {
				if err != nil || upid != testUPID {
					t.Fatalf("SetConfig = %q, %v", upid, checkErr(t, err))
				}
				return
			}
			wantErr(t, err, tt.wantErr...)
			for _, not := range tt.notErr {
				if errors.Is(err, not) {
					t.Errorf("error %v should not match %v", err, not)
				}
			}
		})
	}
}

// countingDialer fails every dial and counts them.
type countingDialer struct{ n atomic.Int32 }

func (d *countingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
}

// TestUnsentWritesAreRetried: a write whose attempts never got a
// connection cannot have reached Proxmox, so it is retried and reported as
// not sent.
func TestUnsentWritesAreRetried(t *testing.T) {
	d := &countingDialer{}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.dial}}
	lg, _ := testLogger(t)
	c, err := New("https://pve.invalid:8006", WithHTTPClient(hc), WithAPIToken(testTokenID, testSecret), WithLogger(lg),
		WithRetry(2, time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Start(context.Background(), testRef)
	wantErr(t, err, ErrTransient)
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("an unsent write is not of unknown outcome: %v", err)
	}
	if !strings.Contains(err.Error(), "not sent") {
		t.Errorf("error should say the request was not sent: %v", err)
	}
	if got := d.n.Load(); got != 3 {
		t.Errorf("dialed %d times, want 3 (1 + 2 retries)", got)
	}
}

// failingRoundTripper fails every request without saying how far it got.
type failingRoundTripper struct{ n atomic.Int32 }

func (f *failingRoundTripper) RoundTrip(*http.Request) (*http.Response, error) {
	f.n.Add(1)
	return nil, errors.New("connection reset by peer")
}

// TestForeignTransportWritesNotRetried: with a transport that does not
// report its connections, a failed write cannot be proven unsent.
func TestForeignTransportWritesNotRetried(t *testing.T) {
	rt := &failingRoundTripper{}
	lg, _ := testLogger(t)
	c, err := New("https://pve.invalid:8006", WithHTTPClient(&http.Client{Transport: rt}), WithOpaqueTransport(), WithAPIToken(testTokenID, testSecret),
		WithLogger(lg), WithRetry(2, time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Start(context.Background(), testRef)
	wantErr(t, err, ErrOutcomeUnknown, ErrTransient)
	if got := rt.n.Load(); got != 1 {
		t.Errorf("write sent %d times, want 1", got)
	}
	_, err = c.Version(context.Background())
	wantErr(t, err, ErrTransient)
	if got := rt.n.Load(); got != 4 {
		t.Errorf("read attempts = %d, want 3 (1 + 2 retries)", got-1)
	}
}

func TestNullData(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /nodes/pve1/qemu/100/config", func(w http.ResponseWriter, r *http.Request) { replyRaw(w, `{"data":null}`) })
	s.handle("GET /cluster/resources", func(w http.ResponseWriter, r *http.Request) { replyRaw(w, `{"data":null}`) })
	s.handle("PUT /nodes/pve1/lxc/200/config", func(w http.ResponseWriter, r *http.Request) { replyRaw(w, `{"data":null}`) })
	s.handle("POST /nodes/pve1/qemu/100/status/start", func(w http.ResponseWriter, r *http.Request) { replyRaw(w, `{"data":null}`) })
	c := s.tokenClient(t)
	ctx := context.Background()
	_, err := c.Config(ctx, testRef)
	wantErr(t, err, ErrUnexpectedResponse)
	_, err = c.Guests(ctx)
	wantErr(t, err, ErrUnexpectedResponse)
	_, err = c.Start(ctx, testRef)
	wantErr(t, err, ErrUnexpectedResponse)
	upid, err := c.SetConfig(ctx, testLXCRef, ConfigChange{Set: map[string]string{"cores": "1"}})
	if err != nil || upid != "" {
		t.Fatalf("null is LXC's synchronous answer: %q, %v", upid, err)
	}
}

func TestTLSVerification(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /version", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"version": "8.1.4", "release": "8.1", "repoid": "ec5affc9e41f1d79"})
	})
	cert := s.ts.Certificate()
	sum := sha256.Sum256(cert.Raw)
	colon := strings.ToUpper(hex.EncodeToString(sum[:]))
	var parts []string
	for i := 0; i < len(colon); i += 2 {
		parts = append(parts, colon[i:i+2])
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	other := sha256.Sum256([]byte("another certificate"))
	ctx := context.Background()
	lg, _ := testLogger(t)
	base := []Option{WithAPIToken(testTokenID, testSecret), WithLogger(lg), WithRetry(2, time.Millisecond, time.Millisecond)}

	tests := []struct {
		name    string
		opts    []Option
		ok      bool
		pinFail bool // the error must wrap ErrFingerprintMismatch
	}{
		{"system roots refuse a self-signed certificate", nil, false, false},
		{"pin, colon form", []Option{WithFingerprint(strings.Join(parts, ":"))}, true, false},
		{"pin, plain lower-case hex", []Option{WithFingerprint(hex.EncodeToString(sum[:]))}, true, false},
		{"one of several pins", []Option{WithFingerprint(hex.EncodeToString(other[:])), WithFingerprint(hex.EncodeToString(sum[:]))}, true, false},
		{"wrong pin", []Option{WithFingerprint(hex.EncodeToString(other[:]))}, false, true},
		{"CA pool", []Option{WithCAPool(pool)}, true, false},
		{"pin and CA pool both hold", []Option{WithCAPool(pool), WithFingerprint(hex.EncodeToString(sum[:]))}, true, false},
		{"pin holds, CA pool does not", []Option{WithCAPool(x509.NewCertPool()), WithFingerprint(hex.EncodeToString(sum[:]))}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.count("GET /version")
			c, err := New(s.ts.URL, append(append([]Option{}, base...), tt.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			v, err := c.Version(ctx)
			if tt.ok {
				if err != nil || v.Version != "8.1.4" {
					t.Fatalf("Version = %+v, %v", v, checkErr(t, err))
				}
				return
			}
			if err == nil {
				t.Fatal("connected despite an untrusted certificate")
			}
			checkErr(t, err)
			if errors.Is(err, ErrTransient) {
				t.Errorf("a refused certificate is not transient: %v", err)
			}
			if got := errors.Is(err, ErrFingerprintMismatch); got != tt.pinFail {
				t.Errorf("errors.Is(err, ErrFingerprintMismatch) = %v, want %v: %v", got, tt.pinFail, err)
			}
			if got := s.count("GET /version") - before; got != 0 {
				t.Errorf("server saw %d requests through an untrusted connection", got)
			}
		})
	}
}

// ticketServer emulates Proxmox's ticket login: tickets, CSRF tokens on
// writes, and invalidation.
type ticketServer struct {
	*srv
	mu         sync.Mutex
	logins     int
	valid      map[string]string // cookie value -> CSRF token
	failLogins bool
	tfa        bool
	loginGate  chan struct{} // if non-nil, logins wait for it
	arrived    chan struct{} // receives one value per login request
}

func newTicketServer(t *testing.T) *ticketServer {
	ts := &ticketServer{srv: newSrv(t), valid: map[string]string{}, arrived: make(chan struct{}, 64)}
	ts.handle("POST /access/ticket", func(w http.ResponseWriter, r *http.Request) {
		ts.arrived <- struct{}{}
		if ts.loginGate != nil {
			<-ts.loginGate
		}
		_ = r.ParseForm()
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if ts.failLogins {
			rawReply(w, 503, "Service Unavailable", "")
			return
		}
		if r.PostForm.Get("username") != "root@pam" || r.PostForm.Get("password") != testPassword {
			rawReply(w, 401, "authentication failure", "")
			return
		}
		ts.logins++
		ticket := fmt.Sprintf("PVE:root@pam:4EEC61E2::%s%d+/=sig", ticketMarker, ts.logins)
		csrf := fmt.Sprintf("4EEC61E2:%s%d", csrfMarker, ts.logins)
		ts.valid[ticket] = csrf
		data := map[string]any{"username": "root@pam", "ticket": ticket, "CSRFPreventionToken": csrf, "cap": map[string]any{}}
		if ts.tfa {
			data["NeedTFA"] = 1
		}
		reply(w, data)
	})
	guard := func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ck, err := r.Cookie("PVEAuthCookie")
			if err != nil {
				rawReply(w, 401, "No ticket", "")
				return
			}
			tk, _ := url.QueryUnescape(ck.Value)
			ts.mu.Lock()
			csrf, ok := ts.valid[tk]
			ts.mu.Unlock()
			if !ok {
				rawReply(w, 401, "permission denied - invalid PVE ticket", "")
				return
			}
			if r.Method != http.MethodGet && r.Header.Get("CSRFPreventionToken") != csrf {
				rawReply(w, 401, "Permission denied - invalid csrf token", "")
				return
			}
			next(w, r)
		}
	}
	ts.handle("GET /version", guard(func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"version": "8.1.4", "release": "8.1", "repoid": "abc"})
	}))
	ts.handle("POST /nodes/pve1/qemu/100/status/start", guard(func(w http.ResponseWriter, r *http.Request) {
		reply(w, string(testUPID))
	}))
	return ts
}

func (ts *ticketServer) revokeAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.valid = map[string]string{}
}

func (ts *ticketServer) loginCount() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.logins
}

// fakeClock is a settable clock for ticket ageing.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func TestTicketAuth(t *testing.T) {
	ts := newTicketServer(t)
	clk := &fakeClock{now: time.Unix(1700000000, 0)}
	c := ts.client(t, WithPassword("root@pam", testPassword), withClock(clk.Now))
	ctx := context.Background()
	mustVersion := func(step string) {
		t.Helper()
		if _, err := c.Version(ctx); err != nil {
			t.Fatalf("%s: %v", step, checkErr(t, err))
		}
	}
	mustStart := func(step string) {
		t.Helper()
		if _, err := c.Start(ctx, testRef); err != nil {
			t.Fatalf("%s: %v", step, checkErr(t, err))
		}
	}

	mustVersion("first call logs in")
	mustStart("write sends the CSRF token")
	if n := ts.loginCount(); n != 1 {
		t.Fatalf("logins = %d, want 1", n)
	}
	clk.Advance(59 * time.Minute)
	mustVersion("ticket still fresh")
	if n := ts.loginCount(); n != 1 {
		t.Fatalf("logins = %d after 59 min, want 1", n)
	}
	clk.Advance(2 * time.Minute)
	mustStart("renewal after an hour")
	if n := ts.loginCount(); n != 2 {
		t.Fatalf("logins = %d after 61 min, want 2 (renewed)", n)
	}

	// Renewal fails while the old ticket is still valid: keep working.
	clk.Advance(61 * time.Minute)
	ts.mu.Lock()
	ts.failLogins = true
	ts.mu.Unlock()
	mustVersion("failed renewal falls back to the current ticket")
	// Past the ticket's usable life a login is required, and fails.
	clk.Advance(50 * time.Minute)
	_, err := c.Version(ctx)
	wantErr(t, err, ErrTransient)
	ts.mu.Lock()
	ts.failLogins = false
	ts.mu.Unlock()
	mustVersion("login works again")

	// The server forgets every ticket (e.g. restored from backup): one 401,
	// then a new login and the request is sent once more, a write too.
	ts.revokeAll()
	before := ts.loginCount()
	mustStart("401 triggers a new login and one resend")
	if n := ts.loginCount(); n != before+1 {
		t.Fatalf("logins = %d, want %d", n, before+1)
	}
	for _, r := range ts.requests() {
		if r.Path == "/api2/json/nodes/pve1/qemu/100/status/start" && r.Header.Get("CSRFPreventionToken") == "" {
			t.Error("a write went out without the CSRF token")
		}
		if r.Path == "/api2/json/version" && r.Header.Get("CSRFPreventionToken") != "" {
			t.Error("a read carried the CSRF token")
		}
		if r.Header.Get("Authorization") != "" {
			t.Error("ticket requests carry no Authorization header")
		}
	}
}

func TestTicketLoginFailures(t *testing.T) {
	ts := newTicketServer(t)
	c := ts.client(t, WithPassword("root@pam", "wrong-"+testPassword))
	_, err := c.Version(context.Background())
	wantErr(t, err, ErrUnauthorized)
	if ts.count("GET /version") != 0 {
		t.Error("request sent without a ticket")
	}

	ts.tfa = true
	c = ts.client(t, WithPassword("root@pam", testPassword))
	_, err = c.Version(context.Background())
	wantErr(t, err, ErrUnauthorized)
	if !strings.Contains(err.Error(), "second factor") {
		t.Errorf("TFA error should say why: %v", err)
	}
}

// TestTicketLoginShared: concurrent first calls share one login.
func TestTicketLoginShared(t *testing.T) {
	ts := newTicketServer(t)
	ts.loginGate = make(chan struct{})
	c := ts.client(t, WithPassword("root@pam", testPassword))
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Version(context.Background())
			errs <- err
		}()
	}
	// Let the (single) login through once it has arrived.
	<-ts.arrived
	close(ts.loginGate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(checkErr(t, err))
		}
	}
	if got := ts.loginCount(); got != 1 {
		t.Fatalf("%d logins for %d concurrent callers, want 1", got, n)
	}
}

// TestTicketWaiterSurvivesLoginCancel: when the caller running the shared
// login gives up, a waiting caller logs in itself.
func TestTicketWaiterSurvivesLoginCancel(t *testing.T) {
	ts := newTicketServer(t)
	gate := make(chan struct{})
	ts.loginGate = gate
	c := ts.client(t, WithPassword("root@pam", testPassword))
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := c.Version(ctx1); first <- err }()
	<-ts.arrived
	second := make(chan error, 1)
	go func() { _, err := c.Version(context.Background()); second <- err }()
	cancel1()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: %v, want context.Canceled", err)
	}
	close(gate)
	if err := <-second; err != nil {
		t.Fatalf("second caller: %v", checkErr(t, err))
	}
}

// TestServerTextIsScrubbed: even a server that echoes a secret into an
// error message does not get it into the client's error.
func TestServerTextIsScrubbed(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /version", func(w http.ResponseWriter, r *http.Request) {
		rawReply(w, 400, "Parameter verification failed.", `{"data":null,"message":"bad `+testSecret+`\n","errors":{"x":"got `+testSecret+`"}}`)
	})
	_, err := s.tokenClient(t).Version(context.Background())
	wantErr(t, err, ErrInvalidParameter)
	var ae *APIError
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, redacted) || !strings.Contains(ae.Errors["x"], redacted) {
		t.Fatalf("expected redacted message and errors: %#v", ae)
	}
}

func TestContextCancellation(t *testing.T) {
	s := newSrv(t)
	release := make(chan struct{})
	arrived := make(chan struct{}, 4)
	slow := func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		reply(w, string(testUPID))
	}
	s.handle("GET /version", slow)
	s.handle("POST /nodes/pve1/qemu/100/status/stop", slow)
	t.Cleanup(func() { close(release) })
	c := s.tokenClient(t)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Version(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("pre-cancelled: %v", err)
	}
	if len(s.requests()) != 0 {
		t.Fatal("request sent with a cancelled context")
	}

	for _, write := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			var err error
			if write {
				_, err = c.Stop(ctx, testRef)
			} else {
				_, err = c.Version(ctx)
			}
			done <- err
		}()
		<-arrived
		cancel()
		err := <-done
		wantErr(t, err, context.Canceled)
		if errors.Is(err, ErrTransient) {
			t.Errorf("a cancelled call is not transient: %v", err)
		}
		if got := errors.Is(err, ErrOutcomeUnknown); got != write {
			t.Errorf("write=%v: ErrOutcomeUnknown = %v", write, got)
		}
	}
}

func TestLogging(t *testing.T) {
	s := newSrv(t)
	var n atomic.Int32
	s.handle("GET /version", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			rawReply(w, 503, "Service Unavailable", "")
			return
		}
		reply(w, map[string]any{"version": "8.1.4"})
	})
	lg, buf := testLogger(t)
	c := s.tokenClient(t, WithLogger(lg))
	if _, err := c.Version(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"retrying request", "path=/version", "status=200", "attempts=2"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	// A nil logger is silent and valid.
	c2, err := New(s.ts.URL, WithHTTPClient(s.ts.Client()), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Version(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestBackoff(t *testing.T) {
	for attempt := range 40 {
		d := retryWait(10*time.Millisecond, time.Second, attempt, nil)
		ideal := min(10*time.Millisecond<<min(attempt, 30), time.Second)
		if attempt >= 30 {
			ideal = time.Second
		}
		if d < ideal/2 || d > ideal {
			t.Fatalf("attempt %d: %s outside [%s, %s]", attempt, d, ideal/2, ideal)
		}
	}
	resp := &http.Response{Header: http.Header{"Retry-After": {"3"}}}
	if d := retryWait(time.Millisecond, 10*time.Second, 0, resp); d != 3*time.Second {
		t.Errorf("Retry-After: %s", d)
	}
	if d := retryWait(time.Millisecond, time.Second, 0, resp); d != time.Second {
		t.Errorf("Retry-After is capped: %s", d)
	}
	if d := retryWait(0, 0, 3, nil); d != 0 {
		t.Errorf("zero bounds: %s", d)
	}
}
