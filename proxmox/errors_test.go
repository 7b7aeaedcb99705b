package proxmox

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

var allClasses = []error{
	ErrNotFound, ErrLocked, ErrDigestMismatch, ErrUnauthorized, ErrForbidden, ErrNotImplemented,
	ErrInvalidParameter, ErrAlreadyRunning, ErrNotRunning, ErrTransient, ErrOutcomeUnknown, ErrTaskFailed,
	ErrShrink, ErrAlreadySized,
}

func className(e error) string { return strings.TrimPrefix(e.Error(), "proxmox: ") }

// TestAPIErrorClasses checks every class against the texts and statuses
// Proxmox answers with (each case names the Perl function that writes its
// text), and that no other class matches.
func TestAPIErrorClasses(t *testing.T) {
	tests := []struct {
		name   string
		err    APIError
		want   []error
		reason string
	}{
		{"qemu config missing", APIError{StatusCode: 500, Method: "GET", Message: "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist"},
			[]error{ErrNotFound}, "pve-guest-common AbstractConfig.pm load_config"},
		{"lxc config missing", APIError{StatusCode: 500, Method: "GET", Message: "Configuration file 'nodes/pve1/lxc/200.conf' does not exist"},
			[]error{ErrNotFound}, "pve-guest-common AbstractConfig.pm load_config"},
		{"no such task", APIError{StatusCode: 400, Method: "GET", Message: "Parameter verification failed.", Errors: map[string]string{"upid": "no such task"}},
			[]error{ErrNotFound, ErrInvalidParameter}, "pve-manager API2/Tasks.pm read_task_status: an unknown UPID is a 400 on upid"},
		{"unparsable upid", APIError{StatusCode: 400, Method: "GET", Message: "Parameter verification failed.", Errors: map[string]string{"upid": "unable to parse worker upid"}},
			[]error{ErrInvalidParameter}, "not a missing task, a bad one"},
		{"unknown node", APIError{StatusCode: 500, Method: "GET", Message: "hostname lookup 'pve9' failed - failed to get address info for: pve9: Name or service not known"},
			[]error{ErrNotFound}, "pve-common Network.pm get_ip_from_hostname, when the request is proxied to the node"},
		{"storage does not exist is not a missing guest", APIError{StatusCode: 500, Method: "PUT", Message: "storage 'nfs1' does not exist"},
			nil, "only the config file text means the guest is missing"},
		{"vm locked", APIError{StatusCode: 500, Method: "POST", Message: "VM is locked (backup)"}, []error{ErrLocked}, "pve-guest-common AbstractConfig.pm check_lock"},
		{"ct locked", APIError{StatusCode: 500, Method: "PUT", Message: "CT is locked (snapshot)"}, []error{ErrLocked}, "pve-guest-common AbstractConfig.pm check_lock"},
		{"digest qemu old", APIError{StatusCode: 500, Method: "POST", Message: "checksum missmatch (file change by other user?)"},
			[]error{ErrDigestMismatch}, "qemu-server before 8.2.5"},
		{"digest qemu new", APIError{StatusCode: 500, Method: "POST", Message: "checksum mismatch (file change by other user?)"},
			[]error{ErrDigestMismatch}, "qemu-server 8.2.5+"},
		{"digest lxc", APIError{StatusCode: 500, Method: "PUT", Message: "detected modified configuration - file changed by other user? Try again."},
			[]error{ErrDigestMismatch}, "pve-common assert_if_modified"},
		{"no ticket", APIError{StatusCode: 401, Method: "GET", Message: "No ticket"}, []error{ErrUnauthorized}, "pve-manager HTTPServer.pm auth_handler"},
		{"auth failed 8.4", APIError{StatusCode: 401, Method: "GET", Message: "Authentication failed!"}, []error{ErrUnauthorized}, "PVE 8.4.x"},
		{"permission", APIError{StatusCode: 403, Method: "POST", Message: "Permission check failed (/vms/100, VM.PowerMgmt)"}, []error{ErrForbidden}, "pve-common Exception.pm: the text of a permission exception"},
		{"not implemented", APIError{StatusCode: 501, Method: "GET", Message: "Method 'GET /nodes/pve/foo' not implemented"}, []error{ErrNotImplemented}, "pve-http-server APIServer/AnyEvent.pm: no handler for the method and path"},
		{"param", APIError{StatusCode: 400, Method: "POST", Message: "Parameter verification failed.", Errors: map[string]string{"cores": "type check ('integer') failed - got 'x'"}},
			[]error{ErrInvalidParameter}, "pve-common JSONSchema.pm validate: a parameter exception"},
		{"already running ct", APIError{StatusCode: 500, Method: "POST", Message: "CT 100 already running"}, []error{ErrAlreadyRunning}, "pve-container API2/LXC/Status.pm vm_start"},
		{"not running", APIError{StatusCode: 500, Method: "POST", Message: "VM 100 not running"}, []error{ErrNotRunning}, "qemu-server API2/Qemu.pm vm_reboot"},
		{"lock timeout write", APIError{StatusCode: 500, Method: "POST", Message: "can't lock file '/var/lock/qemu-server/lock-203.conf' - got timeout"},
			[]error{ErrTransient, ErrLocked}, "pve-common Tools.pm lock_file: lock not taken, nothing done; someone holds the guest's config lock"},
		{"lxc lock timeout", APIError{StatusCode: 500, Method: "PUT", Message: "can't lock file '/run/lock/lxc/pve-config-200.lock' - got timeout"},
			[]error{ErrTransient, ErrLocked}, "PVE::LXC::Config config_file_lock path"},
		{"storage lock timeout", APIError{StatusCode: 500, Method: "POST", Message: "can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"},
			[]error{ErrTransient}, "a storage lock is not the guest's lock"},
		{"lock open failure", APIError{StatusCode: 500, Method: "POST", Message: "can't lock file '/var/lock/qemu-server/lock-203.conf' - can't open file - Permission denied"},
			nil, "only the timeout proves someone else holds it"},
		{"qemu shrink pve7", APIError{StatusCode: 500, Method: "PUT", Message: "shrinking disks is not supported"},
			[]error{ErrShrink}, "qemu-server resize_vm before 8.0.2 ran synchronously"},
		{"lxc shrink", APIError{StatusCode: 500, Method: "PUT", Message: "unable to shrink disk size"},
			[]error{ErrShrink}, "pve-container resize_vm early check"},
		{"lxc same size", APIError{StatusCode: 500, Method: "PUT", Message: "disk is already at specified size"},
			[]error{ErrAlreadySized}, "pve-container resize_vm early check"},
		{"cdrom resize", APIError{StatusCode: 500, Method: "PUT", Message: "you can't resize a cdrom"},
			nil, "terminal, unclassified"},
		{"missing disk", APIError{StatusCode: 500, Method: "PUT", Message: "disk 'scsi3' does not exist"},
			nil, "a missing drive is not a missing guest"},
		{"595 read", APIError{StatusCode: 595, Method: "GET", Message: "Network is unreachable"}, []error{ErrTransient}, "recorded v12: a proxied node that cannot be reached"},
		{"595 write", APIError{StatusCode: 595, Method: "POST", Message: "Connection refused"}, []error{ErrTransient}, "connection to the target node never established"},
		{"596 write", APIError{StatusCode: 596, Method: "POST", Message: "tls"}, []error{ErrTransient}, "TLS to the target node failed"},
		{"597 write", APIError{StatusCode: 597, Method: "POST", Message: "body"}, []error{ErrTransient, ErrOutcomeUnknown}, "request was sent"},
		{"599 read", APIError{StatusCode: 599, Method: "GET", Message: "x"}, []error{ErrTransient}, "read: no outcome to know"},
		{"502 write", APIError{StatusCode: 502, Method: "PUT", Message: "Bad Gateway"}, []error{ErrTransient, ErrOutcomeUnknown}, "proxy in front of PVE"},
		{"503 read", APIError{StatusCode: 503, Method: "GET", Message: "Service Unavailable"}, []error{ErrTransient}, "proxy"},
		{"429", APIError{StatusCode: 429, Method: "POST", Message: "Too Many Requests"}, []error{ErrTransient}, "refused before doing anything"},
		{"plain 500", APIError{StatusCode: 500, Method: "POST", Message: "no options specified"}, nil, "terminal, unclassified"},
		{"paused", APIError{StatusCode: 500, Method: "POST", Message: "VM is paused - cannot shutdown"}, nil, "terminal, unclassified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := error(&tt.err)
			for _, c := range allClasses {
				want := false
				for _, w := range tt.want {
					want = want || w == c
				}
				if got := errors.Is(err, c); got != want {
					t.Errorf("errors.Is(%q, %s) = %v, want %v (%s)", err, className(c), got, want, tt.reason)
				}
			}
			// Wrapping keeps the class.
			wrapped := fmt.Errorf("context: %w", err)
			for _, w := range tt.want {
				if !errors.Is(wrapped, w) {
					t.Errorf("wrapped error lost class %s", className(w))
				}
			}
		})
	}
}

func TestTaskErrorClasses(t *testing.T) {
	tests := []struct {
		exit string
		want []error
	}{
		{"VM is locked (backup)", []error{ErrLocked}},
		{"CT is locked (backup)", []error{ErrLocked}},
		{"Configuration file 'nodes/pve-9l/qemu-server/105.conf' does not exist", []error{ErrNotFound}},
		{"VM 100 already running", []error{ErrAlreadyRunning}},
		{"can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout", []error{ErrTransient, ErrLocked}},
		{"can't lock file '/run/lock/lxc/pve-config-200.lock' - got timeout", []error{ErrTransient, ErrLocked}},
		{"shrinking disks is not supported", []error{ErrShrink}},
		{"unable to shrink disk size", []error{ErrShrink}},
		{"disk is already at specified size", []error{ErrAlreadySized}},
		{"checksum missmatch (file change by other user?)", []error{ErrDigestMismatch}},
		{"detected modified configuration - file changed by other user? Try again.", []error{ErrDigestMismatch}},
		{"you can't resize a cdrom", nil},
		{"VM quit/powerdown failed - got timeout", nil},
		{"you can't start a vm if it's a template", nil},
		{"Parameter verification failed. (net0: hotplug problem - x)", nil},
	}
	for _, tt := range tests {
		err := error(&TaskError{UPID: testUPID, ExitStatus: tt.exit})
		if !errors.Is(err, ErrTaskFailed) {
			t.Errorf("%q: not ErrTaskFailed", tt.exit)
		}
		for _, c := range allClasses {
			if c == ErrTaskFailed {
				continue
			}
			want := false
			for _, w := range tt.want {
				want = want || w == c
			}
			if got := errors.Is(err, c); got != want {
				t.Errorf("TaskError %q: errors.Is(%s) = %v, want %v", tt.exit, className(c), got, want)
			}
		}
		var te *TaskError
		if !errors.As(err, &te) || te.ExitStatus != tt.exit || te.UPID != testUPID {
			t.Errorf("errors.As TaskError failed for %q", tt.exit)
		}
	}
}

func TestAPIErrorText(t *testing.T) {
	e := &APIError{StatusCode: 400, Method: "POST", Path: "/nodes/pve/lxc/102/status/stop", Message: "Parameter verification failed.",
		Errors: map[string]string{"b": "second", "a": "first"}}
	want := "proxmox: POST /nodes/pve/lxc/102/status/stop: 400 Parameter verification failed. (a: first; b: second)"
	if e.Error() != want {
		t.Fatalf("Error() = %q\nwant      %q", e.Error(), want)
	}
}

func TestDecodeAPIError(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		statusLine string
		body       string
		wantMsg    string
		wantErrs   map[string]string
	}{
		{"reason only (PVE 7)", 500, "500 VM 100 not running", `{"data":null}`, "VM 100 not running", nil},
		{"message field (PVE 8.3+) wins", 500, "500 VM 100 not running", `{"data":null,"message":"VM 100 not running\n"}`, "VM 100 not running", nil},
		{"multi-line message keeps lines", 403, "403 Permission check failed (URI '/access/ticket' not available with API token, need proper ticket.",
			`{"data":null,"message":"Permission check failed (URI '/access/ticket' not available with API token, need proper ticket.\n)\n"}`,
			"Permission check failed (URI '/access/ticket' not available with API token, need proper ticket.\n)", nil},
		{"errors map trimmed", 400, "400 Parameter verification failed.", `{"data":null,"errors":{"vmid":"invalid format - value does not look like a valid VM ID\n"}}`,
			"Parameter verification failed.", map[string]string{"vmid": "invalid format - value does not look like a valid VM ID"}},
		{"empty body (401)", 401, "401 No ticket", ``, "No ticket", nil},
		{"plain text body (8.3 HTTP layer)", 501, "501 for data too large", `for data too large`, "for data too large", nil},
		{"non-string errors value", 400, "400 Parameter verification failed.", `{"errors":{"x":5,"y":null}}`, "Parameter verification failed.", map[string]string{"x": "5"}},
		{"standard reason", 503, "503 Service Unavailable", `<html>busy</html>`, "Service Unavailable", nil},
		{"no reason", 502, "502", ``, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := decodeAPIError("GET", "/p", tt.status, tt.statusLine, []byte(tt.body))
			if e.StatusCode != tt.status || e.Message != tt.wantMsg {
				t.Errorf("got status %d message %q, want %d %q", e.StatusCode, e.Message, tt.status, tt.wantMsg)
			}
			if len(e.Errors) != len(tt.wantErrs) {
				t.Errorf("errors = %v, want %v", e.Errors, tt.wantErrs)
			}
			for k, v := range tt.wantErrs {
				if e.Errors[k] != v {
					t.Errorf("errors[%q] = %q, want %q", k, e.Errors[k], v)
				}
			}
		})
	}
}

// FuzzDecodeAPIError feeds arbitrary status lines and bodies to the error
// decoder: it must never panic, must keep the status, and must produce
// clean UTF-8 text without trailing whitespace.
func FuzzDecodeAPIError(f *testing.F) {
	f.Add(500, "500 VM 100 not running", []byte(`{"data":null}`))
	f.Add(400, "400 Parameter verification failed.", []byte(`{"data":null,"errors":{"a":"b\n"},"message":"Parameter verification failed.\n"}`))
	f.Add(401, "401 No ticket", []byte(nil))
	f.Add(595, "595 Network is unreachable", []byte(""))
	f.Add(500, "500 x", []byte(`{"errors":[1,2],"message":{"a":1}}`))
	f.Add(500, "500 \xff\xfe", []byte(`{"message":"\ud800"}`))
	f.Fuzz(func(t *testing.T, status int, line string, body []byte) {
		e := decodeAPIError("POST", "/x", status, line, body)
		if e.StatusCode != status || e.Method != "POST" || e.Path != "/x" {
			t.Fatalf("lost request identity: %+v", e)
		}
		for _, s := range append([]string{e.Message}, valuesOf(e.Errors)...) {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 in %q", s)
			}
			if strings.TrimRight(s, " \t\r\n") != s {
				t.Fatalf("trailing whitespace in %q", s)
			}
		}
		_ = e.Error()
		for _, c := range allClasses {
			_ = errors.Is(e, c)
		}
	})
}

func valuesOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
