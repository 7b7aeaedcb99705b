package proxmoxtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// apiErr is an error answer. Its message goes into the status line (first
// line only, as pve-api-daemon does) and, from PVE 8.3, into the body.
type apiErr struct {
	status int
	msg    string            // as Perl holds it, usually ending in "\n"
	errors map[string]string // parameter errors (400)
	layer  bool              // raised by the HTTP layer itself, not a handler
}

func (e *apiErr) Error() string { return fmt.Sprintf("%d %s", e.status, strings.TrimSpace(e.msg)) }

// die is a handler's die "msg\n": 500 with msg as the reason.
func die(format string, args ...any) *apiErr {
	return &apiErr{status: 500, msg: fmt.Sprintf(format, args...) + "\n"}
}

// paramErr is raise_param_exc: 400 "Parameter verification failed.".
func paramErr(errs map[string]string) *apiErr {
	return &apiErr{status: 400, msg: "Parameter verification failed.\n", errors: errs}
}

func paramErr1(key, msg string) *apiErr { return paramErr(map[string]string{key: msg}) }

func layerErr(status int, msg string) *apiErr {
	return &apiErr{status: status, msg: msg + "\n", layer: true}
}

func notImplemented(method, apiPath string) *apiErr {
	return &apiErr{status: 501, msg: fmt.Sprintf("Method '%s %s' not implemented\n", method, apiPath)}
}

// result is a success answer: the "data" value, pre-encoded, and the
// optional "total" the task endpoints add.
type result struct {
	data     []byte
	total    int
	hasTotal bool
}

var nullData = []byte("null")

func jsonResult(v any) result {
	b, err := json.Marshal(v)
	if err != nil {
		// Every value handlers build is marshalable; keep the envelope valid.
		return result{data: nullData}
	}
	return result{data: b}
}

// call is one request on its way through the server.
type call struct {
	s      *Server
	r      *http.Request
	method string
	path   string            // API path below /api2/json, no trailing slash
	params map[string]string // merged query + body parameters
	undef  map[string]bool   // parameters present without a value ("tags=")
	uri    map[string]string // parameters taken from the path
	who    principal
	fault  *Fault
	node   *node
	ref    proxmox.Ref // for guest endpoints
}

func (s *Server) enter() bool {
	s.enterMu.RLock()
	defer s.enterMu.RUnlock()
	if s.entryOff {
		return false
	}
	s.handlers.Add(1)
	return true
}

// ServeHTTP serves the Proxmox API. It is exported so the server can sit
// behind another http.Handler (a recording proxy, say); [NewServer]
// already serves it over TLS.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		dropConn(w)
		return
	}
	defer s.handlers.Done()
	leave, ok := s.loadEnter(r)
	if !ok {
		dropConn(w)
		return
	}
	defer leave()
	rec := Request{Time: s.now(), Method: r.Method, Path: r.URL.Path}
	c := &call{s: s, r: r, method: r.Method}
	res, aerr, drop := s.serve(c, &rec)
	rec.Auth = c.who.id
	switch {
	case drop:
		rec.Dropped = true
	case aerr != nil:
		rec.Status = aerr.status
	default:
		rec.Status = http.StatusOK
	}
	for _, k := range []string{"password", "cipassword"} {
		if _, ok := rec.Params[k]; ok {
			rec.Params[k] = "<redacted>"
		}
	}
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		s.log.Debug("proxmoxtest: request", "method", rec.Method, "path", rec.Path, "status", rec.Status, "auth", rec.Auth)
	}
	s.record(rec)
	switch {
	case drop:
		dropConn(w)
	case aerr != nil:
		if aerr.status == 401 && s.cfg.authDelay > 0 {
			s.sleep(r, s.cfg.authDelay)
		}
		s.writeError(w, aerr)
	default:
		s.writeResult(w, res)
	}
}

// sleep waits d unless the request or the server ends first.
func (s *Server) sleep(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	case <-s.closing:
	}
}

// serve runs a request through the layers pve-api-daemon has: HTTP checks,
// faults, authentication, routing, node proxying, parameter validation and
// the handler. drop reports a fault asking to drop the connection.
func (s *Server) serve(c *call, rec *Request) (res result, aerr *apiErr, drop bool) {
	r := c.r
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete:
	default:
		return res, layerErr(501, fmt.Sprintf("method '%s' not available", r.Method)), false
	}
	if len(r.TransferEncoding) > 0 {
		return res, layerErr(501, "chunked transfer encoding not supported"), false
	}
	limit := s.cfg.version.bodyLimit()
	var body []byte
	if r.ContentLength != 0 {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, limit+1))
		if err != nil {
			return res, nil, true // the client went away mid-body
		}
	}
	if len(body) > 0 && (r.Method == http.MethodGet || r.Method == http.MethodDelete) {
		return res, layerErr(501, fmt.Sprintf("Unexpected content for method '%s'", r.Method)), false
	}
	if int64(len(body)) > limit {
		return res, layerErr(501, "for data too large"), false
	}
	rawPath := r.URL.Path
	if !strings.HasPrefix(rawPath, "/api2/") {
		return res, layerErr(501, "no such uri"), false
	}
	rest := strings.TrimPrefix(rawPath, "/api2/")
	format, apiPath, _ := strings.Cut(rest, "/")
	if format == "" {
		return res, layerErr(501, "no such uri"), false
	}
	if format != "json" {
		return res, layerErr(501, "no formatter for uri "+rawPath), false
	}
	c.path = "/" + strings.Trim(apiPath, "/")
	if c.path == "/" {
		c.path = ""
	}
	rec.Path = c.path
	if c.path == "" {
		rec.Path = "/"
	}

	params, undef := map[string]string{}, map[string]bool{}
	if len(body) > 0 {
		if strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/json") {
			bad, err := decodeJSONBody(body, params)
			if err != nil {
				return res, layerErr(400, "invalid JSON body"), false
			}
			if len(bad) > 0 {
				errs := map[string]string{}
				for k, kind := range bad {
					errs[k] = fmt.Sprintf("type check ('string') failed - got %s", kind)
				}
				return res, paramErr(errs), false
			}
		} else {
			decodeForm(string(body), params, undef)
		}
	}
	query := map[string]string{}
	decodeForm(r.URL.RawQuery, query, undef)
	for k, v := range query {
		params[k] = v // query parameters override body keys
	}
	for k := range undef {
		if _, ok := params[k]; ok {
			delete(undef, k)
		}
	}
	c.params, c.undef = params, undef
	rec.Params = cloneMap(params)

	rt := s.route(c)
	var guestRef *proxmox.Ref
	if rt.guest != nil {
		guestRef = rt.guest
	}
	if f := s.matchFault(r.Method, rec.Path, guestRef); f != nil {
		c.fault = f
		if f.Before != nil {
			f.Before()
		}
		if f.Wait != nil {
			select {
			case <-f.Wait:
			case <-r.Context().Done():
				return res, nil, true
			case <-s.closing:
				return res, nil, true
			}
		}
		if f.Delay > 0 {
			s.sleep(r, f.Delay)
		}
		if f.Drop == DropBeforeHandling {
			return res, nil, true
		}
		if f.Status != 0 {
			msg := f.Message
			if msg == "" && f.Status == http.StatusForbidden {
				msg = forbiddenText(r.Method, rec.Path)
			}
			if msg == "" {
				msg = http.StatusText(f.Status)
				if msg == "" {
					msg = "Error"
				}
			}
			return res, &apiErr{status: f.Status, msg: msg + "\n"}, false
		}
	}

	if !rt.public {
		who, aerr := s.authenticate(r)
		if aerr != nil {
			return res, aerr, false
		}
		c.who = who
	}
	ep := rt.endpoints[r.Method]
	if ep == nil {
		return res, notImplemented(r.Method, c.path), false
	}
	if name, ok := rt.uri["node"]; ok {
		if aerr := s.resolveNode(c, name); aerr != nil {
			return res, aerr, false
		}
	}
	c.uri = rt.uri
	if aerr := s.validate(c, ep); aerr != nil {
		return res, aerr, false
	}
	res, aerr = ep.handler(c)
	rec.Handled = true
	if c.fault != nil {
		if c.fault.After != nil {
			c.fault.After()
		}
		if c.fault.Drop == DropAfterHandling {
			return res, nil, true
		}
	}
	return res, aerr, false
}

// resolveNode does what the proxy step of pve-manager does for a request
// naming a node: check the name, resolve it, and fail as the proxy fails if
// the node is unreachable.
func (s *Server) resolveNode(c *call, name string) *apiErr {
	if !proxmox.ValidNodeName(name) {
		return paramErr1("node", "invalid format - value does not look like a valid node name\n")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodeByName[name]
	if !ok {
		return die("hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", name, name)
	}
	if !n.online {
		return &apiErr{status: 595, msg: "No route to host\n"}
	}
	c.node = n
	return nil
}

var respHeaders = func() http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Server", "pve-api-daemon/3.0")
	h.Set("Cache-Control", "max-age=0")
	h.Set("Pragma", "no-cache")
	return h
}()

func (s *Server) writeResult(w http.ResponseWriter, res result) {
	var b bytes.Buffer
	b.Grow(len(res.data) + 32)
	b.WriteString(`{"data":`)
	if res.data == nil {
		b.Write(nullData)
	} else {
		b.Write(res.data)
	}
	if res.hasTotal {
		b.WriteString(`,"total":`)
		b.WriteString(strconv.Itoa(res.total))
	}
	b.WriteByte('}')
	h := w.Header()
	for k, v := range respHeaders {
		h[k] = v // shared read-only slices; net/http only reads them
	}
	h["Expires"] = []string{time.Now().UTC().Format(http.TimeFormat)}
	h["Content-Length"] = []string{strconv.Itoa(b.Len())}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
}

// errorBody is what follows an error status line: nothing for 401 and the
// proxy's 59x, nothing for HTTP-layer errors before PVE 8.3, otherwise
// {"data":null} with the errors map and, from 8.3, the message.
func (s *Server) errorBody(e *apiErr) []byte {
	if e.status == 401 || e.status >= 590 {
		return nil
	}
	withMsg := s.cfg.version.errorMessageField()
	if e.layer && !withMsg {
		return nil
	}
	var b bytes.Buffer
	b.WriteString(`{"data":null`)
	if len(e.errors) > 0 {
		eb, _ := json.Marshal(e.errors)
		b.WriteString(`,"errors":`)
		b.Write(eb)
	}
	if withMsg {
		mb, _ := json.Marshal(e.msg)
		b.WriteString(`,"message":`)
		b.Write(mb)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// writeError sends an error the way pve-api-daemon does: the first line of
// the message as the reason phrase, then the connection is closed. Go's
// ResponseWriter cannot set a reason phrase, so the response is written on
// the hijacked connection.
func (s *Server) writeError(w http.ResponseWriter, e *apiErr) {
	status := e.status
	reason := strings.TrimRight(e.msg, "\n")
	if i := strings.IndexByte(reason, '\n'); i >= 0 {
		reason = reason[:i]
	}
	body := s.errorBody(e)
	if strings.ContainsRune(reason, '\r') {
		status, reason, body = 400, "Bad Request", nil
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		h := w.Header()
		for k, v := range respHeaders {
			h[k] = v
		}
		h.Set("Connection", "close")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		_, _ = w.Write(body)
		return
	}
	conn, bufrw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	now := time.Now().UTC().Format(http.TimeFormat)
	var out bytes.Buffer
	fmt.Fprintf(&out, "HTTP/1.1 %d %s\r\n", status, reason)
	fmt.Fprintf(&out, "Cache-Control: max-age=0\r\nConnection: close\r\nDate: %s\r\nPragma: no-cache\r\nServer: pve-api-daemon/3.0\r\n", now)
	fmt.Fprintf(&out, "Content-Length: %d\r\n", len(body))
	if len(body) > 0 {
		out.WriteString("Content-Type: application/json;charset=UTF-8\r\n")
	}
	fmt.Fprintf(&out, "Expires: %s\r\n\r\n", now)
	out.Write(body)
	writeAll(bufrw, out.Bytes())
}

func writeAll(bw *bufio.ReadWriter, b []byte) {
	_, _ = bw.Write(b)
	_ = bw.Flush()
}

// dropConn closes the request's connection without an answer.
func dropConn(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	// Not reachable through NewServer (HTTP/1.1 connections can always be
	// hijacked). Behind a foreign handler, ErrAbortHandler is net/http's
	// documented way to abort a response: the server recovers it and closes
	// the connection without logging.
	panic(http.ErrAbortHandler)
}
