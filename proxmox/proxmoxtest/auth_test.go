package proxmoxtest

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestTokenAuth(t *testing.T) {
	s := Start(t, WithAPIToken("ops@pve!ci", "11111111-2222-3333-4444-555555555555"))
	id, secret := s.APIToken()
	if id != "ops@pve!ci" || secret != "11111111-2222-3333-4444-555555555555" {
		t.Fatalf("APIToken() = %q, %q", id, secret)
	}
	for _, tc := range []struct {
		name, header string
		code         int
		reason       string
	}{
		{"none", "", 401, "No ticket"},
		{"equals form", "PVEAPIToken=ops@pve!ci=" + secret, 200, "OK"},
		{"space form", "PVEAPIToken ops@pve!ci=" + secret, 200, "OK"},
		{"escaped", "PVEAPIToken=ops%40pve%21ci=" + secret, 200, "OK"},
		{"wrong secret", "PVEAPIToken=ops@pve!ci=nope", 401, "invalid token value!"},
		{"unknown token", "PVEAPIToken=ops@pve!other=" + secret, 401, "no such token 'other' for user 'ops@pve'"},
		{"unknown user", "PVEAPIToken=root@pam!ci=" + secret, 401, "no such user ('root@pam')"},
		{"no secret", "PVEAPIToken=ops@pve!ci", 401, "no tokenid specified"},
		{"empty secret", "PVEAPIToken=ops@pve!ci=", 401, "invalid token value!"},
		{"empty secret, unknown user", "PVEAPIToken=x@pve!ci=", 401, "no such user ('x@pve')"},
		{"PBS separator", "PVEAPIToken=ops@pve!ci:" + secret, 401, "no tokenid specified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp := do(t, s, "GET", "/version", nil, withHeader("Authorization", tc.header))
			if rp.Code != tc.code || rp.Status != tc.reason {
				t.Fatalf("got %d %q, want %d %q", rp.Code, rp.Status, tc.code, tc.reason)
			}
			if tc.code == 401 && len(rp.Raw) != 0 {
				t.Fatalf("401 with body %q", rp.Raw)
			}
		})
	}
	if err := s.SetAPITokenExpired("ops@pve!ci", true); err != nil {
		t.Fatal(err)
	}
	rp := do(t, s, "GET", "/version", nil)
	if rp.Code != 401 || rp.Status != "token 'ci' access expired" {
		t.Fatalf("expired: %d %q", rp.Code, rp.Status)
	}
}

func TestGenericAuthErrorsFromPVE91(t *testing.T) {
	s := Start(t, WithVersion(PVE91))
	for _, h := range []string{"PVEAPIToken=root@pam!guestward=wrong", "PVEAPIToken=x@pve!y=z"} {
		rp := do(t, s, "GET", "/version", nil, withHeader("Authorization", h))
		if rp.Code != 401 || rp.Status != "Authentication failed!" {
			t.Errorf("%s: %d %q", h, rp.Code, rp.Status)
		}
	}
	rp := do(t, s, "GET", "/version", nil, noAuth())
	if rp.Status != "No ticket" {
		t.Errorf("no credentials: %q", rp.Status)
	}
}

func login(t *testing.T, s *Server, user, password string) (ticket, csrf string) {
	t.Helper()
	rp := do(t, s, "POST", "/access/ticket", form("username", user, "password", password), noAuth())
	if rp.Code != 200 {
		t.Fatalf("login: %d %q", rp.Code, rp.Status)
	}
	d := rp.dataMap(t)
	ticket, _ = d["ticket"].(string)
	csrf, _ = d["CSRFPreventionToken"].(string)
	if d["username"] != user || !strings.HasPrefix(ticket, "PVE:"+user+":") || csrf == "" {
		t.Fatalf("login answer %v", d)
	}
	if _, ok := d["cap"].(map[string]any); !ok {
		t.Fatalf("no cap in %v", d)
	}
	return ticket, csrf
}

func cookie(ticket string) reqOpt {
	return func(r *http.Request) {
		r.Header.Del("Authorization")
		r.Header.Set("Cookie", "PVEAuthCookie="+url.QueryEscape(ticket))
	}
}

func TestTicketAuth(t *testing.T) {
	clk := NewManualClock(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	s := Start(t, WithUser("root@pam", "secret-pw"), WithClock(clk), WithTicketLifetime(time.Hour))
	r := mustAdd(t, s, vm100(""))

	rp := do(t, s, "POST", "/access/ticket", form("username", "root@pam", "password", "wrong"), noAuth())
	if rp.Code != 401 || rp.Status != "authentication failure" {
		t.Fatalf("bad password: %d %q", rp.Code, rp.Status)
	}
	// username + realm is accepted too.
	rp = do(t, s, "POST", "/access/ticket", form("username", "root", "realm", "pam", "password", "secret-pw"), noAuth())
	if rp.Code != 200 || rp.dataMap(t)["username"] != "root@pam" {
		t.Fatalf("login with realm: %d %s", rp.Code, rp.Raw)
	}
	ticket, csrf := login(t, s, "root@pam", "secret-pw")

	if rp := do(t, s, "GET", guestPath(r)+"/config", nil, cookie(ticket)); rp.Code != 200 {
		t.Fatalf("GET with cookie: %d %q", rp.Code, rp.Status)
	}
	if rp := do(t, s, "GET", "/version", nil, withHeader("Authorization", "PVEAuthCookie="+ticket)); rp.Code != 200 {
		t.Fatalf("ticket in Authorization: %d %q", rp.Code, rp.Status)
	}
	rp = do(t, s, "PUT", guestPath(r)+"/config", form("cores", "3"), cookie(ticket))
	if rp.Code != 401 || rp.Status != "Permission denied - invalid csrf token" {
		t.Fatalf("write without CSRF: %d %q", rp.Code, rp.Status)
	}
	rp = do(t, s, "PUT", guestPath(r)+"/config", form("cores", "3"), cookie(ticket), withHeader("CSRFPreventionToken", csrf))
	if rp.Code != 200 {
		t.Fatalf("write with CSRF: %d %q", rp.Code, rp.Status)
	}
	// skiplock is accepted from a root@pam ticket.
	s.SetLock(r, "backup")
	rp = do(t, s, "PUT", guestPath(r)+"/config", form("delete", "lock", "skiplock", "1"), cookie(ticket), withHeader("CSRFPreventionToken", csrf))
	if rp.Code != 200 || mustGuest(t, s, r).Lock != "" {
		t.Fatalf("unlock with skiplock: %d %q", rp.Code, rp.Status)
	}

	// Renewal: a valid ticket works as the password.
	clk.Advance(50 * time.Minute)
	renewed, _ := login(t, s, "root@pam", ticket)
	clk.Advance(20 * time.Minute) // the first ticket is now 70 minutes old
	rp = do(t, s, "GET", "/version", nil, cookie(ticket))
	if rp.Code != 401 || rp.Status != "permission denied - invalid PVE ticket" {
		t.Fatalf("expired ticket: %d %q", rp.Code, rp.Status)
	}
	if rp := do(t, s, "GET", "/version", nil, cookie(renewed)); rp.Code != 200 {
		t.Fatalf("renewed ticket: %d %q", rp.Code, rp.Status)
	}
	rp = do(t, s, "POST", "/access/ticket", form("username", "root@pam", "password", ticket), noAuth())
	if rp.Code != 401 {
		t.Fatalf("renewal with an expired ticket: %d", rp.Code)
	}
	// A forged ticket fails.
	forged := strings.Replace(renewed, "root@pam", "ops@pam", 1)
	if rp := do(t, s, "GET", "/version", nil, cookie(forged)); rp.Code != 401 {
		t.Fatalf("forged ticket accepted")
	}
}

func TestAuthFailureDelay(t *testing.T) {
	const d = 30 * time.Millisecond
	s := Start(t, WithAuthFailureDelay(d))
	start := time.Now()
	rp := do(t, s, "GET", "/version", nil, noAuth())
	if rp.Code != 401 {
		t.Fatal(rp.Code)
	}
	if el := time.Since(start); el < d {
		t.Fatalf("401 came after %v, before the %v delay", el, d)
	}
}

func TestNoSecretsInRequestLog(t *testing.T) {
	s := Start(t, WithUser("root@pam", "pw-123456"))
	_, secret := s.APIToken()
	do(t, s, "GET", "/version", nil)
	ticket, csrf := login(t, s, "root@pam", "pw-123456")
	do(t, s, "POST", "/access/ticket", form("username", "root@pam", "password", ticket), noAuth())
	do(t, s, "GET", "/version", nil, cookie(ticket), withHeader("CSRFPreventionToken", csrf))
	reqs := s.Requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests logged", len(reqs))
	}
	for _, r := range reqs {
		dump := strings.Join([]string{r.Method, r.Path, r.Auth}, " ")
		for k, v := range r.Params {
			dump += " " + k + "=" + v
		}
		for _, leak := range []string{secret, "pw-123456", ticket, csrf} {
			if strings.Contains(dump, leak) {
				t.Fatalf("request log leaks a credential: %q", dump)
			}
		}
	}
	if reqs[1].Params["password"] != "<redacted>" || reqs[1].Auth != "" {
		t.Fatalf("login entry %+v", reqs[1])
	}
	if reqs[0].Auth != "root@pam!guestward" || reqs[3].Auth != "root@pam" {
		t.Fatalf("auth ids %q %q", reqs[0].Auth, reqs[3].Auth)
	}
}
