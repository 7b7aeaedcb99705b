package proxmoxtest

import (
	"errors"
	"fmt"
	"net/http"
	"path"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// DropMode says whether and when a [Fault] drops the connection. It is a
// plain value.
type DropMode int

const (
	// NoDrop answers normally.
	NoDrop DropMode = iota
	// DropBeforeHandling closes the connection without handling the
	// request: nothing happened on the server. A client may retry safely.
	DropBeforeHandling
	// DropAfterHandling handles the request completely (a task may have
	// started, a config may have changed) and then closes the connection
	// instead of answering. A client cannot tell this from
	// DropBeforeHandling; it is the case that forbids blind retries.
	DropAfterHandling
)

// Fault describes a scripted misbehaviour. A request matches a fault when
// every non-zero matching field matches; the first installed fault that
// matches and has budget left applies (later ones are not consulted). Its
// effects apply in field order: Before, Wait, Delay, Drop
// (DropBeforeHandling), Status, then the request is handled (with
// TaskError/TaskWarnings applied to any task it starts), then After and
// DropAfterHandling.
//
// A Fault is a plain value that [Server.Inject] copies; its Before and After
// hooks run on request goroutines, possibly concurrently, and must be safe
// for that.
type Fault struct {
	// Method matches the HTTP method ("GET", "POST", ...); "" matches any.
	Method string
	// Path is a path.Match pattern for the API path below [APIPath], for
	// example "/nodes/*/qemu/100/status/start" or "/nodes/pve/lxc/*/config";
	// "" matches any.
	Path string
	// Guest matches requests addressed to a guest: its config, pending and
	// status endpoints, and the status, log and stop endpoints of its tasks.
	// Zero fields are wildcards (Ref{VMID: 100} is vmid 100 on any node, of
	// any type); the zero Ref matches every request, guest or not.
	Guest proxmox.Ref

	// Skip lets this many matching requests through untouched first.
	Skip int
	// Times is how many matching requests the fault applies to before it
	// retires; 0 means every one, forever.
	Times int

	// Before runs first, on the request's goroutine, without server locks
	// held. It may call Server methods: make a lock appear
	// ([Server.SetLock]), let another writer change a config
	// ([Server.UpdateConfig]) between a client's read and its write, or
	// signal the test that the request arrived.
	Before func()
	// Wait blocks the request until the channel is closed (or the client
	// gives up, or the server closes): latency under the test's control.
	Wait <-chan struct{}
	// Delay sleeps for real time; for demos. Tests should prefer Wait.
	Delay time.Duration
	// Drop drops the connection before or after handling; see [DropMode].
	Drop DropMode
	// Status, when non-zero, answers with this status instead of handling
	// the request. Message is the reason phrase (and, for the versions that
	// send one, the body's message); it defaults to the standard status
	// text, except for 403, whose default is Proxmox's refusal for the
	// endpoint's privilege ("Permission check failed (/vms/100,
	// VM.PowerMgmt)"). 401 and 59x answers have empty bodies, as Proxmox
	// sends them.
	Status  int
	Message string
	// TaskError makes the task the request starts fail with this exit
	// status, without doing its work. TaskWarnings makes it succeed with
	// that many extra warnings ("WARNINGS: n").
	TaskError    string
	TaskWarnings int
	// LockTimeout makes the request fail as when another process holds
	// the guest's config lock longer than Proxmox waits for it (10 s,
	// PVE::AbstractConfig lock_config): with "can't lock file
	// '/var/lock/qemu-server/lock-<vmid>.conf' - got timeout" (LXC:
	// '/run/lock/lxc/pve-config-<vmid>.lock'), raised where Proxmox takes
	// that lock for the endpoint and version: in the API handler, as a
	// 500 answer, or in the worker, as the exit status of the task the
	// request starts. Nothing is changed either way. Config updates,
	// resizes and power actions take the lock; the hastart and hastop
	// tasks of an HA-managed guest do not, and are unaffected. A request
	// that takes no lock (any GET, say) still counts against Skip and
	// Times when it matches, so narrow the fault with Method or Path.
	LockTimeout bool
	// After runs after the request was handled, before the answer is
	// written (or the connection dropped).
	After func()
}

// FaultHandle is an installed [Fault]. It is safe for concurrent use.
type FaultHandle struct {
	f       Fault
	s       *Server
	seen    atomic.Int64
	hits    atomic.Int64
	removed atomic.Bool
}

// Hits returns how many requests the fault has applied to.
func (h *FaultHandle) Hits() int { return int(h.hits.Load()) }

// Remove uninstalls the fault; requests already affected are not undone.
func (h *FaultHandle) Remove() {
	if h.removed.Swap(true) {
		return
	}
	s := h.s
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	for i, f := range s.faults {
		if f == h {
			s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			break
		}
	}
	s.nFaults.Store(int32(len(s.faults)))
}

// Inject installs a fault and returns its handle. Faults apply in the
// order they were installed.
func (s *Server) Inject(f Fault) *FaultHandle {
	h := &FaultHandle{f: f, s: s}
	s.faultMu.Lock()
	s.faults = append(s.faults, h)
	s.nFaults.Store(int32(len(s.faults)))
	s.faultMu.Unlock()
	return h
}

// ClearFaults uninstalls every fault.
func (s *Server) ClearFaults() {
	s.faultMu.Lock()
	for _, h := range s.faults {
		h.removed.Store(true)
	}
	s.faults = nil
	s.nFaults.Store(0)
	s.faultMu.Unlock()
}

// matchFault finds the fault that applies to a request and charges it.
func (s *Server) matchFault(method, apiPath string, g *proxmox.Ref) *Fault {
	if s.nFaults.Load() == 0 {
		return nil
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	for _, h := range s.faults {
		f := &h.f
		if f.Method != "" && f.Method != method {
			continue
		}
		if f.Path != "" {
			if ok, _ := path.Match(f.Path, apiPath); !ok {
				continue
			}
		}
		if f.Guest != (proxmox.Ref{}) && (g == nil || !refMatches(f.Guest, *g)) {
			continue
		}
		if f.Times > 0 && h.hits.Load() >= int64(f.Times) {
			continue
		}
		if h.seen.Add(1) <= int64(f.Skip) {
			continue
		}
		h.hits.Add(1)
		cp := h.f
		return &cp
	}
	return nil
}

// lockTimeout reports whether the request's fault asks for a config lock
// timeout.
func (c *call) lockTimeout() bool { return c.fault != nil && c.fault.LockTimeout }

// configLockFile is the guest's config lock file: config_file_lock of
// PVE::QemuConfig and PVE::LXC::Config.
func configLockFile(r proxmox.Ref) string {
	if r.Type == proxmox.LXC {
		return fmt.Sprintf("/run/lock/lxc/pve-config-%d.lock", r.VMID)
	}
	return fmt.Sprintf("/var/lock/qemu-server/lock-%d.conf", r.VMID)
}

// lockTimeoutText is PVE::Tools::lock_file_full's error when the lock was
// not obtained in time.
func lockTimeoutText(r proxmox.Ref) string {
	return fmt.Sprintf("can't lock file '%s' - got timeout", configLockFile(r))
}

// lockedInHandler is an API handler taking the guest's config lock: a
// LockTimeout fault fails the request at once; a lock held by a running
// task makes it wait, as lock_config does (see awaitConfigLockLocked).
// Called with s.mu held, which it may release while it waits.
func (c *call) lockedInHandler() *apiErr {
	if c.lockTimeout() {
		return die("%s", lockTimeoutText(c.ref))
	}
	if err := c.s.awaitConfigLockLocked(c.r.Context().Done(), c.ref); err != nil {
		return die("%s", err.Error())
	}
	return nil
}

// configLockWait is how long lock_config waits for a config lock someone
// else holds before it fails with "got timeout" (pve-guest-common
// PVE/AbstractConfig.pm lock_config_full, 10 s, through pve-common
// PVE/Tools.pm lock_file_full).
const configLockWait = 10 * time.Second

// awaitConfigLockLocked waits while a running task holds ref's config lock
// (guest.cfgLockTask): until that task ends, for at most configLockWait of
// real time (then it fails with lock_file's timeout text), or until done
// is closed or the server closes. Called with s.mu held; it releases s.mu
// while it waits, so callers must look the guest up again afterwards.
func (s *Server) awaitConfigLockLocked(done <-chan struct{}, ref proxmox.Ref) error {
	var timeout <-chan time.Time
	for {
		g := s.guests[ref.VMID]
		if g == nil || g.cfgLockTask == nil || !g.cfgLockTask.running {
			return nil
		}
		if s.closed {
			return ErrClosed
		}
		if timeout == nil {
			t := time.NewTimer(configLockWait)
			defer t.Stop()
			timeout = t.C
			g.cfgLockWaiters++
			defer func() { g.cfgLockWaiters-- }()
			s.notifyLocked() // tests wait for a writer to queue up
		}
		ch := s.changed
		s.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-timeout:
			err = errors.New(lockTimeoutText(ref))
		case <-done:
			err = errors.New("request cancelled while waiting for the config lock")
		case <-s.closing:
			err = ErrClosed
		}
		s.mu.Lock()
		if err != nil {
			return err
		}
	}
}

// lockedInWorker marks a task whose worker takes the config lock first:
// it fails with the lock timeout, having done nothing.
func (c *call) lockedInWorker(t *task) {
	if c.lockTimeout() {
		t.failWith = lockTimeoutText(t.guest)
	}
}

// refMatches reports whether r is matched by pattern, whose zero fields
// are wildcards.
func refMatches(pattern, r proxmox.Ref) bool {
	return (pattern.Node == "" || pattern.Node == r.Node) &&
		(pattern.Type == "" || pattern.Type == r.Type) &&
		(pattern.VMID == 0 || pattern.VMID == r.VMID)
}

// guestPathRE splits a guest endpoint's API path.
var guestPathRE = regexp.MustCompile(`^/nodes/[^/]+/(qemu|lxc)/(\d+)(?:/(.*))?$`)

// forbiddenText is the 403 reason Proxmox gives when the caller lacks the
// privilege an endpoint's permission schema asks for: raise_perm_exc
// (pve-common PVE/Exception.pm) with "<path>, <privilege>" from
// check_api2_permissions (pve-access-control PVE/RPCEnvironment.pm; one
// privilege for a plain check, all of them joined by '|' for an "any"
// check). The privileges are those of the endpoints' permission schemas in
// qemu-server PVE/API2/Qemu.pm and pve-container PVE/API2/LXC.pm,
// PVE/API2/LXC/Config.pm and PVE/API2/LXC/Status.pm. Other endpoints
// filter what they show rather than refuse, so the bare text is used.
func forbiddenText(method, apiPath string) string {
	m := guestPathRE.FindStringSubmatch(apiPath)
	if m == nil {
		return "Permission check failed"
	}
	obj := "/vms/" + m[2]
	lxc := m[1] == "lxc"
	var privs string
	switch sub := m[3]; {
	case method == http.MethodGet && (sub == "config" || sub == "pending" || sub == "status/current"):
		privs = "VM.Audit"
	case method == http.MethodPost && len(sub) > 7 && sub[:7] == "status/":
		privs = "VM.PowerMgmt"
	case sub == "config" && (method == http.MethodPut || method == http.MethodPost):
		if lxc {
			privs = "VM.Config.Disk|VM.Config.CPU|VM.Config.Memory|VM.Config.Network|VM.Config.Options"
		} else {
			privs = "VM.Config.Disk|VM.Config.CDROM|VM.Config.CPU|VM.Config.Memory|VM.Config.Network|VM.Config.HWType|VM.Config.Options|VM.Config.Cloudinit"
		}
	case sub == "resize" && method == http.MethodPut:
		privs = "VM.Config.Disk"
	default:
		return "Permission check failed"
	}
	return "Permission check failed (" + obj + ", " + privs + ")"
}
