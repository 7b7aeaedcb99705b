package proxmox

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// authenticator adds credentials to requests. Implementations are used
// through a pointer and keep their secrets behind a second pointer (see
// tokenSecret), so no fmt verb applied to a Client, or to anything holding
// one, reaches them.
type authenticator interface {
	// credentials returns what to send; it may log in (ticket auth).
	credentials(ctx context.Context, c *Client) (creds, error)
	// rejected is called when Proxmox answered 401 to a request sent with
	// cr. It reports whether sending again with fresh credentials can help.
	rejected(cr creds) bool
	// describe names the identity, without secrets, for String and logs.
	describe() string
	// secrets lists the values to scrub from anything shown to people.
	secrets() []string
	// taskUser is the user id Proxmox writes into the UPIDs of tasks
	// started with these credentials.
	taskUser() string
}

// creds is one request's credentials.
type creds struct {
	authorization string  // Authorization header (token)
	cookie        string  // Cookie header (ticket)
	csrf          string  // CSRFPreventionToken, sent on writes (ticket)
	ticket        *ticket // identifies the ticket, for rejected
}

func (cr creds) apply(h http.Header, write bool) {
	if cr.authorization != "" {
		h.Set("Authorization", cr.authorization)
	}
	if cr.cookie != "" {
		h.Set("Cookie", cr.cookie)
	}
	if write && cr.csrf != "" {
		h.Set("CSRFPreventionToken", cr.csrf)
	}
}

// tokenAuth sends "Authorization: PVEAPIToken=user@realm!name=secret".
type tokenAuth struct {
	id  string
	sec *tokenSecret
}

// tokenSecret is the part of a tokenAuth that must never be printed. It
// sits one pointer further away than the authenticator because of how fmt
// walks a value whose methods it cannot call (a Client copied into an
// unexported field, say): it prints pointers inside the value as
// addresses, except that to explain a verb that does not fit a pointer
// (%s, %q) it prints the pointed-to struct, one level deep, with %v. That
// level is the authenticator; its pointer fields, this one among them,
// are again printed as addresses.
type tokenSecret struct {
	header string // the whole Authorization header
	secret string
}

func (a *tokenAuth) credentials(context.Context, *Client) (creds, error) {
	return creds{authorization: a.sec.header}, nil
}

func (a *tokenAuth) rejected(creds) bool { return false }
func (a *tokenAuth) describe() string    { return fmt.Sprintf("token %q", a.id) }
func (a *tokenAuth) secrets() []string   { return []string{a.sec.secret} }

// taskUser: for a token, pve-manager's auth_handler makes the token id
// itself the request's user (PVE::AccessControl::verify_token returns it
// as sent, after an exact lookup), and fork_worker writes that user into
// the UPID.
func (a *tokenAuth) taskUser() string { return a.id }

// Ticket lifetimes. Proxmox accepts a ticket for 2 h after it was issued
// (PVE::AccessControl's ticket lifetime); the client logs in again after 1 h, and stops using a
// ticket after 1 h 50 min even if a new login keeps failing, so clock drift
// and slow requests never present an expired ticket.
const (
	ticketRenewAfter = time.Hour
	ticketUsableFor  = 2*time.Hour - 10*time.Minute
	// After a failed renewal, keep using the old ticket for this long
	// before trying again, rather than logging in on every request.
	ticketRetryAfter = time.Minute
)

// ticket is one login's result. It is immutable once published.
type ticket struct {
	cookie   string // "PVEAuthCookie=<escaped ticket>"
	csrf     string
	obtained time.Time
}

// ticketAuth logs in with a password and keeps a fresh ticket.
type ticketAuth struct {
	user string
	sec  *ticketSecrets // behind a pointer for the reason tokenSecret is

	mu       sync.Mutex
	cur      *ticket
	inflight *loginCall // non-nil while a login runs
	failedAt time.Time  // last failed renewal while cur was usable
	// canonical is the user name the last login returned; "" before the
	// first. Proxmox may spell it differently from user.
	canonical string
}

// ticketSecrets is the part of a ticketAuth that must never be printed.
type ticketSecrets struct {
	password string
	// seen holds recent tickets and CSRF tokens, for scrubbing; guarded
	// by the ticketAuth's mu.
	seen []string
}

// loginCall is one login shared by every caller that needs it.
type loginCall struct {
	done chan struct{}
	t    *ticket
	err  error
}

func (a *ticketAuth) describe() string { return fmt.Sprintf("ticket for %q", a.user) }

// taskUser: a ticket names the user the login resolved, and Proxmox
// writes that name into UPIDs. The login resolves it with
// PVE::AccessControl::lookup_username, which, for a realm whose
// case-sensitive setting is off (LDAP, AD), replaces the name as typed
// by the spelling in user.cfg; so the login's answer decides.
func (a *ticketAuth) taskUser() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.canonical != "" {
		return a.canonical
	}
	return a.user
}

func (a *ticketAuth) secrets() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, 1+len(a.sec.seen))
	out = append(out, a.sec.password)
	return append(out, a.sec.seen...)
}

func (a *ticketAuth) rejected(cr creds) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cr.ticket == nil {
		return false
	}
	if a.cur == cr.ticket {
		a.cur = nil // force a new login
	}
	return true
}

func (t *ticket) creds() creds {
	return creds{cookie: t.cookie, csrf: t.csrf, ticket: t}
}

func (a *ticketAuth) credentials(ctx context.Context, c *Client) (creds, error) {
	for {
		a.mu.Lock()
		now := c.now()
		t := a.cur
		if t != nil && now.Sub(t.obtained) < ticketRenewAfter {
			a.mu.Unlock()
			return t.creds(), nil
		}
		usable := t != nil && now.Sub(t.obtained) < ticketUsableFor
		if usable && !a.failedAt.IsZero() && now.Sub(a.failedAt) < ticketRetryAfter {
			a.mu.Unlock()
			return t.creds(), nil
		}
		call := a.inflight
		if call == nil {
			call = &loginCall{done: make(chan struct{})}
			a.inflight = call
			a.mu.Unlock()

			nt, err := a.login(ctx, c)

			a.mu.Lock()
			call.t, call.err = nt, err
			a.inflight = nil
			if err == nil {
				a.cur = nt
				a.failedAt = time.Time{}
			} else if usable && !isContextErr(err) {
				a.failedAt = c.now()
			}
			close(call.done)
			a.mu.Unlock()

			if err != nil {
				if usable && ctx.Err() == nil {
					c.log.LogAttrs(ctx, slog.LevelWarn, "proxmox: ticket renewal failed; using the current ticket",
						slog.String("user", a.user), slog.String("error", c.redact(err.Error())))
					return t.creds(), nil
				}
				return creds{}, err
			}
			return nt.creds(), nil
		}
		a.mu.Unlock()
		if usable {
			return t.creds(), nil // someone is renewing; the old ticket still works
		}
		select {
		case <-call.done:
			if call.err == nil {
				return call.t.creds(), nil
			}
			if isContextErr(call.err) && ctx.Err() == nil {
				continue // that caller gave up; log in ourselves
			}
			return creds{}, call.err
		case <-ctx.Done():
			return creds{}, ctx.Err()
		}
	}
}

// ticketResponse is the data of POST /access/ticket.
type ticketResponse struct {
	Username string   `json:"username"`
	Ticket   string   `json:"ticket"`
	CSRF     string   `json:"CSRFPreventionToken"`
	NeedTFA  flexBool `json:"NeedTFA"`
}

// login posts the password to /access/ticket. The request creates nothing
// on the server, so it is retried like a read.
func (a *ticketAuth) login(ctx context.Context, c *Client) (*ticket, error) {
	form := url.Values{"username": {a.user}, "password": {a.sec.password}}
	var tr ticketResponse
	err := c.call(ctx, &request{method: http.MethodPost, path: "/access/ticket", form: form, noAuth: true, retryable: true}, &tr)
	if err != nil {
		return nil, fmt.Errorf("proxmox: log in as %s: %w", a.user, err)
	}
	// Record the secrets before anything else can mention them.
	a.mu.Lock()
	for _, s := range []string{tr.Ticket, tr.CSRF} {
		if s != "" {
			a.sec.seen = append(a.sec.seen, s)
		}
	}
	// Old tickets cannot come back in any response; keep a bounded tail.
	if n := len(a.sec.seen); n > 16 {
		a.sec.seen = append(a.sec.seen[:0:0], a.sec.seen[n-16:]...)
	}
	if userIDRE.MatchString(tr.Username) && strings.EqualFold(tr.Username, a.user) && tr.Ticket != "" && !bool(tr.NeedTFA) {
		a.canonical = tr.Username
	}
	a.mu.Unlock()
	if tr.NeedTFA {
		return nil, fmt.Errorf("proxmox: log in as %s: %w: the account needs a second factor; use an API token", a.user, ErrUnauthorized)
	}
	if tr.Ticket == "" || tr.CSRF == "" {
		return nil, fmt.Errorf("proxmox: log in as %s: %w: no ticket or CSRF token in the answer", a.user, ErrUnexpectedResponse)
	}
	if strings.ContainsAny(tr.CSRF, "\r\n") {
		return nil, fmt.Errorf("proxmox: log in as %s: %w: malformed CSRF token", a.user, ErrUnexpectedResponse)
	}
	c.log.LogAttrs(ctx, slog.LevelInfo, "proxmox: logged in", slog.String("user", a.user))
	return &ticket{
		cookie:   "PVEAuthCookie=" + url.QueryEscape(tr.Ticket),
		csrf:     tr.CSRF,
		obtained: c.now(),
	}, nil
}
