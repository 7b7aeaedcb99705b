package proxmoxtest

import (
	"fmt"
	"sort"
	"sync"

	"github.com/guestward/guestward/proxmox"
)

// This file emulates what a client sees of Proxmox's HA stack for an
// HA-managed guest (one listed in the HA resources, so that
// PVE::HA::Config::vm_is_ha_managed is true):
//
//   - A start, stop or shutdown request does not act on the guest. The
//     API handler starts a task of type "hastart" or "hastop" for the
//     caller that only hands the request over: "ha-manager set vm:100
//     --state started" for a start, "ha-manager crm-command stop vm:100
//     <timeout>" for a stop (timeout 0) or shutdown (its timeout, default
//     60) (qemu-server PVE::API2::Qemu vm_start, vm_stop, vm_shutdown;
//     pve-container PVE::API2::LXC::Status, the same). A reboot is not
//     routed through HA.
//   - Later, the HA manager acts: the cluster resource manager changes the
//     service state (a stop becomes "request_stop",
//     PVE::HA::Manager::manager_status_update_crm_command), and the node's
//     local resource manager, which runs as root@pam, starts or stops the
//     guest through the same API calls with its own tasks
//     (PVE::HA::Resources::PVEVM / PVECT start and shutdown: qmstart or
//     vzstart; qmstop or vzstop for timeout 0; otherwise qmshutdown with
//     forceStop, or vzshutdown). It does nothing if the guest already is
//     in the state asked for (PVE::HA::LRM exec_resource_agent).
//   - Status reports "ha": {"managed": 1, "state": <service state>} (plus
//     "group" before PVE 9.1; PVE::HA::Config::get_service_status), and
//     /cluster/resources "hastate" (pve-manager PVE::API2::Cluster).
//
// The fake's HA manager acts as soon as the handing-over task finishes,
// unless a test holds it with [Server.HoldHA]. It acts only on requests
// handed over through the API: it does not restart a guest that stops
// behind its back ([Server.SetRunning]), fence nodes, or retry and
// relocate a failed start; a failed start or stop leaves the service in
// state "error".

// haResource is a guest's entry in the HA resources, with the manager's
// view of it. Guarded by Server.mu.
type haResource struct {
	// state is the CRM's service state: "started", "stopped",
	// "request_stop" or "error".
	state string
	// cmd is a request handed over that the manager has not acted on.
	cmd *haCommand
	// busy is set while the local resource manager's task for the guest
	// runs; the manager starts one task per guest at a time.
	busy bool
}

// haCommand is a request handed to the HA stack.
type haCommand struct {
	stop    bool
	timeout int // stop only: 0 stops hard, otherwise shut down with this timeout
}

// haUser is the user the HA local resource manager runs its tasks as
// (pve-ha-lrm sets root@pam).
const haUser = "root@pam"

func newHAResource(running bool) *haResource {
	if running {
		return &haResource{state: "started"}
	}
	return &haResource{state: "stopped"}
}

// SetHA adds the guest to the HA resources (managed) or removes it. A
// guest added is in state "started" if it runs, else "stopped". Requests
// already handed to the HA manager for a guest that is removed are
// dropped.
func (s *Server) SetHA(ref proxmox.Ref, managed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.lookupLocked(ref)
	if g == nil {
		return fmt.Errorf("%w: %s", ErrNoGuest, ref)
	}
	switch {
	case managed && g.ha == nil:
		g.ha = newHAResource(g.running)
	case !managed:
		g.ha = nil
	}
	return nil
}

// HoldHA stops the fake's HA manager from acting until release is called.
// Requests handed over meanwhile (their hastart or hastop tasks still
// finish) wait: the service state does not change and no root@pam task
// starts. On release the manager acts on every waiting request, in vmid
// order. Holds nest; release is idempotent. It lets a test look at the
// moment between the hand-over and the HA manager's action.
func (s *Server) HoldHA() (release func()) {
	s.mu.Lock()
	s.haHold++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.haHold--
			if s.haHold > 0 || s.closed {
				return
			}
			vmids := make([]int, 0, len(s.guests))
			for id, g := range s.guests {
				if g.ha != nil && g.ha.cmd != nil {
					vmids = append(vmids, id)
				}
			}
			sort.Ints(vmids)
			for _, id := range vmids {
				s.haActLocked(s.guests[id])
			}
		})
	}
}

// haHandOver is the work of a hastart or hastop task: the request reaches
// the HA stack, and the manager acts unless held.
func (s *Server) haHandOver(ref proxmox.Ref, cmd haCommand) ([]string, int, error) {
	what := "start"
	if cmd.stop {
		what = "stop"
	}
	log := []string{fmt.Sprintf("Requesting HA %s for %s %d", what, kindWord(ref.Type), ref.VMID)}
	g := s.lookupLocked(ref)
	if g == nil || g.ha == nil {
		// ha-manager refuses a resource it does not know, and
		// run_command reports its exit.
		sid := "vm:"
		if ref.Type == proxmox.LXC {
			sid = "ct:"
		}
		sid += fmt.Sprint(ref.VMID)
		cmdline := "ha-manager set " + sid + " --state started"
		if cmd.stop {
			cmdline = fmt.Sprintf("ha-manager crm-command stop %s %d", sid, cmd.timeout)
		}
		return log, 0, fmt.Errorf("command '%s' failed: exit code 255", cmdline)
	}
	g.ha.cmd = &cmd
	s.haActLocked(g)
	return log, 0, nil
}

// haActLocked is the HA manager acting on the guest's waiting request:
// the CRM updates the service state and the LRM starts its task, if the
// guest is not in the state asked for already. Called with s.mu held.
func (s *Server) haActLocked(g *guest) {
	ha := g.ha
	if ha == nil || ha.cmd == nil || ha.busy || s.haHold > 0 || s.closed {
		return
	}
	cmd := *ha.cmd
	ha.cmd = nil
	ref := g.ref
	lxc := g.isLXC()
	var typ string
	var work func() ([]string, int, error)
	switch {
	case !cmd.stop:
		ha.state = "started"
		if g.running {
			return
		}
		typ = "qmstart"
		if lxc {
			typ = "vzstart"
		}
		work = func() ([]string, int, error) { return s.startWorkLocked(ref, false) }
	case ha.state == "stopped":
		// The CRM ignores a stop of a stopped service.
		return
	default:
		ha.state = "request_stop"
		if !g.running {
			ha.state = "stopped"
			return
		}
		switch {
		case cmd.timeout == 0:
			typ = "qmstop"
			if lxc {
				typ = "vzstop"
			}
			work = func() ([]string, int, error) { return s.stopWorkLocked(ref, false) }
		case lxc:
			typ = "vzshutdown"
			work = func() ([]string, int, error) { return s.shutdownWorkLocked(ref, false, false, cmd.timeout) }
		default:
			typ = "qmshutdown"
			work = func() ([]string, int, error) { return s.shutdownWorkLocked(ref, false, true, cmd.timeout) }
		}
	}
	ha.busy = true
	s.startTaskAs(haUser, nil, typ, ref, func() ([]string, int, error) {
		log, w, err := work()
		if cur := s.lookupLocked(ref); cur != nil && cur.ha != nil {
			cur.ha.busy = false
			switch {
			case err != nil:
				cur.ha.state = "error"
			case cmd.stop:
				cur.ha.state = "stopped"
			}
			s.haActLocked(cur) // a request that arrived meanwhile
		}
		return log, w, err
	})
}

// haStatus is get_service_status for a guest.
func (s *Server) haStatus(g *guest) map[string]any {
	if g.ha == nil {
		return map[string]any{"managed": 0}
	}
	m := map[string]any{"managed": 1, "state": g.ha.state}
	if s.cfg.version.haGroupField() {
		m["group"] = nil // resources without a group, as the fake's are
	}
	return m
}
