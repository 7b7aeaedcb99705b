package proxmox

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
)

// Classes of failure. Errors returned by [Client] methods match these through
// [errors.Is]; never match on message text. One error can belong to several
// classes (a failed task whose exit status says the guest is locked matches
// both [ErrTaskFailed] and [ErrLocked]).
var (
	// ErrNotFound: the guest, node or task does not exist. Proxmox has no
	// 404; the class is recognised from its messages: "Configuration file
	// '...' does not exist" and "unable to find configuration file for VM
	// 100 on node 'pve1'" (a guest that is missing on the addressed node:
	// the first from a read or a config change, the second from a QEMU
	// stop, shutdown or reboot, returned synchronously or as a task's exit
	// status), "no such task"
	// (a task the node does not know, including for a moment right after
	// it was created), and "hostname lookup '...' failed" (a node name the
	// cluster cannot resolve). Other "does not exist" texts, for example a
	// storage named in a config value, are not this class.
	ErrNotFound = errors.New("proxmox: not found")

	// ErrLocked: the guest is locked. Either its config carries a lock
	// ("VM is locked (backup)", "CT is locked (snapshot)"), or another
	// process held the guest's config lock file for longer than Proxmox
	// waits for it, 10 s ("can't lock file
	// '/var/lock/qemu-server/lock-100.conf' - got timeout", for LXC
	// '/run/lock/lxc/pve-config-200.lock'). Power actions report it as a
	// task failure, config updates synchronously; a lock timeout comes
	// synchronously or as a task's exit status, depending on whether the
	// API handler or the task takes the lock. Wait for the lock to clear;
	// do not skip it. A lock timeout proves the request did nothing, and
	// also matches [ErrTransient]: the same call may succeed once the
	// holder is done. (A journal already open elsewhere is
	// journal.ErrLocked, a different error.)
	ErrLocked = errors.New("proxmox: guest is locked")

	// ErrDigestMismatch: the digest sent with [Client.SetConfig] no longer
	// matches the guest's config, because another writer changed it. All
	// spellings are recognised: "checksum missmatch" (QEMU, PVE 7 to 8.2),
	// "checksum mismatch" (QEMU, PVE 8.3 and later) and "detected modified
	// configuration - file changed by other user?" (LXC). Read the config
	// again and re-plan.
	ErrDigestMismatch = errors.New("proxmox: config digest mismatch")

	// ErrUnauthorized: HTTP 401. The credentials were refused (bad or
	// expired token, wrong password, missing CSRF token, or a login that
	// needs a second factor). Proxmox never executes a request it answers
	// with 401.
	ErrUnauthorized = errors.New("proxmox: unauthorized")

	// ErrForbidden: HTTP 403. The credentials are valid but lack the
	// privilege ("Permission check failed (/vms/100, VM.PowerMgmt)").
	ErrForbidden = errors.New("proxmox: forbidden")

	// ErrNotImplemented: HTTP 501. Proxmox answers 501 for an unknown path
	// or method (it has no 404 or 405), for request bodies it refuses
	// (chunked, too large) and for HEAD.
	ErrNotImplemented = errors.New("proxmox: not implemented")

	// ErrInvalidParameter: HTTP 400. Proxmox refused a parameter; the
	// per-parameter reasons are in [APIError.Errors].
	ErrInvalidParameter = errors.New("proxmox: invalid parameter")

	// ErrAlreadyRunning: a start found the guest running ("CT 100 already
	// running" synchronously for LXC, "VM 100 already running" as a QEMU
	// task's exit status). A caller that wants the guest running has what
	// it wants.
	ErrAlreadyRunning = errors.New("proxmox: guest already running")

	// ErrNotRunning: the action needs a running guest ("CT 100 not
	// running" from an LXC stop or shutdown, "VM 100 not running" from a
	// reboot). A caller that wants the guest stopped has what it wants.
	ErrNotRunning = errors.New("proxmox: guest not running")

	// ErrTransient: a failure that is expected to clear by itself, so the
	// same call may succeed later: network failures, HTTP 429, 502, 503,
	// 504, the 595 to 599 statuses a Proxmox node returns when it cannot
	// reach the node it proxies to, and a config lock that could not be
	// taken within Proxmox's 10 s ("can't lock file ... - got timeout").
	// Errors not in this class are terminal: repeating the call unchanged
	// will fail the same way. A transient error from a write can still
	// match [ErrOutcomeUnknown]; check that first.
	ErrTransient = errors.New("proxmox: transient failure")

	// ErrOutcomeUnknown: a write request (POST, PUT, DELETE) failed in a
	// way that does not tell whether Proxmox executed it: the connection
	// broke or timed out after the request was sent, the caller's context
	// ended while waiting for the answer, a proxy in front of Proxmox
	// answered 502, 503, 504, 597, 598 or 599, or a 2xx answer could not
	// be used ([ErrUnexpectedResponse]). The write may have taken
	// effect, and may have started a task. The client never re-sends such
	// a request; find out first, by reading the guest's state or by
	// listing the node's tasks with [Client.Tasks].
	ErrOutcomeUnknown = errors.New("proxmox: outcome of write unknown")

	// ErrTaskFailed: a task ended with an exit status other than "OK" or
	// "WARNINGS: n". The error is a [*TaskError] carrying the UPID and the
	// exit status.
	ErrTaskFailed = errors.New("proxmox: task failed")

	// ErrUnexpectedResponse: a 2xx response whose body is not the JSON
	// envelope, or whose data does not have the shape the call expects
	// (for a task, a UPID that does not name the addressed node and guest;
	// for a task's status, one that is neither running nor stopped). For a
	// write, Proxmox accepted the request but the answer does not say
	// what it started: the error also matches [ErrOutcomeUnknown].
	ErrUnexpectedResponse = errors.New("proxmox: unexpected response")
)

// APIError is a non-2xx answer from Proxmox. Proxmox puts the message in the
// HTTP reason phrase (all versions) and, from PVE 8.3, also in a "message"
// field of the body; parameter errors come as a map from parameter name to
// reason.
//
// Use [errors.Is] with the class sentinels ([ErrNotFound], [ErrLocked],
// [ErrDigestMismatch], [ErrUnauthorized], [ErrForbidden],
// [ErrNotImplemented], [ErrInvalidParameter], [ErrAlreadyRunning],
// [ErrNotRunning], [ErrShrink], [ErrAlreadySized], [ErrTransient],
// [ErrOutcomeUnknown]). The class is
// computed from the exported fields alone, so an APIError built by hand in a
// test classifies exactly like one decoded from the wire.
//
// An APIError is a value; it is safe for concurrent reads.
type APIError struct {
	// StatusCode is the HTTP status, including Proxmox's non-standard
	// 595..599 proxy statuses.
	StatusCode int
	// Method and Path identify the request; Path is relative to
	// /api2/json, for example "/nodes/pve1/qemu/100/status/start".
	Method, Path string
	// Message is the body's "message" field when present, else the reason
	// phrase, with trailing whitespace removed.
	Message string
	// Errors maps parameter names to Proxmox's reasons (HTTP 400), with
	// trailing newlines removed. Nil when the response had none.
	Errors map[string]string
}

// Error renders the request, status, message and any parameter errors in a
// stable order.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("proxmox: ")
	if e.Method != "" || e.Path != "" {
		b.WriteString(e.Method)
		b.WriteByte(' ')
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "%d", e.StatusCode)
	if e.Message != "" {
		b.WriteByte(' ')
		b.WriteString(e.Message)
	}
	if len(e.Errors) > 0 {
		keys := make([]string, 0, len(e.Errors))
		for k := range e.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString(" (")
		for i, k := range keys {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(e.Errors[k])
		}
		b.WriteByte(')')
	}
	return b.String()
}

// Is reports whether e belongs to the class target.
func (e *APIError) Is(target error) bool {
	return classifyAPI(e.StatusCode, e.Method, e.Message, e.Errors).has(target)
}

// TaskError is the error [Client.WaitTask] returns when a task ends with a
// failing exit status. It matches [ErrTaskFailed], and also the class its
// exit status names, for example [ErrLocked] for "VM is locked (backup)" or
// [ErrNotFound] for "Configuration file '...' does not exist".
//
// A TaskError is a value; it is safe for concurrent reads.
type TaskError struct {
	UPID       UPID
	ExitStatus string // Proxmox's exit status: the text after "TASK ERROR: "
}

// Error names the task and its exit status.
func (e *TaskError) Error() string {
	return fmt.Sprintf("proxmox: task %s failed: %s", e.UPID, e.ExitStatus)
}

// Is reports whether e belongs to the class target.
func (e *TaskError) Is(target error) bool {
	if target == ErrTaskFailed {
		return true
	}
	return classifyText(e.ExitStatus).has(target)
}

// class is a set of error classes.
type class uint16

const (
	clNotFound class = 1 << iota
	clLocked
	clDigest
	clUnauthorized
	clForbidden
	clNotImplemented
	clInvalidParameter
	clAlreadyRunning
	clNotRunning
	clTransient
	clOutcomeUnknown
	clShrink
	clAlreadySized
)

func (c class) has(target error) bool {
	switch target {
	case ErrNotFound:
		return c&clNotFound != 0
	case ErrLocked:
		return c&clLocked != 0
	case ErrDigestMismatch:
		return c&clDigest != 0
	case ErrUnauthorized:
		return c&clUnauthorized != 0
	case ErrForbidden:
		return c&clForbidden != 0
	case ErrNotImplemented:
		return c&clNotImplemented != 0
	case ErrInvalidParameter:
		return c&clInvalidParameter != 0
	case ErrAlreadyRunning:
		return c&clAlreadyRunning != 0
	case ErrNotRunning:
		return c&clNotRunning != 0
	case ErrTransient:
		return c&clTransient != 0
	case ErrOutcomeUnknown:
		return c&clOutcomeUnknown != 0
	case ErrShrink:
		return c&clShrink != 0
	case ErrAlreadySized:
		return c&clAlreadySized != 0
	}
	return false
}

// The texts Proxmox uses: PVE::AbstractConfig load_config and check_lock,
// qemu-server's assert_config_exists_on_node (which check_running calls
// before a stop, shutdown or reboot; spelled "... - no such machine" before
// PVE 6.1),
// the "no such task" of pve-manager's task endpoints, the hostname lookup
// of pve-common's PVE::Network, the digest checks of qemu-server and
// PVE::Tools::assert_if_modified, the power handlers, and
// PVE::Tools::lock_file_full.
var (
	reConfigMissing  = regexp.MustCompile(`Configuration file '[^']*' does not exist|\bunable to find configuration file for (?:VM|CT) \d+ (?:on node '[^']*'|- no such machine)`)
	reNoSuchTask     = regexp.MustCompile(`(?i)\bno such task\b`)
	reHostLookup     = regexp.MustCompile(`^hostname lookup '[^']*' failed`)
	reLocked         = regexp.MustCompile(`\b(?:VM|CT)(?: \d+)? is locked\b`)
	reDigest         = regexp.MustCompile(`(?i)checksum mis+match|detected modified configuration`)
	reAlreadyRunning = regexp.MustCompile(`\b(?:VM|CT) \d+ already running\b`)
	reNotRunning     = regexp.MustCompile(`\b(?:VM|CT) \d+ not running\b`)
	reLockTimeout    = regexp.MustCompile(`can't lock file '[^']*' - got timeout`)
	// A guest's config lock file: PVE::QemuConfig and PVE::LXC::Config
	// config_file_lock. Other lock files (storages, say) are not the
	// guest's lock.
	reGuestLockTimeout = regexp.MustCompile(`can't lock file '(?:/var/lock/qemu-server/lock-\d+\.conf|/run/lock/lxc/pve-config-\d+\.lock)' - got timeout`)
	// resize_vm: "shrinking disks is not supported" (QEMU), "unable to
	// shrink disk size" and "disk is already at specified size" (LXC).
	reShrink       = regexp.MustCompile(`\bshrinking disks is not supported\b|\bunable to shrink disk size\b`)
	reAlreadySized = regexp.MustCompile(`\bdisk is already at specified size\b`)
)

// classifyText derives classes from a Proxmox message alone (an HTTP
// message or a task's exit status).
func classifyText(msg string) class {
	var c class
	if reConfigMissing.MatchString(msg) || reNoSuchTask.MatchString(msg) || reHostLookup.MatchString(msg) {
		c |= clNotFound
	}
	if reLocked.MatchString(msg) {
		c |= clLocked
	}
	if reDigest.MatchString(msg) {
		c |= clDigest
	}
	if reAlreadyRunning.MatchString(msg) {
		c |= clAlreadyRunning
	}
	if reNotRunning.MatchString(msg) {
		c |= clNotRunning
	}
	if reLockTimeout.MatchString(msg) {
		c |= clTransient
	}
	if reGuestLockTimeout.MatchString(msg) {
		c |= clLocked
	}
	if reShrink.MatchString(msg) {
		c |= clShrink
	}
	if reAlreadySized.MatchString(msg) {
		c |= clAlreadySized
	}
	return c
}

// classifyAPI derives classes from an HTTP error response.
func classifyAPI(status int, method, msg string, errs map[string]string) class {
	var c class
	switch status {
	case http.StatusBadRequest:
		c |= clInvalidParameter
		// "no such task" comes as a parameter error on the upid.
		if reNoSuchTask.MatchString(errs["upid"]) {
			c |= clNotFound
		}
		return c | classifyText(msg)&clNotFound
	case http.StatusUnauthorized:
		return clUnauthorized
	case http.StatusForbidden:
		return clForbidden
	case http.StatusNotImplemented:
		return clNotImplemented
	case http.StatusTooManyRequests, 595, 596:
		// Refused before it reached the guest's node: nothing happened.
		return clTransient
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, 597, 598, 599:
		c = clTransient
		if !idempotent(method) {
			c |= clOutcomeUnknown
		}
		return c
	}
	return c | classifyText(msg)
}

// idempotent reports whether method can be repeated without effect beyond
// the first. In the Proxmox API only GET qualifies (HEAD is refused).
func idempotent(method string) bool { return method == http.MethodGet || method == "" }

// answerError is a 2xx answer the client cannot use. To a write it means
// that Proxmox accepted the request, but not what it did: the outcome is
// unknown.
type answerError struct {
	method, path string
	err          error // wraps ErrUnexpectedResponse
}

// answerErr wraps err, which wraps ErrUnexpectedResponse, for the answer
// to method on the (escaped) API path.
func answerErr(method, path string, err error) error {
	return &answerError{method: method, path: displayPath(path), err: err}
}

func (e *answerError) Error() string {
	return fmt.Sprintf("proxmox: %s %s: %v", e.method, e.path, e.err)
}

func (e *answerError) Unwrap() error { return e.err }

func (e *answerError) Is(target error) bool {
	return target == ErrOutcomeUnknown && !idempotent(e.method)
}

// transportError is a request that got no HTTP response: a network failure,
// a TLS failure, or the caller's context ending.
type transportError struct {
	method, path string
	err          error
	unsent       bool // provably never reached Proxmox
	ctxDone      bool // the caller's context ended
}

func (e *transportError) Error() string {
	var state string
	switch {
	case e.unsent:
		state = "not sent"
	case idempotent(e.method):
		state = "failed"
	default:
		state = "outcome unknown"
	}
	return fmt.Sprintf("proxmox: %s %s: request %s: %v", e.method, e.path, state, e.err)
}

func (e *transportError) Unwrap() error { return e.err }

func (e *transportError) Is(target error) bool {
	switch target {
	case ErrTransient:
		return !e.ctxDone && !isTLSVerifyErr(e.err)
	case ErrOutcomeUnknown:
		return !e.unsent && !idempotent(e.method)
	}
	return false
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// ErrFingerprintMismatch is wrapped by the error of a request to a server
// whose certificate matches none of the fingerprints pinned with
// [WithFingerprint]: the server was replaced, its certificate renewed, or
// the connection intercepted. No request is sent over such a connection,
// and retrying cannot help.
var ErrFingerprintMismatch = errors.New("proxmox: server certificate does not match any pinned SHA-256 fingerprint")

// isTLSVerifyErr reports a certificate the client refused or a peer that
// does not speak TLS: repeating the request cannot help.
func isTLSVerifyErr(err error) bool {
	var (
		certErr  *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invalid  x509.CertificateInvalidError
		alertErr tls.AlertError
		recErr   tls.RecordHeaderError
	)
	return errors.Is(err, ErrFingerprintMismatch) ||
		errors.As(err, &certErr) || errors.As(err, &unknown) || errors.As(err, &hostErr) ||
		errors.As(err, &invalid) || errors.As(err, &alertErr) || errors.As(err, &recErr)
}
