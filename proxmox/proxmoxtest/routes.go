package proxmoxtest

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/guestward/guestward/proxmox"
)

// param is the schema of one request parameter.
type param struct {
	kind     pkind
	required bool
	enum     []string
	min, max *float64
	maxLen   int
	check    func(string) string // format check, returns the error text
	rootOnly bool                // "Only root may use this option."
}

// validate checks a value in JSONSchema's order: type, format, length,
// range, enumeration.
func (p param) validate(v string) string {
	if msg := checkScalar(p.kind, v, nil, nil, nil); msg != "" {
		return msg
	}
	if p.check != nil {
		if msg := p.check(v); msg != "" {
			return msg
		}
	}
	if p.maxLen > 0 && utf8.RuneCountInString(v) > p.maxLen {
		return "value may only be " + strconv.Itoa(p.maxLen) + " characters long"
	}
	if (p.kind == pInt || p.kind == pNum) && (p.min != nil || p.max != nil) {
		if msg := checkScalar(pNum, v, nil, p.min, p.max); msg != "" {
			return msg
		}
	}
	if len(p.enum) > 0 {
		return checkScalar(pStr, v, p.enum, nil, nil)
	}
	return ""
}

var (
	pBoolOpt = param{kind: pBool}
	pIntOpt  = param{kind: pInt}
	pIntMin0 = param{kind: pInt, min: fp(0)}
	pStrOpt  = param{kind: pStr}
	pRoot    = param{kind: pStr, rootOnly: true}
	pRootB   = param{kind: pBool, rootOnly: true}
)

// endpoint is one method on one path.
type endpoint struct {
	params  map[string]param
	options proxmox.GuestType // non-empty: the guest type's config options are parameters too
	handler func(*call) (result, *apiErr)
}

type routeMatch struct {
	endpoints map[string]*endpoint
	uri       map[string]string
	guest     *proxmox.Ref
	public    bool
}

func methods(kv ...any) map[string]*endpoint {
	m := map[string]*endpoint{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1].(*endpoint)
	}
	return m
}

func ep(h func(*call) (result, *apiErr), params map[string]param) *endpoint {
	return &endpoint{params: params, handler: h}
}

// route maps an API path onto its endpoints, the way PVE's handler tree
// does; unknown paths get a match without endpoints (501 after auth).
func (s *Server) route(c *call) routeMatch {
	segs := strings.Split(strings.TrimPrefix(c.path, "/"), "/")
	rm := routeMatch{uri: map[string]string{}}
	v := s.cfg.version
	switch {
	case c.path == "":
		rm.endpoints = methods(http.MethodGet, ep(s.hRootIndex, nil))
	case len(segs) == 1 && segs[0] == "version":
		rm.endpoints = methods(http.MethodGet, ep(s.hVersion, nil))
	case len(segs) == 2 && segs[0] == "access" && segs[1] == "ticket":
		rm.public = true
		rm.endpoints = methods(
			http.MethodGet, ep(func(*call) (result, *apiErr) { return result{data: nullData}, nil }, nil),
			http.MethodPost, ep(s.hLogin, map[string]param{
				"username": {kind: pStr, required: true, maxLen: 64}, "password": {kind: pStr, required: true},
				"realm": pStrOpt, "otp": pStrOpt, "path": pStrOpt, "privs": pStrOpt, "new-format": pBoolOpt,
				"tfa-challenge": pStrOpt,
			}))
	case len(segs) == 2 && segs[0] == "cluster" && segs[1] == "resources":
		rm.endpoints = methods(http.MethodGet, ep(s.hResources, map[string]param{
			"type": {kind: pStr, enum: []string{"vm", "storage", "node", "sdn"}},
		}))
	case segs[0] != "nodes":
	case len(segs) == 1:
		rm.endpoints = methods(http.MethodGet, ep(s.hNodes, nil))
	default:
		node := segs[1]
		if node == "localhost" {
			node = s.nodes[0].name // the node serving the API
		}
		rm.uri["node"] = node
		s.routeNode(c, segs[2:], &rm, v)
	}
	return rm
}

func (s *Server) routeNode(c *call, segs []string, rm *routeMatch, v version) {
	node := rm.uri["node"]
	if len(segs) == 0 {
		rm.endpoints = methods(http.MethodGet, ep(s.hNodeIndex, nil))
		return
	}
	switch segs[0] {
	case "qemu", "lxc":
		t := proxmox.GuestType(segs[0])
		if len(segs) == 1 {
			if t == proxmox.QEMU {
				rm.endpoints = methods(http.MethodGet, ep(s.hList, map[string]param{"full": pBoolOpt}))
			} else {
				rm.endpoints = methods(http.MethodGet, ep(s.hList, nil))
			}
			c.ref.Type = t
			return
		}
		rm.uri["vmid"] = segs[1]
		ref := proxmox.Ref{Node: node, Type: t}
		if n, err := strconv.Atoi(segs[1]); err == nil {
			ref.VMID = n
		}
		c.ref = ref
		rm.guest = &ref
		s.routeGuest(segs[2:], rm, t, v)
	case "tasks":
		if len(segs) == 1 {
			rm.endpoints = methods(http.MethodGet, ep(s.hTaskList, map[string]param{
				"start": pIntMin0, "limit": pIntMin0, "userfilter": pStrOpt, "typefilter": pStrOpt,
				"vmid": {kind: pInt, check: checkVMID}, "errors": pBoolOpt,
				"source": {kind: pStr, enum: []string{"archive", "active", "all"}},
				"since":  pIntOpt, "until": pIntOpt, "statusfilter": {kind: pStr, check: checkStatusFilter},
			}))
			return
		}
		upid := segs[1]
		rm.uri["upid"] = upid
		s.mu.Lock()
		if t, ok := s.taskByUPID[proxmox.UPID(upid)]; ok {
			g := t.guest
			rm.guest = &g
		}
		s.mu.Unlock()
		switch {
		case len(segs) == 2:
			rm.endpoints = methods(
				http.MethodGet, ep(s.hTaskIndex, nil),
				http.MethodDelete, ep(s.hTaskStop, nil))
		case len(segs) == 3 && segs[2] == "status":
			rm.endpoints = methods(http.MethodGet, ep(s.hTaskStatus, nil))
		case len(segs) == 3 && segs[2] == "log":
			rm.endpoints = methods(http.MethodGet, ep(s.hTaskLog, map[string]param{
				"start": pIntMin0, "limit": pIntMin0, "download": pBoolOpt,
			}))
		}
	}
}

func (s *Server) routeGuest(segs []string, rm *routeMatch, t proxmox.GuestType, v version) {
	qemu := t == proxmox.QEMU
	if len(segs) == 0 {
		rm.endpoints = methods(http.MethodGet, ep(s.hGuestIndex, nil))
		return
	}
	switch {
	case len(segs) == 1 && segs[0] == "config":
		update := map[string]param{
			"delete": {kind: pStr, check: checkConfigIDList},
			"revert": {kind: pStr, check: checkConfigIDList},
			"digest": {kind: pStr, maxLen: 40},
		}
		if qemu {
			update["skiplock"] = pRootB
			update["force"] = pBoolOpt
		}
		rm.endpoints = methods(http.MethodGet, ep(s.hConfig, map[string]param{"current": pBoolOpt, "snapshot": pStrOpt}))
		put := &endpoint{params: update, options: t, handler: s.hConfigPut}
		rm.endpoints[http.MethodPut] = put
		if qemu {
			post := map[string]param{"background_delay": {kind: pInt, min: fp(1), max: fp(30)}}
			for k, p := range update {
				post[k] = p
			}
			rm.endpoints[http.MethodPost] = &endpoint{params: post, options: t, handler: s.hConfigPost}
		}
	case len(segs) == 1 && segs[0] == "pending":
		rm.endpoints = methods(http.MethodGet, ep(s.hPending, nil))
	case len(segs) == 1 && segs[0] == "status":
		rm.endpoints = methods(http.MethodGet, ep(s.hStatusIndex, nil))
	case len(segs) == 2 && segs[0] == "status" && segs[1] == "current":
		rm.endpoints = methods(http.MethodGet, ep(s.hStatusCurrent, nil))
	case len(segs) == 2 && segs[0] == "status":
		var params map[string]param
		switch segs[1] {
		case "start":
			if qemu {
				params = map[string]param{"skiplock": pRootB, "timeout": pIntMin0, "machine": pRoot,
					"force-cpu": pRoot, "stateuri": pRoot, "migratedfrom": pRoot, "migration_type": pRoot,
					"migration_network": pRoot, "targetstorage": pRoot}
				if v.major >= 8 {
					params["nets-host-mtu"] = pStrOpt
				}
			} else {
				params = map[string]param{"skiplock": pRootB, "debug": pBoolOpt}
			}
		case "stop":
			if qemu {
				params = map[string]param{"skiplock": pRootB, "timeout": pIntMin0, "keepActive": pRootB, "migratedfrom": pRoot}
			} else {
				params = map[string]param{"skiplock": pRootB}
			}
			if v.overruleShutdown() {
				params["overrule-shutdown"] = pBoolOpt
			}
		case "shutdown":
			if qemu {
				params = map[string]param{"skiplock": pRootB, "timeout": pIntMin0, "forceStop": pBoolOpt, "keepActive": pRootB}
			} else {
				params = map[string]param{"timeout": pIntMin0, "forceStop": pBoolOpt}
			}
		case "reboot":
			params = map[string]param{"timeout": pIntMin0}
		default:
			return
		}
		action := segs[1]
		rm.endpoints = methods(http.MethodPost, ep(func(c *call) (result, *apiErr) { return s.hPower(c, action) }, params))
	}
}

var vmidRE = regexp.MustCompile(`^[1-9][0-9]{2,8}$`)

func checkVMID(v string) string {
	if !vmidRE.MatchString(v) {
		return "invalid format - value does not look like a valid VM ID\n"
	}
	return ""
}

var statusTypeRE = regexp.MustCompile(`(?i)^(ok|error|warning|unknown)$`)

func checkStatusFilter(v string) string {
	for _, s := range splitList(v) {
		if !statusTypeRE.MatchString(s) {
			return "invalid format - invalid status '" + s + "'\n"
		}
	}
	return ""
}

const undefinedProp = "property is not defined in schema and the schema does not allow additional properties"

// validate is the JSON-schema step: path parameters repeated in the query or
// body must agree, every parameter must be known and well-formed, required
// ones present, and root-only ones used only by root@pam with a ticket.
func (s *Server) validate(c *call, e *endpoint) *apiErr {
	errs := map[string]string{}
	for k, v := range c.uri {
		if pv, ok := c.params[k]; ok {
			if pv != v {
				errs[k] = "duplicate parameter (already defined in URI) with conflicting values!"
			}
			delete(c.params, k)
		}
	}
	if v, ok := c.uri["vmid"]; ok {
		if !isInteger(v) {
			errs["vmid"] = "type check ('integer') failed - got '" + v + "'"
		} else if msg := checkVMID(v); msg != "" {
			errs["vmid"] = msg
		}
	}
	for k, v := range c.params {
		var msg string
		if p, ok := e.params[k]; ok {
			msg = p.validate(v)
		} else if e.options != "" {
			msg = s.cfg.version.checkOption(e.options, k, v)
		} else {
			msg = undefinedProp
		}
		if msg != "" {
			errs[k] = msg
		}
	}
	for k, p := range e.params {
		if _, ok := c.params[k]; p.required && !ok {
			errs[k] = "property is missing and it is not optional"
		}
	}
	if _, ok := c.params["force"]; ok && e.options == proxmox.QEMU {
		if _, ok := c.params["delete"]; !ok {
			errs["delete"] = "missing property - 'force' requires this property"
		}
	}
	if len(errs) > 0 {
		return paramErr(errs)
	}
	for k, p := range e.params {
		if v, ok := c.params[k]; ok && p.rootOnly && v != "0" && v != "" && c.who.id != "root@pam" {
			return paramErr1(k, "Only root may use this option.")
		}
	}
	return nil
}
