package proxmox

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// Option configures a [Client] in [New]. Options are values built by the
// With functions of this package; their printed form (%v, %+v, %#v, %s)
// never shows a secret. An Option is immutable and safe for concurrent use;
// one Option may configure several clients.
type Option interface {
	apply(*settings) error
}

// Defaults; each can be changed with the option named beside it.
const (
	DefaultTimeout          = 2 * time.Minute        // WithTimeout
	DefaultRetries          = 4                      // WithRetry
	DefaultRetryWaitMin     = 250 * time.Millisecond // WithRetry
	DefaultRetryWaitMax     = 5 * time.Second        // WithRetry
	DefaultTaskPollMin      = 100 * time.Millisecond // WithTaskPolling
	DefaultTaskPollMax      = 2 * time.Second        // WithTaskPolling
	DefaultTaskNotFoundWait = 10 * time.Second       // WithTaskNotFoundGrace
	DefaultUserAgent        = "guestward-proxmox"    // WithUserAgent
)

// ErrInvalidOption is returned, wrapped, by [New] for an option with a bad
// argument or a combination of options that cannot work together.
var ErrInvalidOption = errors.New("proxmox: invalid option")

// settings is what options write; New turns it into a Client.
type settings struct {
	httpClient    *http.Client
	opaqueOK      bool // WithOpaqueTransport
	auth          authenticator
	caPool        *x509.CertPool
	pins          [][sha256.Size]byte
	logger        *slog.Logger
	userAgent     string
	timeout       time.Duration
	timeoutSet    bool
	retries       int
	retryMin      time.Duration
	retryMax      time.Duration
	pollMin       time.Duration
	pollMax       time.Duration
	notFoundGrace time.Duration
	observe       func(RequestInfo) // WithRequestObserver
	now           func() time.Time  // tests only
}

// option is the single Option implementation. It keeps a printable
// description apart from the closure, so printing an option can never show
// what the closure captured.
type option struct {
	desc string
	fn   func(*settings) error
}

func (o option) apply(s *settings) error { return o.fn(s) }

// String returns the option's call with secrets redacted.
func (o option) String() string { return o.desc }

// GoString is String; it makes %#v safe.
func (o option) GoString() string { return o.desc }

// Format prints the redacted description for every verb.
func (o option) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", o.desc)
		return
	}
	_, _ = f.Write([]byte(o.desc))
}

// LogValue keeps slog from looking inside the option.
func (o option) LogValue() slog.Value { return slog.StringValue(o.desc) }

const redacted = "[redacted]"

// userIDRE is Proxmox's pve-userid, user@realm (the user part may itself
// contain '@'); ';' and '=' are excluded as well because they would break
// the Authorization header Proxmox parses.
var userIDRE = regexp.MustCompile(`^[^\s:/;=]+@[A-Za-z][A-Za-z0-9.\-_]+$`)

// tokenIDRE is user@realm!tokenname (pveum.adoc).
var tokenIDRE = regexp.MustCompile(`^[^\s:/;=]+@[A-Za-z][A-Za-z0-9.\-_]+![A-Za-z][A-Za-z0-9.\-_]+$`)

// WithAPIToken authenticates every request with a Proxmox API token: tokenID
// is "user@realm!tokenname" and secret the token's UUID. Token requests are
// stateless and need no CSRF token. This is the recommended authentication
// for programs. The secret is never printed, logged, or put into an error.
func WithAPIToken(tokenID, secret string) Option {
	return option{
		desc: fmt.Sprintf("proxmox.WithAPIToken(%q, %q)", tokenID, redacted),
		fn: func(s *settings) error {
			if !tokenIDRE.MatchString(tokenID) {
				return fmt.Errorf("%w: WithAPIToken: token id %q is not of the form user@realm!tokenname", ErrInvalidOption, tokenID)
			}
			if secret == "" || !printableASCII(secret) || strings.ContainsAny(secret, " ;=") {
				return fmt.Errorf("%w: WithAPIToken: the secret for %q is empty or contains characters a token secret cannot have", ErrInvalidOption, tokenID)
			}
			if s.auth != nil {
				return fmt.Errorf("%w: WithAPIToken: authentication is already configured", ErrInvalidOption)
			}
			s.auth = &tokenAuth{id: tokenID, sec: &tokenSecret{header: "PVEAPIToken=" + tokenID + "=" + secret, secret: secret}}
			return nil
		},
	}
}

// WithPassword authenticates with a username ("user@realm", for example
// "root@pam") and password: the client logs in on first use, sends the
// ticket as the PVEAuthCookie cookie and the CSRF token on every write, and
// logs in again when the ticket is an hour old (Proxmox tickets live two
// hours), so a long-running program never holds an expired ticket. Logins
// are shared between concurrent callers. Accounts that need a second factor
// cannot log in this way; use [WithAPIToken]. Neither the password nor the
// ticket is ever printed, logged, or put into an error.
func WithPassword(username, password string) Option {
	return option{
		desc: fmt.Sprintf("proxmox.WithPassword(%q, %q)", username, redacted),
		fn: func(s *settings) error {
			if !userIDRE.MatchString(username) {
				return fmt.Errorf("%w: WithPassword: username %q is not of the form user@realm", ErrInvalidOption, username)
			}
			if password == "" {
				return fmt.Errorf("%w: WithPassword: empty password for %q", ErrInvalidOption, username)
			}
			if s.auth != nil {
				return fmt.Errorf("%w: WithPassword: authentication is already configured", ErrInvalidOption)
			}
			s.auth = &ticketAuth{user: username, sec: &ticketSecrets{password: password}}
			return nil
		},
	}
}

// WithHTTPClient makes the client send its requests through hc, for example
// the client of a test server that trusts its certificate. hc's transport
// then decides TLS, proxies and timeouts, so [WithCAPool],
// [WithFingerprint] and [WithTimeout] cannot be combined with it. The
// retry rule still applies: it runs around hc.
//
// hc cannot weaken what the client guarantees. [New] refuses, with
// [ErrInvalidOption], a transport that turns certificate verification off
// (InsecureSkipVerify), allows TLS versions before 1.2 or cipher suites Go
// lists as insecure, or writes the TLS session keys (KeyLogWriter); for a
// self-signed certificate use [WithFingerprint] instead. Certificate checks
// a transport adds (VerifyPeerCertificate, VerifyConnection, its own
// RootCAs) are kept, and so is its proxy: net/http tunnels https through
// a proxy, which sees only encrypted traffic. Only an *http.Transport can
// be inspected, and only while it does its own TLS: any other
// http.RoundTripper, and an *http.Transport whose DialTLSContext or
// DialTLS replaces its TLS settings, is refused unless
// [WithOpaqueTransport] is given too. A nil hc.Transport means
// http.DefaultTransport, which is inspected in the same way. The check is
// made once, in New: the client keeps using hc's transport, shared with
// the caller, and changes made to it later are the caller's
// responsibility.
//
// Redirects are never followed, whatever hc.CheckRedirect says: a
// redirect could send the credentials to another host or in clear text.
// New uses a copy of hc that refuses them, leaving hc itself unchanged,
// and a 3xx answer is returned as an [*APIError] with its status code.
//
// Proving that a failed write never left the machine relies on net/http's
// Transport reporting its connections (net/http/httptrace); with any
// other http.RoundTripper as hc.Transport, a write that failed on the
// network is never retried.
func WithHTTPClient(hc *http.Client) Option {
	return option{
		desc: "proxmox.WithHTTPClient(...)",
		fn: func(s *settings) error {
			if hc == nil {
				return fmt.Errorf("%w: WithHTTPClient: nil client", ErrInvalidOption)
			}
			s.httpClient = hc
			return nil
		},
	}
}

// WithOpaqueTransport lets [WithHTTPClient] take a client whose transport
// cannot be inspected: an http.RoundTripper other than *http.Transport
// (one that adds tracing or metrics, say), or an *http.Transport that
// makes its TLS connections itself (DialTLSContext, DialTLS). Without it,
// [New] refuses such a client, because nothing then shows that the
// server's certificate is verified.
//
// With it, the caller vouches for the transport: if it does not verify
// the certificate, or does not use TLS at all, the token secret or the
// password goes to whoever answers. Redirects are still refused. Giving
// WithOpaqueTransport without WithHTTPClient is an error.
func WithOpaqueTransport() Option {
	return option{
		desc: "proxmox.WithOpaqueTransport()",
		fn: func(s *settings) error {
			s.opaqueOK = true
			return nil
		},
	}
}

// WithCAPool verifies the server's certificate chain against pool instead
// of the system roots, for a cluster whose certificates are signed by its
// own CA (/etc/pve/pve-root-ca.pem). Host names are still verified.
func WithCAPool(pool *x509.CertPool) Option {
	return option{
		desc: "proxmox.WithCAPool(...)",
		fn: func(s *settings) error {
			if pool == nil {
				return fmt.Errorf("%w: WithCAPool: nil pool", ErrInvalidOption)
			}
			s.caPool = pool
			return nil
		},
	}
}

// WithFingerprint pins the server's leaf certificate by its SHA-256
// fingerprint, as shown by the Proxmox GUI (node, Certificates) or
// `openssl x509 -noout -fingerprint -sha256`: 64 hexadecimal digits,
// colons optional, any case. This is the usual answer to Proxmox's
// self-signed certificates: the connection is accepted only if the
// presented certificate is exactly the pinned one, and chain and host name
// are then not checked. With [WithCAPool] as well, both must hold: the
// pinned certificate must also chain to the pool and be issued for the
// base URL's host (for an IP address, one of the certificate's IP
// addresses). Give the option several times to accept several
// certificates, for example across a renewal.
func WithFingerprint(sha256Fingerprint string) Option {
	return option{
		desc: fmt.Sprintf("proxmox.WithFingerprint(%q)", sha256Fingerprint),
		fn: func(s *settings) error {
			h := strings.ReplaceAll(sha256Fingerprint, ":", "")
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != sha256.Size {
				return fmt.Errorf("%w: WithFingerprint: %q is not a SHA-256 fingerprint (64 hex digits, colons optional)", ErrInvalidOption, sha256Fingerprint)
			}
			s.pins = append(s.pins, [sha256.Size]byte(b))
			return nil
		},
	}
}

// WithLogger makes the client log to l: one Debug line per request
// (method, path, status, attempts, duration), Info lines for retries and
// logins. Headers, bodies and credentials are never logged. A nil l, the
// default, discards everything.
func WithLogger(l *slog.Logger) Option {
	return option{
		desc: "proxmox.WithLogger(...)",
		fn: func(s *settings) error {
			s.logger = l
			return nil
		},
	}
}

// WithUserAgent sets the User-Agent header; the default is
// [DefaultUserAgent].
func WithUserAgent(ua string) Option {
	return option{
		desc: fmt.Sprintf("proxmox.WithUserAgent(%q)", ua),
		fn: func(s *settings) error {
			if ua == "" || !printableASCII(ua) {
				return fmt.Errorf("%w: WithUserAgent: %q is empty or not printable ASCII", ErrInvalidOption, ua)
			}
			s.userAgent = ua
			return nil
		},
	}
}

// WithTimeout bounds each HTTP attempt, from dialing to reading the whole
// response; the default is [DefaultTimeout]. The caller's context bounds
// the whole call, retries included. A write that times out has an unknown
// outcome ([ErrOutcomeUnknown]).
func WithTimeout(d time.Duration) Option {
	return option{
		desc: fmt.Sprintf("proxmox.WithTimeout(%s)", d),
		fn: func(s *settings) error {
			if d <= 0 {
				return fmt.Errorf("%w: WithTimeout: %s is not positive", ErrInvalidOption, d)
			}
			s.timeout, s.timeoutSet = d, true
			return nil
		},
	}
}

// WithRetry sets how often a retryable request is retried (0 disables
// retries) and the bounds of the exponential, jittered wait between
// attempts. A Retry-After header is honoured up to maxWait. The defaults
// are [DefaultRetries], [DefaultRetryWaitMin] and [DefaultRetryWaitMax].
// Which requests are retryable is fixed; see the package documentation.
func WithRetry(retries int, minWait, maxWait time.Duration) Option {
	return option{
		desc: fmt.Sprintf("proxmox.WithRetry(%d, %s, %s)", retries, minWait, maxWait),
		fn: func(s *settings) error {
			if retries < 0 || minWait < 0 || maxWait < minWait {
				return fmt.Errorf("%w: WithRetry(%d, %s, %s): need retries >= 0 and 0 <= minWait <= maxWait", ErrInvalidOption, retries, minWait, maxWait)
			}
			s.retries, s.retryMin, s.retryMax = retries, minWait, maxWait
			return nil
		},
	}
}

// WithTaskPolling sets the interval at which [Client.WaitTask] polls a
// task: it starts at minInterval and doubles up to maxInterval. The
// defaults are [DefaultTaskPollMin] and [DefaultTaskPollMax].
func WithTaskPolling(minInterval, maxInterval time.Duration) Option {
	return option{
		desc: fmt.Sprintf("proxmox.WithTaskPolling(%s, %s)", minInterval, maxInterval),
		fn: func(s *settings) error {
			if minInterval <= 0 || maxInterval < minInterval {
				return fmt.Errorf("%w: WithTaskPolling(%s, %s): need 0 < minInterval <= maxInterval", ErrInvalidOption, minInterval, maxInterval)
			}
			s.pollMin, s.pollMax = minInterval, maxInterval
			return nil
		},
	}
}

// WithTaskNotFoundGrace sets how long [Client.WaitTask] keeps polling a
// task that its node reports as "no such task". Right after a task is
// created, its node can briefly not know it yet; after the grace period
// WaitTask returns the [ErrNotFound] error. The default is
// [DefaultTaskNotFoundWait]; 0 fails on the first "no such task".
func WithTaskNotFoundGrace(d time.Duration) Option {
	return option{
		desc: fmt.Sprintf("proxmox.WithTaskNotFoundGrace(%s)", d),
		fn: func(s *settings) error {
			if d < 0 {
				return fmt.Errorf("%w: WithTaskNotFoundGrace: %s is negative", ErrInvalidOption, d)
			}
			s.notFoundGrace = d
			return nil
		},
	}
}

// withClock replaces time.Now for ticket ageing; tests only.
func withClock(now func() time.Time) Option {
	return option{desc: "proxmox.withClock(...)", fn: func(s *settings) error { s.now = now; return nil }}
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
