package proxmoxtest

// Conformance cases: each states one Proxmox behaviour the fake emulates,
// with the function in Proxmox's Perl sources that decides it (repository,
// file, function), so that a reader can check the case against the source
// and a change to the fake that drifts from Proxmox fails here.

import (
	"context"
	"strings"
	"testing"
	"time"

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

// TestConformanceAuthTextsByVersion: a bad token's 401 names the reason
// until pve-manager 9.1.4 and 8.4.16 and says only "Authentication failed!"
// from 9.1.5 and 8.4.17; 9.0 names it.
//
// Source: pve-manager, PVE/HTTPServer.pm, auth_handler (commit 26c10a2e
// wraps verify_token and verify_ticket in an eval); the specific reasons
// come from pve-access-control, src/PVE/AccessControl.pm, verify_token.
func TestConformanceAuthTextsByVersion(t *testing.T) {
	for _, tc := range []struct {
		version string
		generic bool
	}{
		{"8.4.16", false}, {"8.4.17", true}, {PVE90, false}, {"9.1.4", false}, {"9.1.5", true}, {PVE92, true},
	} {
		s := Start(t, WithVersion(tc.version))
		want := "no such token 'xy' for user 'root@pam'"
		if tc.generic {
			want = "Authentication failed!"
		}
		rp := do(t, s, "GET", "/version", nil, withHeader("Authorization", "PVEAPIToken=root@pam!xy=z"))
		if rp.Code != 401 || rp.Status != want {
			t.Errorf("%s: %d %q, want 401 %q", tc.version, rp.Code, rp.Status, want)
		}
	}
}

// TestConformanceTicketMaximumAge: a ticket is valid while its age in
// whole seconds lies strictly below the lifetime; at exactly the lifetime
// it is refused.
//
// Source: pve-common, src/PVE/Ticket.pm, verify_rsa_ticket ("$age <
// $max_age"), called by pve-access-control src/PVE/AccessControl.pm
// verify_ticket with the 2 h ticket lifetime.
func TestConformanceTicketMaximumAge(t *testing.T) {
	clk := NewManualClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := Start(t, WithUser("root@pam", "pw"), WithClock(clk), WithVersion(PVE84))
	ticket, _ := login(t, s, "root@pam", "pw")
	clk.Advance(2*time.Hour - time.Second)
	if rp := do(t, s, "GET", "/version", nil, cookie(ticket)); rp.Code != 200 {
		t.Fatalf("a ticket one second short of its lifetime: %d %q", rp.Code, rp.Status)
	}
	clk.Advance(time.Second)
	if rp := do(t, s, "GET", "/version", nil, cookie(ticket)); rp.Code != 401 || rp.Status != "permission denied - invalid PVE ticket" {
		t.Fatalf("a ticket exactly at its lifetime: %d %q, want 401", rp.Code, rp.Status)
	}
}

// TestConformancePermissionText: a 403 names the ACL path and the
// privilege the endpoint's permission schema asks for.
//
// Source: pve-common, src/PVE/Exception.pm, raise_perm_exc; pve-access-control,
// src/PVE/RPCEnvironment.pm, check_full and check_any; the permission
// schemas of qemu-server src/PVE/API2/Qemu.pm vm_stop and update_vm_async,
// and pve-container src/PVE/API2/LXC.pm resize_vm.
func TestConformancePermissionText(t *testing.T) {
	s := Start(t)
	vm := mustAdd(t, s, vm100(""))
	ct := mustAdd(t, s, ct200(""))
	s.Inject(Fault{Status: 403})
	for _, tc := range []struct{ method, path, want string }{
		{"POST", guestPath(vm) + "/status/stop", "Permission check failed (/vms/100, VM.PowerMgmt)"},
		{"GET", guestPath(vm) + "/config", "Permission check failed (/vms/100, VM.Audit)"},
		{"POST", guestPath(vm) + "/config", "Permission check failed (/vms/100, VM.Config.Disk|VM.Config.CDROM|VM.Config.CPU|VM.Config.Memory|VM.Config.Network|VM.Config.HWType|VM.Config.Options|VM.Config.Cloudinit)"},
		{"PUT", guestPath(ct) + "/resize", "Permission check failed (/vms/200, VM.Config.Disk)"},
	} {
		rp := do(t, s, tc.method, tc.path, nil)
		if rp.Code != 403 || rp.Status != tc.want {
			t.Errorf("%s %s: %d %q, want 403 %q", tc.method, tc.path, rp.Code, rp.Status, tc.want)
		}
	}
}

// TestConformancePropertyStringErrors: a bad NIC or drive value fails
// parameter verification with parse_property_string's own text under the
// option's key: a per-key line for a bad value, the key for an unknown one.
//
// Source: pve-common, src/PVE/JSONSchema.pm, check_prop (which prefixes
// "invalid format - "), check_format and parse_property_string, with
// PVE::Exception's string form; the NIC format is qemu-server
// src/PVE/QemuServer/Network.pm $net_fmt (tag: 1 to 4094).
func TestConformancePropertyStringErrors(t *testing.T) {
	s := Start(t)
	vm := mustAdd(t, s, vm100(""))
	for _, tc := range []struct{ key, value, want string }{
		{"net0", "virtio,bridge=vmbr0,tag=5000", "invalid format - format error\nnet0.tag: value must have a maximum value of 4094\n"},
		{"net0", "virtio,bridge=vmbr0,colour=blue", "invalid format - invalid key in comma-separated list property: colour\n"},
		{"scsi1", "local-lvm:4,colour=blue", "invalid format - invalid key in comma-separated list property: colour\n"},
	} {
		rp := do(t, s, "PUT", guestPath(vm)+"/config", form(tc.key, tc.value))
		if got := rp.errorsMap()[tc.key]; rp.Code != 400 || got != tc.want {
			t.Errorf("%s=%s: %d, errors[%s] = %q, want %q", tc.key, tc.value, rp.Code, tc.key, got, tc.want)
		}
	}
}

// TestConformanceConfigUpdateWindow: between an asynchronous QEMU config
// update's answer and its worker, another writer or a backup lock either
// waits for the worker (before qemu-server 9.1.19: the handler forks with
// the config lock held, and the worker keeps it) or makes the worker fail
// its repeated checks, applying nothing (from 9.1.19: "fork before
// locking"). Never is a stale change applied over the other writer's.
//
// Source: qemu-server, src/PVE/API2/Qemu.pm, update_vm_api (commit
// 797ab238 "api: update vm: fork before locking", first in 9.1.19: its
// $load_and_check_config runs in the handler and again in the worker under
// PVE::QemuConfig->lock_config); pve-guest-common, src/PVE/AbstractConfig.pm,
// lock_config and check_lock.
func TestConformanceConfigUpdateWindow(t *testing.T) {
	post := func(t *testing.T, s *Server, r proxmox.Ref, digest string) Task {
		t.Helper()
		rp := do(t, s, "POST", guestPath(r)+"/config", form("memory", "4096", "digest", digest))
		if rp.Code != 200 {
			t.Fatalf("POST config: %d %q", rp.Code, rp.Status)
		}
		return taskOf(t, s, rp)
	}
	for _, tc := range []struct {
		name string
		opts []Option
		fork bool // qemu-server 9.1.19 or later
	}{
		{"pve 8.4", []Option{WithVersion(PVE84)}, false},
		{"pve 9.2.4", []Option{WithVersion("9.2.4")}, false},
		{"qemu-server 9.1.18", []Option{WithVersion(PVE92), WithQemuServerVersion("9.1.18")}, false},
		{"pve 9.2.5", []Option{WithVersion(PVE92)}, true},
		{"qemu-server 9.1.19", []Option{WithQemuServerVersion("9.1.19"), WithVersion("9.2.0")}, true},
	} {
		t.Run(tc.name+"/other writer", func(t *testing.T) {
			s := Start(t, append(tc.opts, WithManualTasks())...)
			r := mustAdd(t, s, vm100(""))
			tk := post(t, s, r, mustGuest(t, s, r).Digest)
			errc := make(chan error, 1)
			go func() { errc <- s.UpdateConfig(r, map[string]string{"memory": "3072"}, nil) }()
			if !tc.fork {
				// The writer queues behind the worker's config lock.
				waitLockWaiter(t, s, r)
				if got := mustGuest(t, s, r).Config["memory"]; got != "2048" {
					t.Fatalf("the other writer got in while the worker held the lock: memory %s", got)
				}
			} else if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if err := s.FinishTask(tk.UPID); err != nil {
				t.Fatal(err)
			}
			if !tc.fork {
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			tk, _ = s.Task(tk.UPID)
			st := mustGuest(t, s, r)
			if tc.fork {
				if tk.ExitStatus != "checksum mismatch (file change by other user?)" || st.Config["memory"] != "3072" {
					t.Fatalf("exit %q, memory %s: want the task to fail its digest check and apply nothing", tk.ExitStatus, st.Config["memory"])
				}
				if len(tk.Log) != 1 {
					t.Errorf("log %q: the worker prints nothing before its checks pass", tk.Log)
				}
			} else if tk.ExitStatus != "OK" || st.Config["memory"] != "3072" {
				t.Fatalf("exit %q, memory %s: want the task's change first, then the waiting writer's", tk.ExitStatus, st.Config["memory"])
			}
		})
		t.Run(tc.name+"/backup lock", func(t *testing.T) {
			s := Start(t, append(tc.opts, WithManualTasks())...)
			r := mustAdd(t, s, vm100(""))
			tk := post(t, s, r, "")
			errc := make(chan error, 1)
			go func() { errc <- s.SetLock(r, "backup") }()
			if !tc.fork {
				waitLockWaiter(t, s, r)
			} else if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if err := s.FinishTask(tk.UPID); err != nil {
				t.Fatal(err)
			}
			if !tc.fork {
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			tk, _ = s.Task(tk.UPID)
			st := mustGuest(t, s, r)
			want, mem := "OK", "4096"
			if tc.fork {
				want, mem = "VM is locked (backup)", "2048"
			}
			if tk.ExitStatus != want || st.Config["memory"] != mem || st.Lock != "backup" {
				t.Fatalf("exit %q, memory %s, lock %q; want %q, %s, backup", tk.ExitStatus, st.Config["memory"], st.Lock, want, mem)
			}
		})
	}
}

// waitLockWaiter waits until a writer queues for r's config lock.
func waitLockWaiter(t *testing.T, s *Server, r proxmox.Ref) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.waitFor(ctx, func() bool {
		g := s.lookupLocked(r)
		return g != nil && g.cfgLockWaiters > 0
	})
	if err != nil {
		t.Fatalf("no writer queued for the config lock: %v", err)
	}
}

// TestConformanceEmptyValues: "tags=" sent without a value is an option
// (tags set to the empty list, which the file keeps as a blank value), not
// "no options specified"; deleting the last device of the boot order
// writes an empty boot order, not "order=".
//
// Source: pve-http-server, src/PVE/APIServer/AnyEvent.pm, decode_urlencoded
// (a key without a value is kept, undefined); pve-guest-common,
// src/PVE/GuestHelpers.pm, get_unique_tags (undefined gives ""); qemu-server,
// src/PVE/API2/Qemu.pm, update_vm_api, and src/PVE/QemuServer.pm,
// print_bootorder (an empty list prints ""), write_vm_config and
// parse_vm_config (a blank value reads back as the white space after the
// colon).
func TestConformanceEmptyValues(t *testing.T) {
	s := Start(t)
	spec := vm100("")
	spec.Config["tags"] = "a;b"
	vm := mustAdd(t, s, spec)
	ct := mustAdd(t, s, ct200(""))
	for _, r := range []proxmox.Ref{vm, ct} {
		rp := do(t, s, "PUT", guestPath(r)+"/config", rawBody("tags="))
		if rp.Code != 200 {
			t.Fatalf("%s tags=: %d %q", r, rp.Code, rp.Status)
		}
		if v, ok := mustGuest(t, s, r).Config["tags"]; !ok || strings.TrimSpace(v) != "" {
			t.Errorf("%s: tags %q (present %v), want the key kept with a blank value", r, v, ok)
		}
	}
	if rp := do(t, s, "PUT", guestPath(vm)+"/config", form("delete", "scsi0,net0")); rp.Code != 200 {
		t.Fatalf("delete: %d %q", rp.Code, rp.Status)
	}
	if st := mustGuest(t, s, vm); !strings.Contains(st.File, "\nboot:  \n") && !strings.HasPrefix(st.File, "boot:  \n") {
		t.Errorf("file %q: want an empty boot order, not order=", st.File)
	}
}

// TestConformanceDescriptions: a QEMU description loses trailing white
// space by Perl's Unicode rules (NBSP and the ideographic space too); an
// LXC one keeps it. A description of "" or "0" is not written to the
// current section and reads back absent.
//
// Source: qemu-server, src/PVE/QemuServer.pm, parse_vm_config ("s/\s+$//"
// on the text decoded by pve-common PVE::Tools::decode_text) and
// write_vm_config ("if ($descr)"; "#" only for the pending section);
// pve-container, src/PVE/LXC/Config.pm, parse_pct_config and
// write_pct_config.
func TestConformanceDescriptions(t *testing.T) {
	s := Start(t)
	vm := mustAdd(t, s, vm100(""))
	ct := mustAdd(t, s, ct200(""))
	const text = "web\u00a0\u3000 \u2028"
	for _, tc := range []struct {
		r    proxmox.Ref
		want string
	}{{vm, "web"}, {ct, text + "\n"}} {
		put(t, s, tc.r, "description", text)
		if got := mustGuest(t, s, tc.r).Config["description"]; got != tc.want {
			t.Errorf("%s: description %q, want %q", tc.r, got, tc.want)
		}
	}
	for _, r := range []proxmox.Ref{vm, ct} {
		for _, v := range []string{"0", ""} {
			put(t, s, r, "description", "something")
			rp := do(t, s, "PUT", guestPath(r)+"/config", map[string]string{"description": v})
			if rp.Code != 200 {
				t.Fatalf("%s description=%q: %d %q", r, v, rp.Code, rp.Status)
			}
			if d, ok := mustGuest(t, s, r).Config["description"]; ok {
				t.Errorf("%s description=%q reads back %q, want absent", r, v, d)
			}
		}
	}
}

// TestConformanceDecimalDiskSizes: a new disk "storage:<GiB>" with a
// fraction records the size Proxmox allocates: QEMU rounds up to a whole
// KiB, LXC truncates to a whole MiB.
//
// Source: qemu-server, src/PVE/API2/Qemu.pm, create_disks (with pve-common
// src/PVE/Tools.pm convert_size, which rounds up); pve-container,
// src/PVE/LXC.pm, create_disks ("int($size_gb * 1024) * 1024" KiB).
func TestConformanceDecimalDiskSizes(t *testing.T) {
	s := Start(t)
	vm := mustAdd(t, s, vm100(""))
	ct := mustAdd(t, s, ct200(""))
	put(t, s, vm, "scsi1", "local-lvm:1.0001")
	// 1.0001 GiB = 1048680.8576 KiB, rounded up to 1048681 KiB.
	if got := mustGuest(t, s, vm).Config["scsi1"]; got != "local-lvm:vm-100-disk-1,size=1048681K" {
		t.Errorf("qemu: %q", got)
	}
	put(t, s, ct, "mp0", "local-lvm:1.0009,mp=/data")
	// 1.0009 GiB = 1024.92 MiB, truncated to 1024 MiB.
	if got := mustGuest(t, s, ct).Config["mp0"]; got != "local-lvm:vm-200-disk-1,mp=/data,size=1G" {
		t.Errorf("lxc: %q", got)
	}
}

// TestConformanceTagOrder: with the case-sensitive tag style, tags keep
// their case and sort by code point as Perl's cmp does (upper case before
// lower case); by default they sort case-insensitively and are
// lower-cased; with the "config" ordering they are not sorted.
//
// Source: pve-guest-common, src/PVE/GuestHelpers.pm, get_unique_tags.
func TestConformanceTagOrder(t *testing.T) {
	for _, tc := range []struct {
		style TagStyle
		want  string
	}{
		{TagStyle{}, "a;b;zeta"},
		{TagStyle{CaseSensitive: true}, "B;Zeta;a;b"},
		{TagStyle{ConfigOrder: true}, "zeta;b;a"},
		{TagStyle{CaseSensitive: true, ConfigOrder: true}, "Zeta;b;a;B"},
	} {
		s := Start(t, WithTagStyle(tc.style))
		vm := mustAdd(t, s, vm100(""))
		put(t, s, vm, "tags", "Zeta;b;a;B")
		if got := mustGuest(t, s, vm).Config["tags"]; got != tc.want {
			t.Errorf("%+v: tags %q, want %q", tc.style, got, tc.want)
		}
	}
}
