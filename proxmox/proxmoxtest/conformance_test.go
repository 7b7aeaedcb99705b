package proxmoxtest

// Conformance cases: each states one Proxmox behaviour the fake emulates,
// with the function in Proxmox's Perl sources that decides it (repository,
// file, function), so that a reader can check the case against the source
// and a change to the fake that drifts from Proxmox fails here.

import (
	"testing"

	"github.com/guestward/guestward/proxmox"
)

// TestConformanceMissingVMPowerText: stop, shutdown and reboot of a VM whose
// config is not on the node fail with check_running's text, not
// load_config's.
//
// Source: qemu-server, src/PVE/QemuConfig.pm, assert_config_exists_on_node
// (called by src/PVE/QemuServer.pm check_running); reboot checks in the
// handler (src/PVE/API2/Qemu.pm vm_reboot), stop and shutdown in the worker
// (src/PVE/QemuServer.pm _do_vm_stop).
func TestConformanceMissingVMPowerText(t *testing.T) {
	s := Start(t, WithNodes("pve1", "pve2"), WithManualTasks())
	mustAdd(t, s, GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100})
	const want = "unable to find configuration file for VM 100 on node 'pve2'"
	for _, action := range []string{"stop", "shutdown"} {
		tk := finish(t, s, do(t, s, "POST", "/nodes/pve2/qemu/100/status/"+action, nil))
		if tk.ExitStatus != want {
			t.Errorf("%s: exit status %q, want %q", action, tk.ExitStatus, want)
		}
	}
	rp := do(t, s, "POST", "/nodes/pve2/qemu/100/status/reboot", nil)
	if rp.Code != 500 || rp.Status != want {
		t.Errorf("reboot: %d %q, want 500 %q", rp.Code, rp.Status, want)
	}
}

// TestConformanceStopStoppedLockedVM: stopping or shutting down a VM that
// does not run succeeds even when it is locked: nothing runs, so the
// config (and its lock) is never read.
//
// Source: qemu-server, src/PVE/QemuServer.pm, _do_vm_stop (returns when
// check_running finds no process, before load_config and check_lock).
func TestConformanceStopStoppedLockedVM(t *testing.T) {
	s := Start(t, WithManualTasks())
	r := mustAdd(t, s, GuestSpec{Type: proxmox.QEMU, VMID: 100, Lock: "backup"})
	for _, action := range []string{"stop", "shutdown"} {
		tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/"+action, nil))
		if tk.ExitStatus != "OK" {
			t.Errorf("%s of a stopped, locked VM: exit status %q, want OK", action, tk.ExitStatus)
		}
	}
	// A running one still has its lock checked.
	if err := s.SetRunning(r, true); err != nil {
		t.Fatal(err)
	}
	tk := finish(t, s, do(t, s, "POST", guestPath(r)+"/status/stop", nil))
	if tk.ExitStatus != "VM is locked (backup)" {
		t.Errorf("stop of a running, locked VM: exit status %q", tk.ExitStatus)
	}
}
