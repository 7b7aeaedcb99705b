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

// routeTable holds every endpoint, built once per server because parameter
// schemas depend on the emulated version.
type routeTable struct {
	root, version, ticket, resources, nodes, nodeIndex map[string]*endpoint
	taskList, taskIndex, taskStatus, taskLog           map[string]*endpoint
	list                                               map[proxmox.GuestType]map[string]*endpoint
	// guest maps a guest type and the path below the guest ("", "config",
	// "status/start", ...) to its endpoints.
	guest map[proxmox.GuestType]map[string]map[string]*endpoint
}

func (s *Server) buildRoutes() *routeTable {
	v := s.cfg.version
	rt := &routeTable{
		root:    methods(http.MethodGet, ep(s.hRootIndex, nil)),
		version: methods(http.MethodGet, ep(s.hVersion, nil)),
		ticket: methods(
			http.MethodGet, ep(func(*call) (result, *apiErr) { return result{data: nullData}, nil }, nil),
			http.MethodPost, ep(s.hLogin, map[string]param{
				"username": {kind: pStr, required: true, maxLen: 64}, "password": {kind: pStr, required: true},
				"realm": pStrOpt, "otp": pStrOpt, "path": pStrOpt, "privs": pStrOpt, "new-format": pBoolOpt,
				"tfa-challenge": pStrOpt,
			})),
		resources: methods(http.MethodGet, ep(s.hResources, map[string]param{
			"type": {kind: pStr, enum: []string{"vm", "storage", "node", "sdn"}},
		})),
		nodes:     methods(http.MethodGet, ep(s.hNodes, nil)),
		nodeIndex: methods(http.MethodGet, ep(s.hNodeIndex, nil)),
		taskList: methods(http.MethodGet, ep(s.hTaskList, map[string]param{
			"start": pIntMin0, "limit": pIntMin0, "userfilter": pStrOpt, "typefilter": pStrOpt,
			"vmid": {kind: pInt, check: checkVMID}, "errors": pBoolOpt,
			"source": {kind: pStr, enum: []string{"archive", "active", "all"}},
			"since":  pIntOpt, "until": pIntOpt, "statusfilter": {kind: pStr, check: checkStatusFilter},
		})),
		taskIndex: methods(
			http.MethodGet, ep(s.hTaskIndex, nil),
			http.MethodDelete, ep(s.hTaskStop, nil)),
		taskStatus: methods(http.MethodGet, ep(s.hTaskStatus, nil)),
		taskLog: methods(http.MethodGet, ep(s.hTaskLog, map[string]param{
			"start": pIntMin0, "limit": pIntMin0, "download": pBoolOpt,
		})),
		list: map[proxmox.GuestType]map[string]*endpoint{
			proxmox.QEMU: methods(http.MethodGet, ep(s.hList, map[string]param{"full": pBoolOpt})),
			proxmox.LXC:  methods(http.MethodGet, ep(s.hList, nil)),
		},
		guest: map[proxmox.GuestType]map[string]map[string]*endpoint{},
	}
	for _, t := range []proxmox.GuestType{proxmox.QEMU, proxmox.LXC} {
		rt.guest[t] = s.guestRoutes(t, v)
	}
	return rt
}

func (s *Server) guestRoutes(t proxmox.GuestType, v version) map[string]map[string]*endpoint {
	qemu := t == proxmox.QEMU
	g := map[string]map[string]*endpoint{
		"":               methods(http.MethodGet, ep(s.hGuestIndex, nil)),
		"pending":        methods(http.MethodGet, ep(s.hPending, nil)),
		"status":         methods(http.MethodGet, ep(s.hStatusIndex, nil)),
		"status/current": methods(http.MethodGet, ep(s.hStatusCurrent, nil)),
	}
	update := map[string]param{
		"delete": {kind: pStr, check: checkConfigIDList},
		"revert": {kind: pStr, check: checkConfigIDList},
		"digest": {kind: pStr, maxLen: 40},
	}
	if qemu {
		update["skiplock"] = pRootB
		update["force"] = pBoolOpt
	}
	cfg := methods(http.MethodGet, ep(s.hConfig, map[string]param{"current": pBoolOpt, "snapshot": pStrOpt}))
	cfg[http.MethodPut] = &endpoint{params: update, options: t, handler: s.hConfigPut}
	if qemu {
		post := map[string]param{"background_delay": {kind: pInt, min: fp(1), max: fp(30)}}
		for k, p := range update {
			post[k] = p
		}
		cfg[http.MethodPost] = &endpoint{params: post, options: t, handler: s.hConfigPost}
	}
	g["config"] = cfg
	resize := map[string]param{
		"disk":   {kind: pStr, required: true, enum: resizeDiskNames(t)},
		"size":   {kind: pStr, required: true, check: checkResizeSize},
		"digest": {kind: pStr, maxLen: 40},
	}
	if qemu {
		resize["skiplock"] = pRootB // LXC's resize has no skiplock
	}
	g["resize"] = methods(http.MethodPut, ep(s.hResize, resize))
	for _, action := range []string{"start", "stop", "shutdown", "reboot"} {
		var params map[string]param
		switch action {
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
		}
		action := action
		g["status/"+action] = methods(http.MethodPost, ep(func(c *call) (result, *apiErr) { return s.hPower(c, action) }, params))
	}
	return g
}

// route maps an API path onto its endpoints, the way PVE's handler tree
// does; unknown paths get a match without endpoints (501 after auth).
func (s *Server) route(c *call) routeMatch {
	rt := s.routes
	p := strings.TrimPrefix(c.path, "/")
	rm := routeMatch{}
	switch p {
	case "":
		rm.endpoints = rt.root
		return rm
	case "version":
		rm.endpoints = rt.version
		return rm
	case "access/ticket":
		rm.public, rm.endpoints = true, rt.ticket
		return rm
	case "cluster/resources":
		rm.endpoints = rt.resources
		return rm
	case "nodes":
		rm.endpoints = rt.nodes
		return rm
	}
	rest, ok := strings.CutPrefix(p, "nodes/")
	if !ok {
		return rm
	}
	node, rest, _ := strings.Cut(rest, "/")
	if node == "localhost" {
		node = s.nodes[0].name // the node serving the API
	}
	rm.uri = map[string]string{"node": node}
	if rest == "" {
		rm.endpoints = rt.nodeIndex
		return rm
	}
	kind, rest, _ := strings.Cut(rest, "/")
	switch kind {
	case "qemu", "lxc":
		t := proxmox.GuestType(kind)
		c.ref.Type = t
		if rest == "" {
			rm.endpoints = rt.list[t]
			return rm
		}
		id, sub, _ := strings.Cut(rest, "/")
		rm.uri["vmid"] = id
		c.ref.Node = node
		if n, err := strconv.Atoi(id); err == nil {
			c.ref.VMID = n
		}
		ref := c.ref
		rm.guest = &ref
		rm.endpoints = rt.guest[t][sub]
	case "tasks":
		if rest == "" {
			rm.endpoints = rt.taskList
			return rm
		}
		upid, sub, _ := strings.Cut(rest, "/")
		rm.uri["upid"] = upid
		s.mu.Lock()
		if t, ok := s.taskByUPID[proxmox.UPID(upid)]; ok {
			g := t.guest
			rm.guest = &g
		}
		s.mu.Unlock()
		switch sub {
		case "":
			rm.endpoints = rt.taskIndex
		case "status":
			rm.endpoints = rt.taskStatus
		case "log":
			rm.endpoints = rt.taskLog
		}
	}
	return rm
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
