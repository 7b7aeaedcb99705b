package proxmoxtest

import (
	"net/url"
	"testing"

	"github.com/guestward/guestward/proxmox"
)

// TestLockTimeoutFault: the fault fails a request with lock_file_full's
// timeout where Proxmox takes the guest's config lock for that endpoint
// and version, synchronously or in the task, and changes nothing.
func TestLockTimeoutFault(t *testing.T) {
	const qemuText = "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
	const lxcText = "can't lock file '/run/lock/lxc/pve-config-200.lock' - got timeout"
	tests := []struct {
		name    string
		version string
		ct      bool
		method  string
		sub     string
		body    url.Values
		inTask  bool
	}{
		{"qemu PUT config", PVE84, false, "PUT", "/config", form("cores", "4"), false},
		{"qemu POST config", PVE84, false, "POST", "/config", form("cores", "4"), false},
		{"qemu POST config from 9.2", "9.2.5", false, "POST", "/config", form("cores", "4"), true},
		{"lxc PUT config", PVE84, true, "PUT", "/config", form("cores", "4"), false},
		{"qemu start", PVE74, false, "POST", "/status/start", nil, true},
		{"qemu start 8", PVE84, false, "POST", "/status/start", nil, true},
		{"lxc start before 8.2", PVE81, true, "POST", "/status/start", nil, false},
		{"lxc start from 8.2", PVE82, true, "POST", "/status/start", nil, true},
		{"qemu resize 7", PVE74, false, "PUT", "/resize", form("disk", "scsi0", "size", "40G"), false},
		{"qemu resize 8", PVE80, false, "PUT", "/resize", form("disk", "scsi0", "size", "40G"), true},
		{"lxc resize 7", PVE74, true, "PUT", "/resize", form("disk", "rootfs", "size", "10G"), false},
		{"lxc resize 8", PVE80, true, "PUT", "/resize", form("disk", "rootfs", "size", "10G"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := Start(t, WithVersion(tc.version), WithManualTasks())
			spec, text := vm100(""), qemuText
			if tc.ct {
				spec, text = ct200(""), lxcText
			}
			r := mustAdd(t, s, spec)
			before := mustGuest(t, s, r)
			h := s.Inject(Fault{Guest: r, LockTimeout: true, Times: 1})
			var body any
			if tc.body != nil {
				body = tc.body
			}
			rp := do(t, s, tc.method, guestPath(r)+tc.sub, body)
			if tc.inTask {
				if rp.Code != 200 {
					t.Fatalf("%d %q; the worker takes the lock", rp.Code, rp.Status)
				}
				if tk := finish(t, s, rp); tk.ExitStatus != text {
					t.Fatalf("exit %q, want %q", tk.ExitStatus, text)
				}
			} else if rp.Code != 500 || rp.Status != text {
				t.Fatalf("%d %q, want 500 %q", rp.Code, rp.Status, text)
			}
			after := mustGuest(t, s, r)
			if after.Digest != before.Digest || after.Running != before.Running {
				t.Fatalf("a request that did not get the lock changed the guest: %+v", after)
			}
			if h.Hits() != 1 {
				t.Fatalf("hits %d", h.Hits())
			}
			// Once the holder is done, the same request works.
			rp = do(t, s, tc.method, guestPath(r)+tc.sub, body)
			if rp.Code != 200 {
				t.Fatalf("retry: %d %q", rp.Code, rp.Status)
			}
			if upid, ok := rp.data().(string); ok {
				if tk := finish(t, s, rp); tk.ExitStatus != "OK" {
					t.Fatalf("retry %s: exit %q", upid, tk.ExitStatus)
				}
			}
		})
	}
}

// TestLockTimeoutText names the lock files of PVE::QemuConfig and
// PVE::LXC::Config config_file_lock.
func TestLockTimeoutText(t *testing.T) {
	if got := lockTimeoutText(proxmox.Ref{Node: "n", Type: proxmox.QEMU, VMID: 203}); got != "can't lock file '/var/lock/qemu-server/lock-203.conf' - got timeout" {
		t.Fatal(got)
	}
	if got := lockTimeoutText(proxmox.Ref{Node: "n", Type: proxmox.LXC, VMID: 1000}); got != "can't lock file '/run/lock/lxc/pve-config-1000.lock' - got timeout" {
		t.Fatal(got)
	}
}
