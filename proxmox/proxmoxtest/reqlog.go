package proxmoxtest

import (
	"time"
)

// Request is one entry of the request log. It never holds credentials: the
// Authorization, Cookie and CSRFPreventionToken headers are not recorded,
// and the "password" (login) and "cipassword" (cloud-init) parameters are
// replaced by "<redacted>". Entries returned by [Server.Requests] are
// copies owned by the caller.
type Request struct {
	Time   time.Time         // when the server received it, on the server's Clock
	Method string            // HTTP method
	Path   string            // API path below APIPath, e.g. "/nodes/pve/qemu/100/config"
	Params map[string]string // query and body parameters, merged as Proxmox merges them
	Auth   string            // authenticated id ("root@pam!guestward", "root@pam"), "" if none
	Status int               // status sent; 0 if the connection was dropped
	// Dropped is set when a fault dropped the connection; Handled tells
	// whether the request was executed before that.
	Dropped bool
	Handled bool
}

// Requests returns the request log, oldest first. With [WithRequestLogLimit]
// n, the log holds at most n entries: when it is full, the older half is
// discarded.
func (s *Server) Requests() []Request {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	out := make([]Request, len(s.reqlog))
	for i, r := range s.reqlog {
		r.Params = cloneMap(r.Params)
		out[i] = r
	}
	return out
}

// ResetRequests empties the request log.
func (s *Server) ResetRequests() {
	s.logMu.Lock()
	s.reqlog = nil
	s.logMu.Unlock()
}

func (s *Server) record(r Request) {
	limit := s.cfg.logLimit
	if limit == 0 {
		return
	}
	s.logMu.Lock()
	if len(s.reqlog) >= limit {
		// Drop the older half in one go so appends stay amortised O(1).
		keep := limit / 2
		n := copy(s.reqlog, s.reqlog[len(s.reqlog)-keep:])
		clear(s.reqlog[n:])
		s.reqlog = s.reqlog[:n]
	}
	s.reqlog = append(s.reqlog, r)
	s.logMu.Unlock()
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
