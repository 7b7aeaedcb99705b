package proxmox

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestAnswersEchoingSecretsRedacted: an answer a server or a proxy builds
// from the request can hold the credentials: the Authorization header, or
// the ticket cookie, escaped as it is sent. An unusable answer is quoted in
// its error; no secret may be, in any spelling.
func TestAnswersEchoingSecretsRedacted(t *testing.T) {
	header := "PVEAPIToken=" + testTokenID + "=" + testSecret
	tests := []struct {
		name  string
		route string
		body  string
		call  func(*Client) error
	}{
		{"a UPID that is the header", "POST /nodes/pve1/qemu/100/status/start", `{"data":"` + header + `"}`,
			func(c *Client) error { _, err := c.Start(context.Background(), testRef); return err }},
		{"a UPID that is the secret", "POST /nodes/pve1/qemu/100/status/stop", `{"data":"` + testSecret + `"}`,
			func(c *Client) error { _, err := c.Stop(context.Background(), testRef); return err }},
		{"a number that is the secret", "GET /nodes/pve1/qemu/100/status/current", `{"data":{"status":"running","uptime":"` + testSecret + `"}}`,
			func(c *Client) error { _, err := c.Status(context.Background(), testRef); return err }},
		{"a boolean that is the secret", "GET /nodes/pve1/qemu/100/status/current", `{"data":{"status":"running","template":"` + testSecret + `"}}`,
			func(c *Client) error { _, err := c.Status(context.Background(), testRef); return err }},
		{"a task of another guest named by the secret", "POST /nodes/pve1/qemu/100/status/start", `{"data":"UPID:pve1:00007323:001036A5:6419CAF8:qmstart:` + testSecret + `:guestward@pve!ci:"}`,
			func(c *Client) error { _, err := c.Start(context.Background(), testRef); return err }},
		{"a config task of another guest named by the secret", "POST /nodes/pve1/qemu/100/config", `{"data":"UPID:pve1:00007323:001036A5:6419CAF8:qmconfig:` + testSecret + `:guestward@pve!ci:"}`,
			func(c *Client) error {
				_, err := c.SetConfig(context.Background(), testRef, ConfigChange{Set: map[string]string{"name": "a"}})
				return err
			}},
		{"a task status that is the header", "GET /nodes/pve1/tasks/" + string(testUPID) + "/status", `{"data":{"status":"` + header + `"}}`,
			func(c *Client) error { _, err := c.TaskStatus(context.Background(), testUPID); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSrv(t)
			s.handle(tc.route, func(w http.ResponseWriter, r *http.Request) { replyRaw(w, tc.body) })
			err := tc.call(s.tokenClient(t))
			wantErr(t, err, ErrUnexpectedResponse)
			noFragment(t, err.Error(), testSecret)
		})
	}
}

// TestAnswerEchoingTicketRedacted: the ticket travels URL-escaped in the
// cookie; an answer that quotes the cookie must not carry it out.
func TestAnswerEchoingTicketRedacted(t *testing.T) {
	ts := newTicketServer(t)
	var cookie string
	ts.handle("POST /nodes/pve1/qemu/100/status/reboot", func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie("PVEAuthCookie")
		if err != nil {
			t.Error(err)
			return
		}
		cookie = ck.Value
		replyRaw(w, `{"data":"PVEAuthCookie=`+ck.Value+`"}`)
	})
	c := ts.client(t, WithPassword("root@pam", testPassword))
	_, err := c.Reboot(context.Background(), testRef)
	wantErr(t, err, ErrUnexpectedResponse, ErrOutcomeUnknown)
	if raw, _ := url.QueryUnescape(cookie); raw == cookie || !strings.Contains(raw, ticketMarker) {
		t.Fatalf("the test's ticket %q is not escaped in the cookie, or lost its marker", cookie)
	}
	if strings.Contains(err.Error(), cookie) {
		t.Errorf("error quotes the escaped ticket: %v", err)
	}
}

// noFragment fails t if text holds any 8 bytes of secret in a row: a
// message that quotes a value cut short must not carry part of a secret
// either.
func noFragment(t *testing.T, text, secret string) {
	t.Helper()
	for i := 0; i+8 <= len(secret); i++ {
		if strings.Contains(text, secret[i:i+8]) {
			t.Errorf("%q holds %q, part of a secret", text, secret[i:i+8])
			return
		}
	}
}
