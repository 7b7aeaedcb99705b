package proxmoxtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// principal is who a request is authenticated as.
type principal struct {
	id     string // "root@pam" (ticket) or "root@pam!name" (token)
	ticket bool
}

// authGrace is Proxmox's $auth_graceperiod: tickets up to 5 minutes "from
// the future" are accepted.
const authGrace = 5 * time.Minute

var (
	tokenHeaderRE  = regexp.MustCompile(`(?:^|\s)PVEAPIToken(?:=| )([^;]*)`)
	cookieRE       = regexp.MustCompile(`(?:^|\s|;)PVEAuthCookie=([^;]*)`)
	authCookieRE   = regexp.MustCompile(`(?:^|\s)PVEAuthCookie=([^;]*)`)
	ticketRE       = regexp.MustCompile(`^PVE:([^:\s]+):([A-Fa-f0-9]{8})::(.+)$`)
	csrfRE         = regexp.MustCompile(`^([A-Fa-f0-9]{8}):(.+)$`)
	percentEscapes = regexp.MustCompile(`%[0-9a-fA-F]{2}`)
)

// uriUnescape is URI::Escape::uri_unescape: %XX only, '+' stays.
func uriUnescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	return percentEscapes.ReplaceAllStringFunc(s, func(m string) string {
		return string([]byte{unhex(m[1])<<4 | unhex(m[2])})
	})
}

// authenticate checks a request's credentials the way pve-manager's
// auth_handler does: an API token if the Authorization header carries one,
// else a ticket from the PVEAuthCookie cookie (or, as a fallback, from the
// Authorization header), plus the CSRF token on non-GET ticket requests.
func (s *Server) authenticate(r *http.Request) (principal, *apiErr) {
	authz := r.Header.Get("Authorization")
	if v, ok := strings.CutPrefix(authz, "PVEAPIToken="); ok && !strings.Contains(v, ";") {
		return s.checkToken(uriUnescape(v)) // the common form, without a regexp
	}
	if m := tokenHeaderRE.FindStringSubmatch(authz); m != nil {
		return s.checkToken(uriUnescape(m[1]))
	}
	var ticket string
	for _, c := range r.Header.Values("Cookie") {
		if m := cookieRE.FindStringSubmatch(c); m != nil {
			ticket = uriUnescape(m[1])
			break
		}
	}
	if ticket == "" {
		if m := authCookieRE.FindStringSubmatch(authz); m != nil {
			ticket = uriUnescape(m[1])
		}
	}
	if ticket == "" {
		return principal{}, authErr("No ticket")
	}
	user, ok := s.verifyTicket(ticket)
	if !ok {
		return principal{}, s.authFailure("permission denied - invalid PVE ticket")
	}
	if r.Method != http.MethodGet {
		if !s.verifyCSRF(user, r.Header.Get("CSRFPreventionToken")) {
			return principal{}, authErr("Permission denied - invalid csrf token")
		}
	}
	return principal{id: user, ticket: true}, nil
}

func authErr(msg string) *apiErr { return &apiErr{status: 401, msg: msg + "\n"} }

// authFailure is the 401 for a bad ticket or token. From pve-manager 9.1.5
// and 8.4.17, auth_handler (pve-manager PVE/HTTPServer.pm) wraps
// verify_token and verify_ticket in one eval and answers
// "Authentication failed!" for all of them; before, the reason itself.
func (s *Server) authFailure(specific string) *apiErr {
	if s.cfg.version.genericAuthErrors() {
		return authErr("Authentication failed!")
	}
	return authErr(specific)
}

// checkToken is verify_token (pve-access-control PVE/AccessControl.pm):
// the value is "user@realm!name=secret", split at the last '=' (a value
// without one has no token id); then the user, the token, its expiry and
// the secret are checked, in that order.
func (s *Server) checkToken(value string) (principal, *apiErr) {
	i := strings.LastIndexByte(value, '=')
	if i < 0 {
		return principal{}, s.authFailure("no tokenid specified")
	}
	id, secret := value[:i], value[i+1:]
	s.authMu.RLock()
	tok := s.tokens[id]
	s.authMu.RUnlock()
	if tok != nil && !tok.expired && secret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(tok.secret)) == 1 {
		return principal{id: id}, nil // fast path: a valid token
	}
	parts := tokenIDRE.FindStringSubmatch(id)
	if parts == nil {
		// Proxmox echoes the malformed id here; we do not, because with a
		// secret containing '=' the "id" would carry part of the secret.
		return principal{}, s.authFailure("invalid token value!")
	}
	user, name := parts[1], parts[2]
	s.authMu.RLock()
	userKnown := s.users[user] != ""
	for _, t := range s.tokens {
		if t.user == user {
			userKnown = true
		}
	}
	expired := tok != nil && tok.expired
	s.authMu.RUnlock()
	switch {
	case !userKnown:
		return principal{}, s.authFailure(fmt.Sprintf("no such user ('%s')", user))
	case tok == nil:
		return principal{}, s.authFailure(fmt.Sprintf("no such token '%s' for user '%s'", name, user))
	case expired:
		return principal{}, s.authFailure(fmt.Sprintf("token '%s' access expired", name))
	case secret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(tok.secret)) != 1:
		return principal{}, s.authFailure("invalid token value!")
	}
	return principal{id: id}, nil
}

// SetAPITokenExpired marks an API token as expired (or valid again).
// Requests with an expired token fail with 401 "token '<name>' access
// expired".
func (s *Server) SetAPITokenExpired(id string, expired bool) error {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	t, ok := s.tokens[id]
	if !ok {
		return fmt.Errorf("proxmoxtest: no API token %q", id)
	}
	t.expired = expired
	return nil
}

func (s *Server) sign(key []byte, text string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(text))
	return base64.RawStdEncoding.EncodeToString(mac.Sum(nil))
}

// issueTicket returns a ticket "PVE:<user>:<HEX time>::<signature>" and its
// CSRF prevention token "<HEX time>:<signature>".
func (s *Server) issueTicket(user string) (ticket, csrf string) {
	ts := fmt.Sprintf("%08X", s.now().Unix())
	plain := "PVE:" + user + ":" + ts
	ticket = plain + "::" + s.sign(s.ticketKey, plain)
	csrf = ts + ":" + s.sign(s.csrfKey, ts+":"+user)
	return ticket, csrf
}

// ageOK is the age check of verify_rsa_ticket and
// verify_csrf_prevention_token (pve-common PVE/Ticket.pm): the age in
// whole seconds must lie strictly between -$auth_graceperiod and the
// ticket lifetime, so a ticket exactly at its maximum age is refused.
func (s *Server) ageOK(hexTime string) bool {
	ts, err := strconv.ParseInt(hexTime, 16, 64)
	if err != nil {
		return false
	}
	age := s.now().Unix() - ts
	return age > -int64(authGrace/time.Second) && age < int64(s.cfg.ticketLifetime/time.Second)
}

// verifyTicket returns the ticket's user if the signature, age and user
// check out.
func (s *Server) verifyTicket(ticket string) (string, bool) {
	m := ticketRE.FindStringSubmatch(ticket)
	if m == nil {
		return "", false
	}
	want := s.sign(s.ticketKey, "PVE:"+m[1]+":"+m[2])
	if !hmac.Equal([]byte(want), []byte(m[3])) || !s.ageOK(m[2]) {
		return "", false
	}
	s.authMu.RLock()
	_, known := s.users[m[1]]
	s.authMu.RUnlock()
	if !known {
		return "", false
	}
	return m[1], true
}

func (s *Server) verifyCSRF(user, token string) bool {
	m := csrfRE.FindStringSubmatch(token)
	if m == nil {
		return false
	}
	want := s.sign(s.csrfKey, m[1]+":"+user)
	return hmac.Equal([]byte(want), []byte(m[2])) && s.ageOK(m[1])
}

// login implements POST /access/ticket: a password, or a still valid ticket
// of the same user as the password, buys a fresh ticket.
func (s *Server) login(p map[string]string) (map[string]any, *apiErr) {
	user := p["username"]
	if realm := p["realm"]; realm != "" && !strings.Contains(user, "@") {
		user += "@" + realm
	}
	s.authMu.RLock()
	pw, known := s.users[user]
	s.authMu.RUnlock()
	ok := known && subtle.ConstantTimeCompare([]byte(pw), []byte(p["password"])) == 1
	if !ok && known {
		if tu, valid := s.verifyTicket(p["password"]); valid && tu == user {
			ok = true
		}
	}
	if !ok {
		return nil, authErr("authentication failure")
	}
	ticket, csrf := s.issueTicket(user)
	return map[string]any{
		"username":            user,
		"ticket":              ticket,
		"CSRFPreventionToken": csrf,
		"cap": map[string]any{
			"vms":     map[string]int{"VM.Audit": 1, "VM.PowerMgmt": 1, "VM.Config.Options": 1, "VM.Config.CPU": 1, "VM.Config.Memory": 1, "VM.Config.Network": 1, "VM.Config.Disk": 1},
			"nodes":   map[string]int{"Sys.Audit": 1},
			"storage": map[string]int{"Datastore.AllocateSpace": 1},
		},
	}, nil
}
