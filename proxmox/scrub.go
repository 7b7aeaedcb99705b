package proxmox

import (
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Secrets and server text. A server, or a proxy in front of it, can echo
// what the client sent: the Authorization header with the token secret,
// the cookie with the ticket, the login form with the password. Whatever
// the answer says then reaches an error, a log line or, through the
// caller, a journal. So every string that came from the server passes
// redact before the client puts it into an error or a log line, and a
// task's exit status is redacted before the client hands it out.

// redact replaces every secret the client holds with [redacted], in each
// spelling the secret can take in a message: as sent in a header, escaped
// as in a cookie or a form, quoted by Go's %q, or escaped by a JSON
// encoder. Secrets shorter than 4 bytes are left alone: they would match
// too much ordinary text.
func (c *Client) redact(s string) string {
	if c.auth == nil || s == "" {
		return s
	}
	for _, sec := range c.auth.secrets() {
		if len(sec) < 4 {
			continue
		}
		for _, v := range spellings(sec) {
			if strings.Contains(s, v) {
				s = strings.ReplaceAll(s, v, redacted)
			}
		}
	}
	return s
}

// spellings returns sec as sent and every other form it takes in text.
func spellings(sec string) []string {
	out := []string{sec}
	add := func(v string) {
		for _, o := range out {
			if o == v {
				return
			}
		}
		out = append(out, v)
	}
	add(url.QueryEscape(sec))
	add(url.PathEscape(sec))
	if !plainText(sec) {
		q := strconv.Quote(sec)
		add(q[1 : len(q)-1])
		if b, err := json.Marshal(sec); err == nil {
			add(string(b[1 : len(b)-1]))
		}
	}
	return out
}

// plainText reports whether s is printable ASCII without quotes or
// backslashes: text that quoting and JSON leave as it is.
func plainText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// redactErr returns err with its message redacted. When the message held a
// secret, the result is a new error that matches the same classes through
// [errors.Is] but does not unwrap to err, whose text still holds it.
func (c *Client) redactErr(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if r := c.redact(msg); r != msg {
		return &redactedError{msg: r, cause: err}
	}
	return err
}

// redactedError is an error whose message was redacted.
type redactedError struct {
	msg   string
	cause error // not unwrapped: its text holds a secret
}

func (e *redactedError) Error() string { return e.msg }

// Is keeps the classes of the cause.
func (e *redactedError) Is(target error) bool { return errors.Is(e.cause, target) }

// GoString keeps %#v from reaching the cause.
func (e *redactedError) GoString() string { return strconv.Quote(e.msg) }

// answerErr is the package's answerErr for an answer to one of c's
// requests: the message is redacted first, since an unusable answer is
// usually quoted in it.
func (c *Client) answerErr(method, path string, err error) error {
	return answerErr(method, path, c.redactErr(err))
}

// quoteValue renders a value from the server for an error message. Short
// plain text is quoted whole, so that redact finds any secret in it as
// sent; anything else is described by its length only, because
// truncating or escaping it could split or respell a secret so that
// redact no longer finds it. Token secrets, tickets and CSRF tokens are
// all longer than the limit and so are never shown.
func quoteValue(s string) string {
	const maxShown = 24
	if len(s) <= maxShown && plainText(s) {
		return `"` + s + `"`
	}
	if !utf8.ValidString(s) {
		return strconv.Itoa(len(s)) + " bytes of text that is not UTF-8"
	}
	return "a text of " + strconv.Itoa(len(s)) + " bytes"
}
