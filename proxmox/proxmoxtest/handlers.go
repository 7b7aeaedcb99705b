package proxmoxtest

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"

	"github.com/guestward/guestward/proxmox"
)

func subdirs(key string, names ...string) result {
	out := make([]map[string]string, len(names))
	for i, n := range names {
		out[i] = map[string]string{key: n}
	}
	return jsonResult(out)
}

func (s *Server) hRootIndex(*call) (result, *apiErr) {
	return subdirs("subdir", "version", "cluster", "nodes", "storage", "access", "pools"), nil
}

func (s *Server) hVersion(*call) (result, *apiErr) {
	v := s.cfg.version
	return jsonResult(map[string]string{"version": v.text, "release": v.release(), "repoid": v.repoid()}), nil
}

func (s *Server) hLogin(c *call) (result, *apiErr) {
	data, aerr := s.login(c.params)
	if aerr != nil {
		return result{}, aerr
	}
	return jsonResult(data), nil
}

func (s *Server) hNodeIndex(*call) (result, *apiErr) {
	return subdirs("name", "qemu", "lxc", "status", "tasks", "storage", "version"), nil
}

// lookupLocked returns the guest at ref, or nil: a guest exists on exactly
// one node, with one type, as its config file does.
func (s *Server) lookupLocked(ref proxmox.Ref) *guest {
	g := s.guests[ref.VMID]
	if g == nil || g.ref != ref {
		return nil
	}
	return g
}

// guestFor fetches the guest a guest endpoint addresses, failing as
// load_config fails when its file does not exist. Called with s.mu held.
func (s *Server) guestFor(c *call) (*guest, *apiErr) {
	g := s.lookupLocked(c.ref)
	if g == nil {
		return nil, die("%s", errConfigMissing(c.ref))
	}
	return g, nil
}

func (s *Server) hGuestIndex(c *call) (result, *apiErr) {
	s.mu.Lock()
	_, aerr := s.guestFor(c)
	s.mu.Unlock()
	if aerr != nil {
		return result{}, aerr
	}
	if c.ref.Type == proxmox.LXC {
		return subdirs("subdir", "config", "pending", "status", "snapshot", "firewall", "rrd", "rrddata"), nil
	}
	return subdirs("subdir", "config", "pending", "status", "unlink", "vncproxy", "snapshot", "firewall", "rrd", "rrddata"), nil
}

func (s *Server) hStatusIndex(c *call) (result, *apiErr) {
	s.mu.Lock()
	_, aerr := s.guestFor(c)
	s.mu.Unlock()
	if aerr != nil {
		return result{}, aerr
	}
	if c.ref.Type == proxmox.LXC {
		return subdirs("subdir", "current", "start", "stop", "shutdown", "reboot", "migrate"), nil
	}
	return subdirs("subdir", "current", "start", "stop", "reset", "shutdown", "suspend", "reboot"), nil
}

// typed gives a config value the JSON type Proxmox's parser gives it:
// integers and booleans become numbers, everything else stays a string
// (including "number" options such as cpulimit, and QEMU memory from 8.1).
func (s *Server) typed(t proxmox.GuestType, key, v string) any {
	spec, ok := optionSpec(t, key)
	if !ok {
		return v
	}
	switch spec.kind {
	case oInt, oBool:
		if digitsRE.MatchString(v) {
			return json.Number(v)
		}
	case oMemory:
		if !s.cfg.version.memoryIsString() && digitsRE.MatchString(v) {
			return json.Number(v)
		}
	}
	return v
}

// configJSON renders GET config: pending values applied and pending
// deletions removed unless current, the digest added, cipassword masked.
func (s *Server) configJSONLocked(g *guest, current bool) []byte {
	if current && g.cacheCurrent != nil {
		return g.cacheCurrent
	}
	if !current && g.cacheMerged != nil {
		return g.cacheMerged
	}
	vals := make(map[string]string, len(g.conf)+len(g.pending))
	for k, v := range g.conf {
		vals[k] = v
	}
	if !current {
		for k, v := range g.pending {
			if k != "delete" {
				vals[k] = v
			}
		}
		// load_current_config (pve-guest-common AbstractConfig) drops a
		// pending deletion's option only when its value is true to Perl:
		// "onboot: 0" pending deletion still reads "0".
		for k := range parsePendingDelete(g.pending["delete"]) {
			if v := vals[k]; v != "" && v != "0" {
				delete(vals, k)
			}
		}
	}
	m := make(map[string]any, len(vals)+1)
	for k, v := range vals {
		m[k] = s.typed(g.ref.Type, k, v)
	}
	if _, ok := m["cipassword"]; ok && g.ref.Type == proxmox.QEMU {
		m["cipassword"] = "**********"
	}
	m["digest"] = g.digest
	b := jsonResult(m).data
	if current {
		g.cacheCurrent = b
	} else {
		g.cacheMerged = b
	}
	return b
}

func (s *Server) hConfig(c *call) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, aerr := s.guestFor(c)
	if aerr != nil {
		return result{}, aerr
	}
	if snap := c.params["snapshot"]; snap != "" {
		return result{}, die("snapshot '%s' does not exist", snap)
	}
	return result{data: s.configJSONLocked(g, c.params["current"] == "1")}, nil
}

// pendingJSONLocked is config_with_pending_array.
func (s *Server) pendingJSONLocked(g *guest) []byte {
	if g.cachePending != nil {
		return g.cachePending
	}
	del := parsePendingDelete(g.pending["delete"])
	conf := cloneMap(g.conf)
	conf["digest"] = g.digest
	var items []map[string]any
	delFlag := func(k string) int {
		if del[k] {
			return 2
		}
		return 1
	}
	for _, k := range sortedKeys(conf) {
		item := map[string]any{"key": k, "value": s.typed(g.ref.Type, k, conf[k])}
		if pv, ok := g.pending[k]; ok && k != "delete" {
			item["pending"] = s.typed(g.ref.Type, k, pv)
		}
		if _, ok := del[k]; ok {
			item["delete"] = delFlag(k)
		}
		items = append(items, item)
	}
	for _, k := range sortedKeys(g.pending) {
		if _, ok := conf[k]; ok || k == "delete" {
			continue
		}
		items = append(items, map[string]any{"key": k, "pending": s.typed(g.ref.Type, k, g.pending[k])})
	}
	dk := make([]string, 0, len(del))
	for k := range del {
		dk = append(dk, k)
	}
	sort.Strings(dk)
	for _, k := range dk {
		if _, ok := g.pending[k]; ok {
			continue
		}
		if _, ok := conf[k]; ok {
			continue
		}
		items = append(items, map[string]any{"key": k, "delete": delFlag(k)})
	}
	g.cachePending = jsonResult(items).data
	return g.cachePending
}

func (s *Server) hPending(c *call) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, aerr := s.guestFor(c)
	if aerr != nil {
		return result{}, aerr
	}
	return result{data: s.pendingJSONLocked(g)}, nil
}

// guestStats are the runtime figures vmstatus reports. The fake has no real
// workload, so they are simple functions of the config and the uptime.
type guestStats struct {
	name                               string
	cpus                               float64
	maxmem, maxswap, maxdisk           int64
	mem, disk                          int64
	netin, netout, diskread, diskwrite int64
	uptime                             int64
	cpu                                float64
	pid                                int
}

func atoiDefault(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}

// memoryMiB reads a QEMU ("[current=]N") or LXC memory value.
func memoryMiB(v string) int64 {
	v = strings.TrimPrefix(v, "current=")
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 512
	}
	return n
}

func volumeSize(value string, f *propFormat, key string) int64 {
	d, err := f.parse(value, key)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(d["size"], 10, 64)
	return n
}

// bootDiskSize is the size of the disk QEMU boots from: the first disk of
// the boot order, else bootdisk, else the first disk present.
func bootDiskSize(conf map[string]string) int64 {
	candidates := bootOrder(conf["boot"])
	if bd := conf["bootdisk"]; bd != "" {
		candidates = append(candidates, bd)
	}
	candidates = append(candidates, "scsi0", "virtio0", "sata0", "ide0")
	for _, k := range candidates {
		v, ok := conf[k]
		if !ok || !isQemuDrive(k) {
			continue
		}
		d, err := qemuDriveFormat.parse(v, k)
		if err != nil || driveIsCdrom(d) {
			continue
		}
		n, _ := strconv.ParseInt(d["size"], 10, 64)
		return n
	}
	return 0
}

func (s *Server) statsLocked(g *guest) guestStats {
	st := guestStats{}
	conf := g.conf
	if g.isLXC() {
		st.name = strings.Join(strings.Fields(conf["hostname"]), "")
		if st.name == "" {
			st.name = "CT" + strconv.Itoa(g.ref.VMID)
		}
		switch {
		case conf["cores"] != "":
			st.cpus = float64(atoiDefault(conf["cores"], 1))
		case conf["cpulimit"] != "" && conf["cpulimit"] != "0":
			st.cpus, _ = strconv.ParseFloat(conf["cpulimit"], 64)
		default:
			st.cpus = float64(hostCPUs())
		}
		st.maxmem = memoryMiB(conf["memory"]) << 20
		st.maxswap = 512 << 20
		if v, ok := conf["swap"]; ok {
			st.maxswap = int64(atoiDefault(v, 512)) << 20
		}
		st.maxdisk = volumeSize(conf["rootfs"], lxcRootfsFormat, "rootfs")
	} else {
		st.name = conf["name"]
		if st.name == "" {
			st.name = "VM " + strconv.Itoa(g.ref.VMID)
		}
		if v := conf["vcpus"]; v != "" {
			st.cpus = float64(atoiDefault(v, 1))
		} else {
			st.cpus = float64(atoiDefault(conf["sockets"], 1) * atoiDefault(conf["cores"], 1))
		}
		st.maxmem = memoryMiB(conf["memory"]) << 20
		st.maxdisk = bootDiskSize(conf)
	}
	if g.running {
		up := int64(s.now().Sub(g.startedAt).Seconds())
		if up < 0 {
			up = 0
		}
		st.uptime = up
		st.cpu = 0.0123
		st.pid = g.pid
		st.mem = st.maxmem / 4
		st.netin, st.netout = 1500+up*2048, 900+up*512
		st.diskread, st.diskwrite = 1<<20+up*4096, 1<<19+up*8192
		if g.isLXC() {
			st.disk = st.maxdisk / 10
		}
	}
	return st
}

func status(g *guest) string {
	if g.running {
		return "running"
	}
	return "stopped"
}

func (st guestStats) common(m map[string]any, g *guest) {
	m["status"] = status(g)
	m["name"] = st.name
	m["cpus"] = st.cpus
	m["maxmem"] = st.maxmem
	m["maxdisk"] = st.maxdisk
	m["disk"] = st.disk
	m["mem"] = st.mem
	m["uptime"] = st.uptime
	m["cpu"] = st.cpu
	m["netin"], m["netout"] = st.netin, st.netout
	m["diskread"], m["diskwrite"] = st.diskread, st.diskwrite
	if g.running {
		m["pid"] = st.pid
	}
	if g.template() {
		m["template"] = 1
	}
	if l := g.locked(); l != "" {
		m["lock"] = l
	}
	if t, ok := g.conf["tags"]; ok {
		m["tags"] = t
	}
	if g.isLXC() {
		m["type"] = "lxc"
		m["maxswap"] = st.maxswap
		m["swap"] = int64(0)
	}
}

func (s *Server) qemuRuntime(m map[string]any, g *guest) {
	if g.running {
		m["qmpstatus"] = "running"
		m["running-qemu"] = s.cfg.version.qemuVersion()
		m["running-machine"] = "pc-i440fx-" + strings.Join(strings.Split(s.cfg.version.qemuVersion(), ".")[:2], ".") + "+pve0"
	} else {
		m["qmpstatus"] = "stopped"
	}
}

func (s *Server) hStatusCurrent(c *call) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, aerr := s.guestFor(c)
	if aerr != nil {
		return result{}, aerr
	}
	st := s.statsLocked(g)
	m := map[string]any{"vmid": g.ref.VMID, "ha": s.haStatus(g)}
	st.common(m, g)
	if !g.isLXC() {
		s.qemuRuntime(m, g)
		if a, ok := g.conf["agent"]; ok {
			if d := strings.TrimPrefix(strings.SplitN(a, ",", 2)[0], "enabled="); d == "1" {
				m["agent"] = 1
			}
		}
	}
	return jsonResult(m), nil
}

func (s *Server) guestsOn(node string, t proxmox.GuestType) []*guest {
	var out []*guest
	for _, g := range s.guests {
		if g.ref.Node == node && g.ref.Type == t {
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ref.VMID < out[j].ref.VMID })
	return out
}

// hList serves /nodes/{node}/qemu and /nodes/{node}/lxc.
func (s *Server) hList(c *call) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	full := c.params["full"] == "1"
	items := []map[string]any{}
	for _, g := range s.guestsOn(c.node.name, c.ref.Type) {
		st := s.statsLocked(g)
		m := map[string]any{"vmid": g.ref.VMID}
		st.common(m, g)
		if g.isLXC() {
			if !s.cfg.version.lxcListVMIDInt() {
				m["vmid"] = strconv.Itoa(g.ref.VMID)
			}
		} else {
			if _, ok := g.conf["serial0"]; ok {
				m["serial"] = 1
			}
			if full {
				s.qemuRuntime(m, g)
			}
		}
		items = append(items, m)
	}
	return jsonResult(items), nil
}

func (s *Server) hNodes(*call) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fp := s.Fingerprint()
	var out []map[string]any
	for _, n := range s.nodes {
		m := s.nodeEntryLocked(n)
		m["ssl_fingerprint"] = fp
		out = append(out, m)
	}
	return jsonResult(out), nil
}

func (s *Server) nodeEntryLocked(n *node) map[string]any {
	m := map[string]any{"id": "node/" + n.name, "node": n.name, "type": "node"}
	if !n.online {
		m["status"] = "offline"
		return m
	}
	m["status"] = "online"
	m["maxcpu"] = hostCPUs()
	m["cpu"] = 0.0231
	m["maxmem"] = int64(64) << 30
	m["mem"] = int64(9) << 30
	m["maxdisk"] = int64(100) << 30
	m["disk"] = int64(12) << 30
	m["uptime"] = int64(s.now().Sub(s.bootTime).Seconds())
	m["level"] = ""
	m["cgroup-mode"] = 2
	return m
}

// resourcesJSONLocked builds /cluster/resources for a type filter ("" =
// all): guests sorted by vmid as strings, then nodes, then storages.
func (s *Server) resourcesJSONLocked(typ string) ([]byte, error) {
	var out []map[string]any
	if typ == "" || typ == "vm" {
		gs := make([]*guest, 0, len(s.guests))
		for _, g := range s.guests {
			gs = append(gs, g)
		}
		sort.Slice(gs, func(i, j int) bool { return strconv.Itoa(gs[i].ref.VMID) < strconv.Itoa(gs[j].ref.VMID) })
		for _, g := range gs {
			m := map[string]any{
				"id":   string(g.ref.Type) + "/" + strconv.Itoa(g.ref.VMID),
				"vmid": g.ref.VMID, "node": g.ref.Node, "type": string(g.ref.Type),
			}
			if l := g.locked(); l != "" {
				m["lock"] = l
			}
			if t, ok := g.conf["tags"]; ok {
				m["tags"] = t
			}
			if g.ha != nil {
				// From the HA manager's status, not from RRD data.
				m["hastate"] = g.ha.state
			}
			if !s.nodeByName[g.ref.Node].online {
				m["status"] = "unknown"
				out = append(out, m)
				continue
			}
			st := s.statsLocked(g)
			m["status"] = status(g)
			m["name"] = st.name
			m["template"] = 0
			if g.template() {
				m["template"] = 1
			}
			m["maxcpu"] = st.cpus
			m["cpu"], m["mem"], m["maxmem"] = st.cpu, st.mem, st.maxmem
			m["disk"], m["maxdisk"] = st.disk, st.maxdisk
			m["netin"], m["netout"] = st.netin, st.netout
			m["diskread"], m["diskwrite"] = st.diskread, st.diskwrite
			m["uptime"] = st.uptime
			out = append(out, m)
		}
	}
	if typ == "" || typ == "node" {
		for _, n := range s.nodes {
			out = append(out, s.nodeEntryLocked(n))
		}
	}
	if typ == "" || typ == "storage" {
		for _, n := range s.nodes {
			for _, id := range s.storageOrder {
				kind := s.storages[id]
				content := "images,rootdir"
				if kind == StorageDir {
					content = "backup,iso,vztmpl,snippets,images,rootdir"
				}
				m := map[string]any{
					"id": "storage/" + n.name + "/" + id, "storage": id, "node": n.name, "type": "storage",
					"plugintype": string(kind), "content": content, "shared": 0,
				}
				if n.online {
					m["status"] = "available"
					m["maxdisk"] = int64(500) << 30
					m["disk"] = int64(40) << 30
				} else {
					m["status"] = "unknown"
				}
				out = append(out, m)
			}
		}
	}
	if out == nil {
		out = []map[string]any{}
	}
	return json.Marshal(out)
}

func (s *Server) hResources(c *call) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	typ := c.params["type"]
	if s.staleRes != nil && typ == "" {
		return result{data: s.staleRes}, nil
	}
	if s.staleRes != nil {
		// Filter the frozen snapshot rather than the live state.
		var all []map[string]any
		_ = json.Unmarshal(s.staleRes, &all)
		out := []map[string]any{}
		for _, m := range all {
			t, _ := m["type"].(string)
			if typ == t || typ == "vm" && (t == "qemu" || t == "lxc") {
				out = append(out, m)
			}
		}
		return jsonResult(out), nil
	}
	b, err := s.resourcesJSONLocked(typ)
	if err != nil {
		return result{}, die("%v", err)
	}
	return result{data: b}, nil
}

// --- tasks ---------------------------------------------------------------

// taskFor finds a task by the UPID in the path, as read_task_status does:
// the UPID must parse and the task must exist on the node asked.
func (s *Server) taskFor(c *call, countPoll bool) (*task, *apiErr) {
	upid := c.uri["upid"]
	if _, err := proxmox.ParseUPID(upid); err != nil {
		return nil, paramErr1("upid", "unable to parse worker upid")
	}
	t, ok := s.taskByUPID[proxmox.UPID(upid)]
	if !ok || t.info.Node != c.node.name {
		return nil, paramErr1("upid", "no such task")
	}
	if t.hidden > 0 {
		if countPoll {
			t.hidden--
		}
		return nil, paramErr1("upid", "no such task")
	}
	return t, nil
}

func (s *Server) hTaskStatus(c *call) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, aerr := s.taskFor(c, true)
	if aerr != nil {
		return result{}, aerr
	}
	m := taskFields(t, true)
	if t.running {
		m["status"] = "running"
	} else {
		m["status"] = "stopped"
		m["exitstatus"] = t.exit
	}
	return jsonResult(m), nil
}

type logLine struct {
	N int    `json:"n"`
	T string `json:"t"`
}

func (s *Server) hTaskLog(c *call) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, aerr := s.taskFor(c, true)
	if aerr != nil {
		if aerr.errors["upid"] == "unable to parse worker upid" {
			return result{}, aerr
		}
		// dump_logfile on a missing file answers 200 with one line.
		r := jsonResult([]logLine{{1, "unable to open file - No such file or directory"}})
		r.total, r.hasTotal = 1, true
		return r, nil
	}
	if c.params["download"] == "1" {
		if _, ok := c.params["start"]; ok {
			return result{}, die("'download' cannot be used together with 'start' or 'limit' parameters")
		}
		if _, ok := c.params["limit"]; ok {
			return result{}, die("'download' cannot be used together with 'start' or 'limit' parameters")
		}
	}
	start := atoiDefault(c.params["start"], 0)
	limit := atoiDefault(c.params["limit"], 50)
	lines := []logLine{}
	for i, l := range t.log {
		if i < start {
			continue
		}
		if limit != 0 && len(lines) >= limit {
			break
		}
		lines = append(lines, logLine{i + 1, l})
	}
	total := len(t.log)
	if total == 0 {
		lines = []logLine{{1, "no content"}}
		total = 1
	}
	r := jsonResult(lines)
	r.total, r.hasTotal = total, true
	return r, nil
}

func (s *Server) hTaskIndex(*call) (result, *apiErr) {
	return subdirs("name", "log", "status"), nil
}

func (s *Server) hTaskStop(c *call) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, aerr := s.taskFor(c, false)
	if aerr != nil {
		return result{}, aerr
	}
	s.interruptTaskLocked(t)
	return result{data: nullData}, nil
}

func (s *Server) hTaskList(c *call) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items, total := s.listTasksLocked(c.node.name, c.params)
	r := jsonResult(items)
	// The API server's formatter (pve-http-server
	// PVE::APIServer::Formatter::Standard) writes "total" only when it
	// is true to Perl, so a count of 0 leaves it out.
	r.total, r.hasTotal = total, total != 0
	return r, nil
}
