package proxmox

import (
	"errors"
	"testing"
)

// TestMissingGuestTexts checks that every text Proxmox uses for a guest
// that is not on the addressed node classifies as ErrNotFound, whether it
// comes synchronously (a reboot's 500) or as a task's exit status (stop and
// shutdown), and that texts about other missing things do not.
func TestMissingGuestTexts(t *testing.T) {
	tests := []struct {
		name   string
		text   string
		found  bool
		reason string
	}{
		{"qemu check_running", "unable to find configuration file for VM 100 on node 'pve1'", false,
			"PVE::QemuConfig assert_config_exists_on_node, called by check_running (PVE 6.1 and later)"},
		{"qemu check_running old", "unable to find configuration file for VM 100 - no such machine", false,
			"check_running before PVE 6.1"},
		{"guest_type CT", "unable to find configuration file for CT 200 on node 'pve1'", false,
			"the same helper spelled with PVE::LXC::Config's guest_type"},
		{"qemu load_config", "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist", false,
			"PVE::AbstractConfig load_config"},
		{"lxc load_config", "Configuration file 'nodes/pve1/lxc/200.conf' does not exist", false,
			"PVE::AbstractConfig load_config through PVE::LXC::Config"},
		{"missing hookscript", "script 'local:snippets/x.pl' does not exist", true,
			"a missing snippet is not a missing guest"},
		{"missing volume", "volume 'mp0' for container '200' does not exist", true,
			"a missing volume is not a missing guest"},
		{"another file", "unable to find configuration file for storage 'x'", true,
			"only a guest's configuration file means the guest is missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := !tc.found
			for _, err := range []error{
				&APIError{StatusCode: 500, Method: "POST", Path: "/nodes/pve1/qemu/100/status/reboot", Message: tc.text},
				&TaskError{UPID: testUPID, ExitStatus: tc.text},
			} {
				if got := errors.Is(err, ErrNotFound); got != want {
					t.Errorf("%T %q: ErrNotFound = %v, want %v (%s)", err, tc.text, got, want, tc.reason)
				}
			}
		})
	}
}
