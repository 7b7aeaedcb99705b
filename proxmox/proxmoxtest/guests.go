package proxmoxtest

import (
	"fmt"
	"sort"
	"strings"

	"github.com/guestward/guestward/proxmox"
)

// GuestSpec describes a guest to add with [Server.AddGuest]. Config and
// Pending are taken as the content of the guest's config file, the form
// Proxmox stores after its write-side rewriting: "net0" already carries its
// MAC, disks name real volumes, tags are sorted. (Values are still checked
// and normalised the way Proxmox's file parser does: booleans become 1/0,
// integers lose leading zeros, unknown options are refused.) To see
// Proxmox's rewriting of user input, write through the API or
// [Server.UpdateConfig] instead.
//
// A GuestSpec is a plain value; [Server.AddGuest] copies what it needs.
type GuestSpec struct {
	Node string            // must be one of the server's nodes; default: the first node
	Type proxmox.GuestType // proxmox.QEMU or proxmox.LXC
	VMID int               // unique across the cluster

	Config        map[string]string // current values, e.g. {"cores": "2", "name": "web"}
	Pending       map[string]string // pending values, as after a change to a running guest
	PendingDelete []string          // options pending deletion

	Running  bool   // power state; a template cannot run
	Template bool   // sets "template: 1"
	Lock     string // sets "lock: <Lock>", e.g. "backup"

	// IgnoreShutdown makes the guest ignore ACPI shutdown requests, so
	// shutdown tasks time out unless forceStop is set.
	IgnoreShutdown bool

	// HA makes the guest an HA resource (vm:<vmid> or ct:<vmid>), in
	// HA state "started" if Running, else "stopped". Its start, stop and
	// shutdown requests then go through the HA manager; see
	// [Server.HoldHA] and the package documentation.
	HA bool
}

// GuestState is a snapshot of one guest as the fake server holds it. Its
// maps are copies owned by the caller.
type GuestState struct {
	Ref           proxmox.Ref
	Config        map[string]string // the current section of the config file
	Pending       map[string]string // the pending section's values
	PendingDelete []string          // options pending deletion, sorted ("!" marks a forced one)
	Digest        string            // SHA-1 of File, as GET config reports it
	File          string            // the config file text
	Lock          string
	Running       bool
	Template      bool
	// HAState is the HA manager's state of the guest ("started",
	// "stopped", "request_stop", "error"); "" unless HA-managed.
	HAState string
}

// AddGuest creates a guest. It fails if the spec names an unknown node or
// an invalid type, vmid, option or value, or if the vmid is taken.
func (s *Server) AddGuest(spec GuestSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if spec.Node == "" {
		spec.Node = s.nodes[0].name
	}
	ref := proxmox.Ref{Node: spec.Node, Type: spec.Type, VMID: spec.VMID}
	if err := ref.Validate(); err != nil {
		return fmt.Errorf("proxmoxtest: add guest: %w", err)
	}
	if _, ok := s.nodeByName[ref.Node]; !ok {
		return fmt.Errorf("proxmoxtest: add guest %s: no node %q", ref, ref.Node)
	}
	if old, ok := s.guests[ref.VMID]; ok {
		return fmt.Errorf("proxmoxtest: add guest %s: vmid %d already used by %s", ref, ref.VMID, old.ref)
	}
	if spec.Running && spec.Template {
		return fmt.Errorf("proxmoxtest: add guest %s: a template cannot be running", ref)
	}
	conf, err := s.checkFileValues(ref.Type, spec.Config)
	if err != nil {
		return fmt.Errorf("proxmoxtest: add guest %s: config: %w", ref, err)
	}
	pending, err := s.checkFileValues(ref.Type, spec.Pending)
	if err != nil {
		return fmt.Errorf("proxmoxtest: add guest %s: pending: %w", ref, err)
	}
	if spec.Template {
		conf["template"] = "1"
	}
	if spec.Lock != "" {
		if msg := s.cfg.version.checkOption(ref.Type, "lock", spec.Lock); msg != "" {
			return fmt.Errorf("proxmoxtest: add guest %s: lock %q: %s", ref, spec.Lock, msg)
		}
		conf["lock"] = spec.Lock
	}
	if len(spec.PendingDelete) > 0 {
		del := map[string]bool{}
		for _, k := range spec.PendingDelete {
			if _, ok := optionSpec(ref.Type, k); !ok {
				return fmt.Errorf("proxmoxtest: add guest %s: pending delete of unknown option %q", ref, k)
			}
			del[k] = false
		}
		setPendingDelete(pending, del)
	}
	g := &guest{ref: ref, conf: conf, pending: pending, ignoreShutdown: spec.IgnoreShutdown}
	if spec.HA {
		g.ha = newHAResource(spec.Running)
	}
	if err := s.commit(g); err != nil {
		return fmt.Errorf("proxmoxtest: add guest %s: %w", ref, err)
	}
	for _, sec := range []map[string]string{g.conf, g.pending} {
		for k, v := range sec {
			s.registerValueVolumes(ref.Type, k, v)
		}
	}
	if spec.Running {
		s.markRunningLocked(g)
	}
	s.guests[ref.VMID] = g
	return nil
}

func (s *Server) checkFileValues(t proxmox.GuestType, in map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(in))
	for k, v := range in {
		if k == "description" {
			if msg := s.cfg.version.checkOption(t, k, v); msg != "" {
				return nil, fmt.Errorf("%s: %s", k, strings.TrimSpace(msg))
			}
			out[k] = v
			continue
		}
		nv, err := s.cfg.version.fileValue(t, k, v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out[k] = nv
	}
	return out, nil
}

// valueVolume returns the volume id a config value references ("" if none).
func valueVolume(t proxmox.GuestType, key, value string) string {
	var f *propFormat
	field := "volume"
	switch {
	case strings.HasPrefix(key, "unused") && isIndexed(key):
		return value
	case t == proxmox.QEMU && isQemuDrive(key):
		f, field = qemuDriveFormat, "file"
	case t == proxmox.LXC && key == "rootfs":
		f = lxcRootfsFormat
	case t == proxmox.LXC && strings.HasPrefix(key, "mp") && isIndexed(key):
		f = lxcMPFormat
	default:
		return ""
	}
	if d, err := f.parse(value, key); err == nil {
		return d[field]
	}
	return ""
}

func (s *Server) registerValueVolumes(t proxmox.GuestType, key, value string) {
	if v := valueVolume(t, key, value); v != "" {
		s.registerVolume(v)
	}
}

// RemoveGuest deletes a guest and frees its volumes. Tasks already started
// for it fail when they run, as they would on Proxmox.
func (s *Server) RemoveGuest(ref proxmox.Ref) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.lookupLocked(ref)
	if g == nil {
		return fmt.Errorf("%w: %s", ErrNoGuest, ref)
	}
	for _, sec := range []map[string]string{g.conf, g.pending} {
		for k, v := range sec {
			if vol := valueVolume(ref.Type, k, v); vol != "" {
				s.freeVolume(vol)
			}
		}
	}
	delete(s.guests, ref.VMID)
	return nil
}

// Guest returns a snapshot of the guest at ref.
func (s *Server) Guest(ref proxmox.Ref) (GuestState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.lookupLocked(ref)
	if g == nil {
		return GuestState{}, false
	}
	st := GuestState{
		Ref:      g.ref,
		Config:   cloneMap(g.conf),
		Pending:  cloneMap(g.pending),
		Digest:   g.digest,
		File:     g.raw,
		Lock:     g.locked(),
		Running:  g.running,
		Template: g.template(),
	}
	if g.ha != nil {
		st.HAState = g.ha.state
	}
	delete(st.Pending, "delete")
	for k, force := range parsePendingDelete(g.pending["delete"]) {
		if force {
			k = "!" + k
		}
		st.PendingDelete = append(st.PendingDelete, k)
	}
	sort.Strings(st.PendingDelete)
	return st, true
}

// Guests lists every guest, ordered by vmid.
func (s *Server) Guests() []proxmox.Ref {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]proxmox.Ref, 0, len(s.guests))
	for _, g := range s.guests {
		out = append(out, g.ref)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VMID < out[j].VMID })
	return out
}

// SetLock sets the guest's lock ("backup", "migrate", ...) or, with "",
// clears it, as a backup job or migration would: the config file changes,
// and so does its digest. Like them it takes the guest's config lock
// first, so it waits while a config task that holds it runs (QEMU before
// qemu-server 9.1.19), for at most Proxmox's 10 s.
func (s *Server) SetLock(ref proxmox.Ref, lock string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.awaitConfigLockLocked(nil, ref); err != nil {
		return fmt.Errorf("proxmoxtest: set lock on %s: %w", ref, err)
	}
	g := s.lookupLocked(ref)
	if g == nil {
		return fmt.Errorf("%w: %s", ErrNoGuest, ref)
	}
	if lock == "" {
		delete(g.conf, "lock")
	} else {
		if msg := s.cfg.version.checkOption(ref.Type, "lock", lock); msg != "" {
			return fmt.Errorf("proxmoxtest: set lock on %s: %q: %s", ref, lock, msg)
		}
		g.conf["lock"] = lock
	}
	return s.commit(g)
}

// SetRunning changes the power state behind the API's back (the guest
// crashed, or an operator started it on the node). Starting applies pending
// changes, as a start does; it fails for a template.
func (s *Server) SetRunning(ref proxmox.Ref, running bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.lookupLocked(ref)
	if g == nil {
		return fmt.Errorf("%w: %s", ErrNoGuest, ref)
	}
	if running == g.running {
		return nil
	}
	if !running {
		g.running = false
		return nil
	}
	if g.template() {
		return fmt.Errorf("proxmoxtest: %s is a template and cannot run", ref)
	}
	if err := s.applyAllPendingLocked(g); err != nil {
		return fmt.Errorf("proxmoxtest: start %s: %w", ref, err)
	}
	s.markRunningLocked(g)
	return nil
}

// SetIgnoreShutdown makes the guest ignore (or honour again) shutdown
// requests; see [GuestSpec].IgnoreShutdown.
func (s *Server) SetIgnoreShutdown(ref proxmox.Ref, ignore bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.lookupLocked(ref)
	if g == nil {
		return fmt.Errorf("%w: %s", ErrNoGuest, ref)
	}
	g.ignoreShutdown = ignore
	return nil
}

// UpdateConfig changes a guest's config as another writer would (an
// operator in the GUI, say), through the same path a synchronous API write
// takes (QEMU PUT, LXC PUT) as root@pam, rewriting included, and ignoring
// any lock. set holds options to set, del options to delete. The digest
// changes, so a client that read the config before gets a digest mismatch
// on its next write: this is how tests stage digest races (see
// [Fault].Before). Like any writer it takes the guest's config lock, so it
// waits while a config task that holds it runs (QEMU before qemu-server
// 9.1.19, whose asynchronous update keeps the lock for its whole task),
// for at most Proxmox's 10 s, after which it fails with Proxmox's lock
// timeout text. With [WithManualTasks], finish that task from another
// goroutine or call UpdateConfig before the update.
func (s *Server) UpdateConfig(ref proxmox.Ref, set map[string]string, del []string) error {
	params := cloneMap(set)
	if params == nil {
		params = map[string]string{}
	}
	for k, v := range params {
		if msg := s.cfg.version.checkOption(ref.Type, k, v); msg != "" {
			return fmt.Errorf("proxmoxtest: update %s: %s: %s", ref, k, strings.TrimSpace(msg))
		}
	}
	if len(del) > 0 {
		params["delete"] = strings.Join(del, ",")
	}
	u, aerr := s.parseUpdate(ref.Type, params)
	if aerr != nil {
		return fmt.Errorf("proxmoxtest: update %s: %s", ref, describe(aerr))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.awaitConfigLockLocked(nil, ref); err != nil {
		return fmt.Errorf("proxmoxtest: update %s: %w", ref, err)
	}
	if ref.Type == proxmox.LXC {
		if aerr := s.lxcUpdateLocked(ref, u, true); aerr != nil {
			return fmt.Errorf("proxmoxtest: update %s: %s", ref, describe(aerr))
		}
		return nil
	}
	if aerr := s.qemuPrepareLocked(ref, u, true); aerr != nil {
		return fmt.Errorf("proxmoxtest: update %s: %s", ref, describe(aerr))
	}
	if _, err := s.qemuWorkerLocked(ref, u); err != nil {
		return fmt.Errorf("proxmoxtest: update %s: %w", ref, err)
	}
	return nil
}

func describe(e *apiErr) string {
	msg := strings.TrimSpace(e.msg)
	keys := make([]string, 0, len(e.errors))
	for k := range e.errors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		msg += "; " + k + ": " + strings.TrimSpace(e.errors[k])
	}
	if strings.Contains(msg, "does not exist") && strings.HasPrefix(msg, "Configuration file") {
		return fmt.Sprintf("%v (%s)", ErrNoGuest, msg)
	}
	return msg
}
