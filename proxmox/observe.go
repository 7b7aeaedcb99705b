package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RequestInfo describes one attempt at an API request, for metrics and
// traces; see [WithRequestObserver]. It never holds a credential, a ticket,
// a request body, a query or an identifier taken from the path: only the
// shape of the request and how it went.
type RequestInfo struct {
	// Method is the HTTP method: GET, POST, PUT or DELETE.
	Method string
	// Path is the request's path below /api2/json with every identifier
	// replaced by its name in braces, so that it takes few values:
	// "/nodes/{node}/qemu/{vmid}/status/current",
	// "/nodes/{node}/tasks/{upid}/status", "/cluster/resources".
	Path string
	// Node is the node the path addresses, "" for a cluster-wide request
	// (the guest list, a login). Node names are few and chosen by the
	// cluster's administrator.
	Node string
	// Status is the HTTP status of the answer, 0 when none arrived.
	Status int
	// ErrorClass says why no answer arrived, or why its body could not
	// be read: "canceled" (the caller's context ended), "timeout", "tls"
	// (the server's certificate was refused), "network" (anything else).
	// It is "" when an answer arrived and was read, whatever its status.
	ErrorClass string
	// Attempt counts the attempts at this request, from 1.
	Attempt int
	// Retried is true when the client sent the request again after this
	// attempt (see [WithRetry] for when it does).
	Retried bool
	// Duration runs from the attempt's sending to its answer's body read
	// in full, or to its failure. For an attempt that was retried it ends
	// with the answer's headers: the client discards the rest.
	Duration time.Duration
}

// WithRequestObserver installs fn, called once for every attempt at every
// API request the client makes, retries and logins included, after the
// attempt's answer was read (or the attempt failed). It is the seam for
// request metrics (counts by method, path, node and status, latency) and
// traces; the client itself depends on no metrics library.
//
// fn runs on the goroutine that made the request, before the call that
// made it returns; it must be quick and safe for concurrent use. A nil fn
// is refused. Without this option the client does no extra work.
func WithRequestObserver(fn func(RequestInfo)) Option {
	return option{
		desc: "proxmox.WithRequestObserver(func)",
		fn: func(s *settings) error {
			if fn == nil {
				return fmt.Errorf("%w: WithRequestObserver: nil func", ErrInvalidOption)
			}
			s.observe = fn
			return nil
		},
	}
}

// attemptObs follows the attempts at one request. The retry hooks and
// exchange all run on the goroutine that sends the request, one after the
// other, so it needs no lock.
type attemptObs struct {
	info    RequestInfo // the attempt in progress, once begun
	start   time.Time
	begun   bool // an attempt began and was not reported yet
	checked bool // checkRetry saw how it went
}

func newAttemptObs(r *request) *attemptObs {
	path, node := PathTemplate(r.path)
	return &attemptObs{info: RequestInfo{Method: r.method, Path: path, Node: node}}
}

// attemptBegins reports the attempt before this one, which the client is
// sending again, and starts timing the new one.
func (c *Client) attemptBegins(p *policy, retry int) {
	o := p.obs
	if o == nil {
		return
	}
	if o.begun && o.checked {
		o.info.Retried = true
		c.observe(o.info)
	}
	o.info.Attempt, o.info.Status, o.info.ErrorClass, o.info.Retried = retry+1, 0, "", false
	o.info.Duration = 0
	o.start, o.begun, o.checked = time.Now(), true, false
}

// checkRetryObserved is checkRetry, noting how the attempt went.
func checkRetryObserved(ctx context.Context, resp *http.Response, err error) (bool, error) {
	retry, rerr := checkRetry(ctx, resp, err)
	if p, _ := ctx.Value(policyKey{}).(*policy); p != nil && p.obs != nil && p.obs.begun {
		o := p.obs
		o.info.Duration = time.Since(o.start)
		o.info.Status, o.info.ErrorClass = 0, errorClass(err)
		if resp != nil && err == nil {
			o.info.Status = resp.StatusCode
		}
		o.checked = true
	}
	return retry, rerr
}

// attemptEnded reports the last attempt of a request. read is true when
// its answer's body was read, readErr the error reading it.
func (c *Client) attemptEnded(p *policy, read bool, readErr error) {
	o := p.obs
	if o == nil || !o.begun {
		return
	}
	o.begun = false
	if !o.checked {
		// The client gave up before it could tell (its context ended
		// while it waited to retry, say): the attempt was reported
		// already, as retried, or never sent.
		return
	}
	if read {
		// Its time includes reading the body.
		o.info.Duration = time.Since(o.start)
		if readErr != nil {
			o.info.ErrorClass = errorClass(readErr)
		}
	}
	c.observe(o.info)
}

// errorClass sorts a transport error into a few classes (see
// RequestInfo.ErrorClass).
func errorClass(err error) string {
	if err == nil {
		return ""
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case isTLSVerifyErr(err):
		return "tls"
	}
	return "network"
}

// PathTemplate returns an API path (below /api2/json, escaped or not)
// with its identifiers replaced by their names in braces, and the node it
// addresses ("" for none). Segments are named by the segment before them,
// as the Proxmox API lays out its paths: after "nodes" a {node}, after
// "qemu" or "lxc" a {vmid}, after "tasks" a {upid}, after "storage" a
// {storage}, after "content" a {volume}, after "snapshot" a {snapname},
// after "ha"'s "resources" a {sid}; any other segment that is not a plain
// lower-case word ("status", "config", "current") becomes {id}. The result
// holds no value from the path but the node's name.
func PathTemplate(path string) (template, node string) {
	path, _, _ = strings.Cut(path, "?")
	segs := strings.Split(strings.Trim(path, "/"), "/")
	var b strings.Builder
	for i, s := range segs {
		if s == "" {
			continue
		}
		prev := ""
		if i > 0 {
			prev = segs[i-1]
		}
		b.WriteByte('/')
		switch {
		case prev == "nodes" && i == 1:
			if n, err := url.PathUnescape(s); err == nil && plainNode(n) {
				node = n
			} else {
				node = "{invalid}"
			}
			b.WriteString("{node}")
		case (prev == "qemu" || prev == "lxc") && i == 3 && segs[0] == "nodes":
			b.WriteString("{vmid}")
		case prev == "tasks":
			b.WriteString("{upid}")
		case prev == "storage":
			b.WriteString("{storage}")
		case prev == "content":
			b.WriteString("{volume}")
		case prev == "snapshot":
			b.WriteString("{snapname}")
		case prev == "resources" && i >= 2 && segs[i-2] == "ha":
			b.WriteString("{sid}")
		case plainWord(s):
			b.WriteString(s)
		default:
			b.WriteString("{id}")
		}
	}
	if b.Len() == 0 {
		return "/", ""
	}
	return b.String(), node
}

// plainWord reports whether s is a fixed segment of an API path: a short
// lower-case word, possibly with digits, '-' or '_' after its first letter.
func plainWord(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// plainNode reports whether s has the shape of a node name (a host name's
// first label), so that nothing else is ever reported as one.
func plainNode(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
