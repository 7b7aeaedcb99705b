package proxmoxtest

import (
	"errors"
	"testing"

	"github.com/guestward/guestward/proxmox"
)

// haErrorVM adds an HA-managed VM and drives its service into state
// "error": the HA manager's start fails on the VM's lock. The lock is
// cleared again before it returns.
func haErrorVM(t *testing.T, s *Server) proxmox.Ref {
	t.Helper()
	spec := vm100("")
	spec.HA, spec.Lock = true, "backup"
	r := mustAdd(t, s, spec)
	finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil))
	lrm, ok := lrmTask(t, s, r)
	if !ok {
		t.Fatal("no HA manager task")
	}
	_ = s.FinishTask(lrm.UPID)
	if st := mustGuest(t, s, r); st.HAState != "error" {
		t.Fatalf("HA state %q after a failed start", st.HAState)
	}
	_ = s.SetLock(r, "")
	return r
}

// TestConformanceHADisableLeavesError: "ha-manager set --state" is refused
// for a service in state "error" unless the state asked for is "disabled"
// (pve-ha-manager, src/PVE/API2/HA/Resources.pm, check_service_state).
// The CRM moves an errored service configured "disabled" to "stopped" and
// nothing else (src/PVE/HA/Manager.pm, next_state_error); a disabled
// service stays stopped (next_state_stopped) until a start sets it
// "started" again (qemu-server, src/PVE/API2/Qemu.pm, vm_start: "ha-manager
// set vm:<vmid> --state started").
func TestConformanceHADisableLeavesError(t *testing.T) {
	s := Start(t, WithManualTasks())
	r := haErrorVM(t, s)

	for _, st := range []string{"started", "stopped", "enabled"} {
		err := s.SetHAState(r, st)
		if err == nil || err.Error() != "service 'vm:100' in error state, must be disabled and fixed first" {
			t.Fatalf("set %s in error: %v", st, err)
		}
	}
	if err := s.SetHAState(r, "disabled"); err != nil {
		t.Fatal(err)
	}
	if st := mustGuest(t, s, r); st.HAState != "stopped" || st.Running {
		t.Fatalf("after disable: HA %q, running %v", st.HAState, st.Running)
	}
	if ha := haState(t, s, r); ha["managed"] != 1.0 || ha["state"] != "stopped" {
		t.Fatalf("status ha = %v", ha)
	}
	if _, ok := lrmTask(t, s, r); ok {
		t.Fatal("the HA manager acted on a disabled, stopped service")
	}

	// A start request of the disabled service hands "started" over; the
	// manager starts the guest.
	if tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/start", nil)); tk.Type != "hastart" || tk.ExitStatus != "OK" {
		t.Fatalf("hastart %+v", tk)
	}
	lrm, ok := lrmTask(t, s, r)
	if !ok || lrm.Type != "qmstart" {
		t.Fatalf("HA manager task %+v, %v", lrm, ok)
	}
	_ = s.FinishTask(lrm.UPID)
	if st := mustGuest(t, s, r); st.HAState != "started" || !st.Running {
		t.Fatalf("after start: HA %q, running %v", st.HAState, st.Running)
	}
}

// TestConformanceHAConfiguredStop: a started service whose configuration
// asks for "stopped" or "disabled" goes to "request_stop" without a
// timeout (pve-ha-manager, src/PVE/HA/Manager.pm, next_state_started), so
// the LRM shuts the guest down with its default of 60 seconds, forced for
// QEMU (src/PVE/HA/Resources/PVEVM.pm, shutdown; PVECT.pm, shutdown). The
// configuration is read before any command: a "crm-command stop" queued in
// the same round is dropped with the state change (change_service_state
// clears the service's data), so even a hard stop handed over meanwhile
// ends up as the shutdown.
func TestConformanceHAConfiguredStop(t *testing.T) {
	for _, tc := range []struct {
		name, state string
		ct          bool
		stopFirst   bool
		lrm         string
	}{
		{"qemu stopped", "stopped", false, false, "qmshutdown"},
		{"qemu disabled", "disabled", false, false, "qmshutdown"},
		{"lxc disabled", "disabled", true, false, "vzshutdown"},
		{"qemu stopped with a queued hard stop", "stopped", false, true, "qmshutdown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Start(t, WithManualTasks())
			spec := vm100("")
			if tc.ct {
				spec = ct200("")
			}
			spec.HA, spec.Running = true, true
			r := mustAdd(t, s, spec)
			release := s.HoldHA()
			if tc.stopFirst {
				if tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/stop", nil)); tk.ExitStatus != "OK" {
					t.Fatalf("hastop %q", tk.ExitStatus)
				}
			}
			if err := s.SetHAState(r, tc.state); err != nil {
				t.Fatal(err)
			}
			if st := mustGuest(t, s, r); st.HAState != "started" {
				t.Fatalf("held: HA %q", st.HAState)
			}
			release()
			if st := mustGuest(t, s, r); st.HAState != "request_stop" || !st.Running {
				t.Fatalf("after the round: HA %q, running %v", st.HAState, st.Running)
			}
			lrm, ok := lrmTask(t, s, r)
			if !ok || lrm.Type != tc.lrm {
				t.Fatalf("HA manager task %+v, want %s", lrm, tc.lrm)
			}
			_ = s.FinishTask(lrm.UPID)
			if st := mustGuest(t, s, r); st.HAState != "stopped" || st.Running {
				t.Fatalf("after: HA %q, running %v", st.HAState, st.Running)
			}
			if _, ok := lrmTask(t, s, r); ok {
				t.Fatal("a second HA manager task")
			}
		})
	}
}

// TestConformanceHASetStateRefusals: ha-manager's own refusals, and what
// the fake does not emulate.
func TestConformanceHASetStateRefusals(t *testing.T) {
	s := Start(t, WithManualTasks())
	r := mustAdd(t, s, vm100(""))
	// update_single_resource_config_inplace (pve-ha-manager,
	// src/PVE/HA/Config.pm) finds no resource to update.
	if err := s.SetHAState(r, "started"); err == nil || err.Error() != "no such resource 'vm:100'" {
		t.Fatalf("unmanaged: %v", err)
	}
	if err := s.SetHAState(qemu("pve", 999), "started"); !errors.Is(err, ErrNoGuest) {
		t.Fatalf("missing guest: %v", err)
	}
	_ = s.SetHA(r, true)
	for _, st := range []string{"ignored", "request_stop", ""} {
		if err := s.SetHAState(r, st); err == nil {
			t.Fatalf("state %q accepted", st)
		}
	}
	// "enabled" is the old name of "started" (read_and_check_resources_config).
	if err := s.SetHAState(r, "enabled"); err != nil {
		t.Fatal(err)
	}
	if lrm, ok := lrmTask(t, s, r); !ok || lrm.Type != "qmstart" || mustGuest(t, s, r).HAState != "started" {
		t.Fatalf("enabled: %+v %v", lrm, ok)
	}
}
