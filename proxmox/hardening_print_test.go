package proxmox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

// holder keeps a Client value in an unexported field, where fmt cannot
// call the Client's methods and walks its fields instead.
type holder struct {
	c Client
}

// TestClientValueHidesSecrets formats a copied Client value (not the
// pointer) with every verb, in every place a program might put one: fmt
// must reach no secret however it walks the struct. Before the fix, %s
// and %q of a Client value printed the token secret and the password,
// because fmt explains a bad verb by printing the pointer it met, one
// level deep.
func TestClientValueHidesSecrets(t *testing.T) {
	tc, err := New("https://pve:8006", WithAPIToken(testTokenID, testSecret))
	if err != nil {
		t.Fatal(err)
	}
	ts := newTicketServer(t)
	pc := ts.client(t, WithPassword("root@pam", testPassword))
	// Log in, so that the ticket and CSRF token are held as well.
	if _, err := pc.Version(context.Background()); err != nil {
		t.Fatal(checkErr(t, err))
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%p"}
	for _, c := range []*Client{tc, pc} {
		v := *c
		h := holder{c: *c}
		for _, verb := range verbs {
			assertNoSecret(t, "client value "+verb, fmt.Sprintf(verb, v))
			assertNoSecret(t, "client in a field "+verb, fmt.Sprintf(verb, h))
			assertNoSecret(t, "pointer to a client in a field "+verb, fmt.Sprintf(verb, &h))
			assertNoSecret(t, "client values in a slice "+verb, fmt.Sprintf(verb, []Client{v}))
			assertNoSecret(t, "client values in a map "+verb, fmt.Sprintf(verb, map[string]Client{"k": v}))
		}
		if got, want := fmt.Sprint(v), c.String(); got != want {
			t.Errorf("a Client value prints as %q, want %q", got, want)
		}
		if got, want := fmt.Sprintf("%q", v), fmt.Sprintf("%q", c.String()); got != want {
			t.Errorf("%%q of a Client value = %s, want %s", got, want)
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "client", v, "holder", h)
		slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "client", v, "holder", h)
		assertNoSecret(t, "slog of a client value", buf.String())
		for _, x := range []any{v, h, c} {
			b, err := json.Marshal(x)
			if err != nil {
				t.Fatalf("json.Marshal(%T): %v", x, err)
			}
			assertNoSecret(t, fmt.Sprintf("json of %T", x), string(b))
		}
	}
	if !strings.Contains(fmt.Sprint(*tc), testTokenID) {
		t.Errorf("a Client value should name its token id: %v", *tc)
	}
}

// TestShutdownTimeoutBounds: the timeout Proxmox receives is an integer
// number of seconds that lxc-stop reads into a C int. Before the fix, a
// timeout near the largest Duration overflowed when rounded up to whole
// seconds, and a negative number was sent.
func TestShutdownTimeoutBounds(t *testing.T) {
	s := newSrv(t)
	s.handle("POST /nodes/pve1/qemu/100/status/shutdown", func(w http.ResponseWriter, r *http.Request) { reply(w, string(testUPID)) })
	c := s.tokenClient(t)
	ctx := context.Background()
	for _, d := range []time.Duration{
		math.MaxInt64,
		math.MaxInt64 / time.Second * time.Second, // whole seconds, as a journal holds them
		MaxShutdownTimeout + time.Nanosecond,
		MaxShutdownTimeout + time.Second,
	} {
		_, err := c.Shutdown(ctx, testRef, d)
		wantErr(t, err, ErrInvalidArgument)
	}
	if n := s.count("POST /nodes/pve1/qemu/100/status/shutdown"); n != 0 {
		t.Fatalf("%d shutdowns sent with a refused timeout", n)
	}
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{MaxShutdownTimeout, "2147483647"},
		{MaxShutdownTimeout - time.Second + 1, "2147483647"},
		{time.Nanosecond, "1"},
		{90 * time.Second, "90"},
	} {
		before := len(s.requests())
		if _, err := c.Shutdown(ctx, testRef, tt.d); err != nil {
			t.Fatalf("Shutdown(%s): %v", tt.d, checkErr(t, err))
		}
		reqs := s.requests()[before:]
		if len(reqs) != 1 || reqs[0].Body != "timeout="+tt.want {
			t.Errorf("Shutdown(%s) sent %+v, want timeout=%s", tt.d, reqs, tt.want)
		}
	}
}
