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
//     service state (PVE::HA::Manager update_crm_commands queues a stop,
//     next_state_started turns it into "request_stop"), and the node's
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
// The fake's HA manager runs a round (the CRM's state machine, then the
// LRM's action) when a request is handed over, when its own task ends, and
// when a hold ([Server.HoldHA]) is released. A round enforces the service
// state as the LRM does: a "started" guest found stopped is started, a
// "stopped" one found running is shut down. Between rounds it does not
// notice a guest that changed behind its back ([Server.SetRunning]). It
// does not fence nodes, migrate, or retry and relocate a failed start: a
// failed start or stop leaves the service in state "error", where the HA
// stack refuses new requests until an operator sets the resource
// "disabled" ([Server.SetHAState]), which moves it to "stopped". The
// resource states "started", "stopped" and "disabled" are emulated;
// "ignored" (the HA stack lets requests go straight to the guest and
// status reports it unmanaged) is not.

// haResource is a guest's entry in the HA resources, with the manager's
// view of it. Guarded by Server.mu.
type haResource struct {
	// want is the state the resource configuration requests ("ha-manager
	// set --state"): "started", "stopped" or "disabled". The CRM sets it
	// to "stopped" when it takes on a stop command.
	want string
	// state is the CRM's service state: "started", "stopped",
	// "request_stop" or "error".
	state string
	// stop is a "crm-command stop" the CRM has not taken on yet: its
	// timeout. A later one replaces it, as in the manager status.
	stop *int
	// busy is set while the local resource manager's task for the guest
	// runs; the LRM runs one task per guest at a time.
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
		return &haResource{want: "started", state: "started"}
	}
	return &haResource{want: "stopped", state: "stopped"}
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

// SetHAState is "ha-manager set <sid> --state <state>" for the guest, as
// an operator runs it: it changes the state the HA resource configuration
// requests to "started", "stopped" or "disabled" ("enabled" is taken for
// "started", as PVE::HA::Config does), then the HA manager runs a round
// unless held. As ha-manager does, it refuses a guest that is no HA
// resource ("no such resource 'vm:100'") and, for every state but
// "disabled", a service in state "error" (PVE::API2::HA::Resources
// check_service_state); setting "disabled" is how a service leaves
// "error" (PVE::HA::Manager next_state_error), to "stopped". A service
// configured "stopped" or "disabled" that is started is stopped by the
// manager, shut down with the LRM's default timeout (next_state_started).
// The state "ignored" is not emulated: it is refused.
func (s *Server) SetHAState(ref proxmox.Ref, state string) error {
	switch state {
	case "enabled":
		state = "started"
	case "started", "stopped", "disabled":
	default:
		return fmt.Errorf("proxmoxtest: HA state %q is not emulated", state)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.lookupLocked(ref)
	switch {
	case g == nil:
		return fmt.Errorf("%w: %s", ErrNoGuest, ref)
	case g.ha == nil:
		return fmt.Errorf("no such resource '%s'", haSID(ref))
	case g.ha.state == "error" && state != "disabled":
		return fmt.Errorf("service '%s' in error state, must be disabled and fixed first", haSID(ref))
	}
	g.ha.want = state
	s.haRoundLocked(g)
	return nil
}

// HoldHA stops the fake's HA manager from acting until release is called.
// Requests handed over meanwhile (their hastart or hastop tasks still
// finish) wait: the service state does not change and no root@pam task
// starts. On release the manager runs a round for every HA-managed guest,
// in vmid order, acting on what was handed over as Proxmox's CRM does on
// its next round: a start and a stop handed over for a stopped guest leave
// it started (the CRM ignores a stop of a stopped service), the same two
// for a started guest stop it. Holds nest; release is idempotent. It lets
// a test look at the moment between the hand-over and the HA manager's
// action.
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
				if g.ha != nil {
					vmids = append(vmids, id)
				}
			}
			sort.Ints(vmids)
			for _, id := range vmids {
				s.haRoundLocked(s.guests[id])
			}
		})
	}
}

// haSID is the HA resource id of a guest: "vm:100" or "ct:200".
func haSID(ref proxmox.Ref) string {
	if ref.Type == proxmox.LXC {
		return fmt.Sprintf("ct:%d", ref.VMID)
	}
	return fmt.Sprintf("vm:%d", ref.VMID)
}

// haHandOver is the work of a hastart or hastop task: the ha-manager
// command it runs ("set <sid> --state started" or "crm-command stop <sid>
// <timeout>"), then a round of the HA manager unless held. ha-manager
// refuses a guest that is no HA resource (PVE::HA::Config
// service_is_ha_managed, update_resources_config), and one in state
// "error" (PVE::API2::HA::Resources::check_service_state); run_command
// reports its exit as the task's error.
func (s *Server) haHandOver(ref proxmox.Ref, cmd haCommand) ([]string, int, error) {
	what, cmdline := "start", "ha-manager set "+haSID(ref)+" --state started"
	if cmd.stop {
		what, cmdline = "stop", fmt.Sprintf("ha-manager crm-command stop %s %d", haSID(ref), cmd.timeout)
	}
	log := []string{fmt.Sprintf("Requesting HA %s for %s %d", what, kindWord(ref.Type), ref.VMID)}
	failed := fmt.Errorf("command '%s' failed: exit code 255", cmdline)
	g := s.lookupLocked(ref)
	switch {
	case g == nil || g.ha == nil:
		// What ha-manager prints on stderr, which the task log shows:
		// service_is_ha_managed for a stop; for a start the resource
		// update finds no such resource.
		why := fmt.Sprintf("no such resource '%s'", haSID(ref))
		if cmd.stop {
			why = fmt.Sprintf("resource '%s' is not HA managed", haSID(ref))
		}
		return append(log, why), 0, failed
	case g.ha.state == "error":
		return append(log, fmt.Sprintf("service '%s' in error state, must be disabled and fixed first", haSID(ref))), 0, failed
	}
	if cmd.stop {
		timeout := cmd.timeout
		g.ha.stop = &timeout
	} else {
		g.ha.want = "started"
	}
	s.haRoundLocked(g)
	return log, 0, nil
}

// haRoundLocked is one round of the HA manager for the guest: the CRM's
// state machine for the service (PVE::HA::Manager next_state_stopped,
// next_state_started, next_state_request_stop), then the LRM's action on
// the state it has (PVE::HA::LRM exec_resource_agent, through
// PVE::HA::Resources::PVEVM or PVECT start and shutdown). It does nothing
// while the manager is held or the LRM's task for the guest runs. Called
// with s.mu held.
func (s *Server) haRoundLocked(g *guest) {
	ha := g.ha
	if ha == nil || ha.busy || s.haHold > 0 || s.closed {
		return
	}
	// The CRM. A stop command is taken on by a started service only; a
	// stopped one ignores it, and starts if the configuration asks for
	// it (through "request_start", which the fake does not show).
	stopTimeout := -1 // none given: the LRM's default applies
	switch ha.state {
	case "stopped":
		ha.stop = nil
		if ha.want == "started" {
			ha.state = "started"
		}
	case "started":
		// next_state_started: a configuration asking for "stopped" or
		// "disabled" stops the service before any command is read; a
		// stop command does so only for a service configured started.
		switch {
		case ha.want != "started":
			ha.state = "request_stop"
		case ha.stop != nil:
			stopTimeout = *ha.stop
			ha.want, ha.state = "stopped", "request_stop"
		}
		ha.stop = nil
	case "error":
		// next_state_error: only "disabled" leaves the error state, to
		// "stopped" (where a disabled service stays); change_service_state
		// drops any command queued meanwhile.
		if ha.want == "disabled" {
			ha.state, ha.stop = "stopped", nil
		}
	}
	// The LRM: act only if the guest is not in the state asked for.
	ref, lxc := g.ref, g.isLXC()
	var typ string
	var work func() ([]string, int, error)
	switch ha.state {
	case "started":
		if g.running {
			return
		}
		typ = "qmstart"
		if lxc {
			typ = "vzstart"
		}
		work = func() ([]string, int, error) { return s.startWorkLocked(ref, false) }
	case "request_stop", "stopped":
		if !g.running {
			if ha.state == "request_stop" {
				ha.state = "stopped" // the LRM reports success at once
			}
			return
		}
		// PVEVM and PVECT shutdown: the timeout defaults to 60; 0 stops
		// hard, else a QEMU shutdown is forced after it, an LXC one is
		// not.
		timeout := stopTimeout
		if timeout < 0 {
			timeout = 60
		}
		switch {
		case timeout == 0:
			typ = "qmstop"
			if lxc {
				typ = "vzstop"
			}
			work = func() ([]string, int, error) { return s.stopWorkLocked(ref, false) }
		case lxc:
			typ = "vzshutdown"
			work = func() ([]string, int, error) { return s.shutdownWorkLocked(ref, false, false, timeout) }
		default:
			typ = "qmshutdown"
			work = func() ([]string, int, error) { return s.shutdownWorkLocked(ref, false, true, timeout) }
		}
	default: // "error": the LRM leaves the service alone
		return
	}
	ha.busy = true
	s.startTaskAs(haUser, nil, typ, ref, func() ([]string, int, error) {
		log, w, err := work()
		ha.busy = false
		switch {
		case err != nil && ha.state != "stopped":
			// The CRM does not read the LRM's result for a
			// stopped service; for the others a failure is an
			// error (the fake does not retry or relocate).
			ha.state = "error"
		case err == nil && ha.state == "request_stop":
			ha.state = "stopped"
		}
		if cur := s.lookupLocked(ref); cur != nil && cur.ha == ha {
			s.haRoundLocked(cur) // what was handed over meanwhile
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
