package proxmoxtest

import (
	"fmt"
	"strconv"

	"github.com/guestward/guestward/proxmox"
)

// hPower serves POST .../status/{start,stop,shutdown,reboot}. Each answers
// with a task UPID; the checks Proxmox makes before forking fail the request
// (500), the others fail the task, exactly where Proxmox puts them. For an
// HA-managed guest start, stop and shutdown only hand the request to the
// HA manager (see ha.go).
func (s *Server) hPower(c *call, action string) (result, *apiErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := c.ref
	g := s.lookupLocked(ref)
	running := g != nil && g.running
	skiplock := c.params["skiplock"] == "1"
	forceStop := c.params["forceStop"] == "1"
	timeout := atoiDefault(c.params["timeout"], 60)
	var typ string
	var work func() ([]string, int, error)
	lxc := ref.Type == proxmox.LXC
	// The running checks of pve-container come first, before the HA
	// branch and before any lock (PVE::API2::LXC::Status).
	switch {
	case action == "start" && lxc && running:
		return result{}, die("CT %d already running", ref.VMID)
	case (action == "stop" || action == "shutdown") && lxc && !running:
		return result{}, die("CT %d not running", ref.VMID)
	}
	if g != nil && g.ha != nil && action != "reboot" {
		return s.haRequestLocked(c, g, action, timeout)
	}
	switch action {
	case "start":
		typ = "qmstart"
		if lxc {
			typ = "vzstart"
		}
		work = func() ([]string, int, error) { return s.startWorkLocked(ref, skiplock) }
	case "stop":
		typ = "qmstop"
		if lxc {
			typ = "vzstop"
		}
		work = func() ([]string, int, error) { return s.stopWorkLocked(ref, skiplock) }
	case "shutdown":
		typ = "qmshutdown"
		if lxc {
			typ = "vzshutdown"
			skiplock = false // LXC shutdown has no skiplock
		}
		work = func() ([]string, int, error) { return s.shutdownWorkLocked(ref, skiplock, forceStop, timeout) }
	case "reboot":
		if !running {
			if !lxc && g == nil {
				// vm_reboot (qemu-server PVE/API2/Qemu.pm) calls
				// PVE::QemuServer::check_running before forking, which
				// asserts the config exists on this node.
				return result{}, die("%s", errNoConfigOnNode(ref))
			}
			// pve-container says "VM" here too.
			return result{}, die("VM %d not running", ref.VMID)
		}
		typ = "qmreboot"
		if lxc {
			typ = "vzreboot"
		}
		work = func() ([]string, int, error) {
			// vm_reboot (qemu-server PVE/QemuServer.pm) does nothing for
			// a VM that stopped since the request: it is not started.
			if g := s.lookupLocked(ref); !lxc && (g == nil || !g.running) {
				if g == nil {
					return nil, 0, fmt.Errorf("%s", errNoConfigOnNode(ref))
				}
				return nil, 0, nil
			}
			log, w, err := s.shutdownWorkLocked(ref, false, false, timeout)
			if err != nil {
				return log, w, err
			}
			more, w2, err := s.startWorkLocked(ref, false)
			return append(log, more...), w + w2, err
		}
	}
	// Where the config lock is taken: QEMU's workers always (vm_start,
	// vm_stop, vm_reboot lock inside), as LXC's do from pve-container
	// 5.0.10; before, LXC's start, stop and shutdown handlers locked
	// around the fork. vzreboot's worker locks in every version.
	handlerLocks := lxc && action != "reboot" && !s.cfg.version.lxcPowerLockInWorker()
	if handlerLocks {
		if aerr := c.lockedInHandler(); aerr != nil {
			return result{}, aerr
		}
	}
	t := s.startTask(c, typ, ref, work)
	if !handlerLocks {
		c.lockedInWorker(t)
	}
	return jsonResult(string(t.upid)), nil
}

// haRequestLocked is the HA branch of vm_start, vm_stop and vm_shutdown
// (QEMU and LXC): a hastart or hastop task for the caller that hands the
// request over. No config lock is taken.
func (s *Server) haRequestLocked(c *call, g *guest, action string, timeout int) (result, *apiErr) {
	var cmd haCommand
	typ := "hastop"
	switch action {
	case "start":
		typ = "hastart"
	case "stop":
		if c.params["overrule-shutdown"] == "1" {
			return result{}, paramErr1("overrule-shutdown", "Not applicable for HA resources.")
		}
		cmd = haCommand{stop: true, timeout: 0}
	case "shutdown":
		cmd = haCommand{stop: true, timeout: timeout}
	}
	ref := g.ref
	t := s.startTask(c, typ, ref, func() ([]string, int, error) { return s.haHandOver(ref, cmd) })
	return jsonResult(string(t.upid)), nil
}

// workGuestLocked is what every power worker starts with: load the config
// (failing if it does not exist) and check the lock unless skiplock (a
// container's "mounted" lock does not block power actions).
func (s *Server) workGuestLocked(ref proxmox.Ref, skiplock bool) (*guest, error) {
	g := s.lookupLocked(ref)
	if g == nil {
		return nil, fmt.Errorf("%s", errConfigMissing(ref))
	}
	if l := g.locked(); l != "" && !skiplock && !(g.isLXC() && l == "mounted") {
		return nil, fmt.Errorf("%s is locked (%s)", g.kindWord(), l)
	}
	return g, nil
}

// errNoConfigOnNode is assert_config_exists_on_node (qemu-server
// PVE/QemuConfig.pm), which check_running calls first: its text differs
// from load_config's "Configuration file ... does not exist".
func errNoConfigOnNode(ref proxmox.Ref) string {
	return fmt.Sprintf("unable to find configuration file for VM %d on node '%s'", ref.VMID, ref.Node)
}

// qemuStopCheckLocked is the start of _do_vm_stop (qemu-server
// PVE/QemuServer.pm), shared by vm_stop and vm_shutdown: check_running
// fails for a missing config, a VM that does not run is left alone
// without reading its config (so its lock is never checked), and only a
// running one has its lock checked. It returns nil, nil when there is
// nothing to do.
func (s *Server) qemuStopCheckLocked(ref proxmox.Ref, skiplock bool) (*guest, error) {
	g := s.lookupLocked(ref)
	if g == nil {
		return nil, fmt.Errorf("%s", errNoConfigOnNode(ref))
	}
	if !g.running {
		return nil, nil
	}
	return s.workGuestLocked(ref, skiplock)
}

// stopWorkLocked is the stop worker: vm_stop, immediate. A container's
// stop never gets here unless it runs (the handler refuses first).
func (s *Server) stopWorkLocked(ref proxmox.Ref, skiplock bool) ([]string, int, error) {
	var g *guest
	var err error
	if ref.Type == proxmox.QEMU {
		g, err = s.qemuStopCheckLocked(ref, skiplock)
	} else {
		g, err = s.workGuestLocked(ref, skiplock)
	}
	if err != nil || g == nil {
		return nil, 0, err
	}
	g.running = false
	return nil, 0, nil
}

func (s *Server) startWorkLocked(ref proxmox.Ref, skiplock bool) ([]string, int, error) {
	g := s.lookupLocked(ref)
	if g == nil {
		return nil, 0, fmt.Errorf("%s", errConfigMissing(ref))
	}
	if g.template() {
		if g.isLXC() {
			return nil, 0, fmt.Errorf("you can't start a CT if it's a template")
		}
		return nil, 0, fmt.Errorf("you can't start a vm if it's a template")
	}
	if _, err := s.workGuestLocked(ref, skiplock); err != nil {
		return nil, 0, err
	}
	if g.running {
		return nil, 0, fmt.Errorf("%s %d already running", g.kindWord(), ref.VMID)
	}
	if err := s.applyAllPendingLocked(g); err != nil {
		return nil, 0, err
	}
	var log []string
	warnings := 0
	if !g.isLXC() && g.conf["bios"] == "ovmf" && g.conf["efidisk0"] == "" {
		log = append(log, "WARN: no efidisk configured! Using temporary efivars disk.")
		warnings++
	}
	s.markRunningLocked(g)
	return log, warnings, nil
}

func (s *Server) markRunningLocked(g *guest) {
	g.running = true
	g.startedAt = s.now()
	g.pid = s.seqPID()
}

// applyAllPendingLocked applies every pending change, as a start does.
func (s *Server) applyAllPendingLocked(g *guest) error {
	if len(g.pending) == 0 {
		return nil
	}
	oldConf, oldPending := cloneMap(g.conf), cloneMap(g.pending)
	err := s.applyPendingNoCommit(g)
	if err == nil {
		err = s.commit(g)
	}
	if err != nil {
		g.conf, g.pending = oldConf, oldPending
	}
	return err
}

func (s *Server) applyPendingNoCommit(g *guest) error {
	if g.isLXC() {
		var freed, allocated []string
		if err := s.lxcApplyPendingLocked(g, nil, &freed, &allocated); err != nil {
			for _, v := range allocated {
				s.freeVolume(v)
			}
			return err
		}
		for _, v := range freed {
			s.freeVolume(v)
		}
		return nil
	}
	s.qemuApplyPendingLocked(g)
	return nil
}

func (s *Server) shutdownWorkLocked(ref proxmox.Ref, skiplock, forceStop bool, timeout int) ([]string, int, error) {
	var g *guest
	var err error
	if ref.Type == proxmox.QEMU {
		g, err = s.qemuStopCheckLocked(ref, skiplock)
	} else {
		g, err = s.workGuestLocked(ref, skiplock)
	}
	if err != nil || g == nil || !g.running {
		return nil, 0, err
	}
	if g.ignoreShutdown {
		if !forceStop {
			if g.isLXC() {
				return nil, 0, fmt.Errorf("command 'lxc-stop -n %d --nokill --timeout %s' failed: exit code 1", ref.VMID, strconv.Itoa(timeout))
			}
			return nil, 0, fmt.Errorf("VM quit/powerdown failed - got timeout")
		}
		g.running = false
		if g.isLXC() {
			return nil, 0, nil
		}
		return []string{"VM quit/powerdown failed - terminating now with SIGTERM"}, 0, nil
	}
	g.running = false
	return nil, 0, nil
}
