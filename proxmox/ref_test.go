package proxmox

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRefValidate(t *testing.T) {
	tests := []struct {
		name string
		ref  Ref
		ok   bool
		why  string
	}{
		{"qemu", Ref{"pve1", QEMU, 100}, true, "smallest vmid"},
		{"lxc max", Ref{"pve-node-2", LXC, 999999999}, true, "largest vmid"},
		{"single char node", Ref{"a", QEMU, 100}, true, "pve-node allows one character"},
		{"localhost", Ref{"localhost", QEMU, 100}, true, "Proxmox treats localhost as the local node"},
		{"vmid 99", Ref{"pve1", QEMU, 99}, false, "below pve-vmid"},
		{"vmid 0", Ref{"pve1", QEMU, 0}, false, "zero Ref"},
		{"vmid too big", Ref{"pve1", QEMU, 1000000000}, false, "above pve-vmid"},
		{"negative", Ref{"pve1", QEMU, -100}, false, "negative"},
		{"empty node", Ref{"", QEMU, 100}, false, "no node"},
		{"node dash end", Ref{"pve-", QEMU, 100}, false, "pve-node cannot end with '-'"},
		{"node dash start", Ref{"-pve", QEMU, 100}, false, "pve-node cannot start with '-'"},
		{"node dot", Ref{"pve.example", QEMU, 100}, false, "pve-node is a single label"},
		{"node slash", Ref{"pve/1", QEMU, 100}, false, "would change the path"},
		{"node newline", Ref{"pve\n", QEMU, 100}, false, "control character"},
		{"type vm", Ref{"pve1", "vm", 100}, false, "cluster/resources filter, not a guest type"},
		{"type upper", Ref{"pve1", "QEMU", 100}, false, "types are lower case"},
		{"type empty", Ref{"pve1", "", 100}, false, "no type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.ref.Validate()
			if tt.ok {
				if err != nil {
					t.Fatalf("Validate(%v) = %v, want nil (%s)", tt.ref, err, tt.why)
				}
				return
			}
			if !errors.Is(err, ErrInvalidRef) {
				t.Fatalf("Validate(%#v) = %v, want ErrInvalidRef (%s)", tt.ref, err, tt.why)
			}
		})
	}
}

func TestParseRefRoundTrip(t *testing.T) {
	for _, r := range []Ref{{"pve1", QEMU, 100}, {"n", LXC, 999999999}} {
		got, err := ParseRef(r.String())
		if err != nil || got != r {
			t.Errorf("ParseRef(%q) = %v, %v; want %v", r.String(), got, err, r)
		}
	}
	for _, s := range []string{"", "pve1/qemu", "pve1/qemu/100/x", "pve1/qemu/abc", "pve1/vm/100", "pve1/qemu/99", "/qemu/100"} {
		if _, err := ParseRef(s); !errors.Is(err, ErrInvalidRef) {
			t.Errorf("ParseRef(%q) = %v, want ErrInvalidRef", s, err)
		}
	}
}

func TestParseUPIDVectors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want UPIDInfo
	}{
		{"recorded v02 (matching integers in the status)", "UPID:dahu-2:00007323:001036A5:6419CAF8:qmstart:100:root@pam:",
			UPIDInfo{Node: "dahu-2", PID: 29475, PStart: 1062565, StartTime: time.Unix(1679411960, 0).UTC(), Type: "qmstart", ID: "100", User: "root@pam"}},
		{"token user", "UPID:helldorado:0006C7D9:0029F72D:68A60E01:vzrestore:104:cicd@pam!cicd_ansible:",
			UPIDInfo{Node: "helldorado", PID: 0x6C7D9, PStart: 0x29F72D, StartTime: time.Unix(0x68A60E01, 0).UTC(), Type: "vzrestore", ID: "104", User: "cicd@pam!cicd_ansible"}},
		{"empty id", "UPID:pve:00061CB3:010BA69C:64EFECB0:imgcopy::root@pam:",
			UPIDInfo{Node: "pve", PID: 0x61CB3, PStart: 0x10BA69C, StartTime: time.Unix(0x64EFECB0, 0).UTC(), Type: "imgcopy", ID: "", User: "root@pam"}},
		{"9-digit pstart, lower-case hex", "UPID:n:0000abcd:1000000ff:6419caf8:qmstop:101:u@pve:",
			UPIDInfo{Node: "n", PID: 0xabcd, PStart: 0x1000000ff, StartTime: time.Unix(0x6419caf8, 0).UTC(), Type: "qmstop", ID: "101", User: "u@pve"}},
		{"V9 task list", "UPID:iaclab-01-01:00000DD3:1C419D88:6119FB65:srvreload:networking:root@pam:",
			UPIDInfo{Node: "iaclab-01-01", PID: 3539, PStart: 474062216, StartTime: time.Unix(1629092709, 0).UTC(), Type: "srvreload", ID: "networking", User: "root@pam"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUPID(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("ParseUPID(%q) (-want +got):\n%s", tt.in, diff)
			}
			if canon := strings.ToUpper(tt.in); got.Format() != UPID(tt.in) && !strings.EqualFold(string(got.Format()), canon) {
				t.Fatalf("Format() = %q, want %q", got.Format(), tt.in)
			}
			if g2, err := UPID(tt.in).Parse(); err != nil || g2 != got {
				t.Fatalf("UPID.Parse differs: %v, %v", g2, err)
			}
		})
	}
}

func TestParseUPIDRejects(t *testing.T) {
	tests := []struct{ in, why string }{
		{"", "empty"},
		{"UPID:pve:00007323:001036A5:6419CAF8:qmstart:100:root@pam", "no trailing colon"},
		{"UPID:pve:00007323:001036A5:6419CAF8:qmstart:100:root@pam:\n", "trailing newline (Perl's $ would accept it; we do not)"},
		{"upid:pve:00007323:001036A5:6419CAF8:qmstart:100:root@pam:", "prefix is case-sensitive"},
		{"UPID:pve:7323:001036A5:6419CAF8:qmstart:100:root@pam:", "pid not 8 digits"},
		{"UPID:pve:00007323:1036A5:6419CAF8:qmstart:100:root@pam:", "pstart 6 digits"},
		{"UPID:pve:00007323:0001036A5A:6419CAF8:qmstart:100:root@pam:", "pstart 10 digits"},
		{"UPID:pve:00007323:001036A5:6419CAF:qmstart:100:root@pam:", "starttime 7 digits"},
		{"UPID:pve:0000732G:001036A5:6419CAF8:qmstart:100:root@pam:", "not hex"},
		{"UPID:pve:00007323:001036A5:6419CAF8::100:root@pam:", "empty type"},
		{"UPID:pve:00007323:001036A5:6419CAF8:qmstart:100::", "empty user"},
		{"UPID:pve-:00007323:001036A5:6419CAF8:qmstart:100:root@pam:", "bad node"},
		{"UPID:pve:00007323:001036A5:6419CAF8:qm start:100:root@pam:", "space in type"},
		{"UPID:pve:00007323:001036A5:6419CAF8:qmstart:1\v0:root@pam:", "vertical tab is \\s in Perl"},
		{"UPID:pve:00007323:001036A5:6419CAF8:qmstart:100:root@pam:extra:", "extra field"},
	}
	for _, tt := range tests {
		if _, err := ParseUPID(tt.in); !errors.Is(err, ErrInvalidUPID) {
			t.Errorf("ParseUPID(%q) = %v, want ErrInvalidUPID (%s)", tt.in, err, tt.why)
		}
	}
}

// FuzzParseUPID checks that ParseUPID never panics, that whatever it
// accepts formats back to an equivalent UPID, and that it agrees with a
// field-by-field reimplementation of Proxmox's rule.
func FuzzParseUPID(f *testing.F) {
	for _, s := range []string{
		"UPID:dahu-2:00007323:001036A5:6419CAF8:qmstart:100:root@pam:",
		"UPID:pve:00061CB3:010BA69C:64EFECB0:imgcopy::root@pam:",
		"UPID:n:0000abcd:1000000ff:6419caf8:qmstop:101:u@pve!tok:",
		"UPID:pve:00007323:001036A5:6419CAF8:qmstart:100:root@pam",
		"UPID::::::::",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		info, err := ParseUPID(s)
		if ok := naiveUPIDValid(s); ok != (err == nil) {
			t.Fatalf("ParseUPID(%q) err=%v, naive valid=%v", s, err, ok)
		}
		if err != nil {
			return
		}
		again, err := ParseUPID(string(info.Format()))
		if err != nil {
			t.Fatalf("Format of %q = %q does not parse: %v", s, info.Format(), err)
		}
		if again != info {
			t.Fatalf("round trip of %q: %+v != %+v", s, again, info)
		}
		if !strings.EqualFold(string(info.Format()), s) {
			t.Fatalf("Format(%q) = %q: differs beyond hex case", s, info.Format())
		}
	})
}

// naiveUPIDValid restates upid_decode's regex without regular expressions.
func naiveUPIDValid(s string) bool {
	if len(s) <= len("UPID:") || !strings.HasPrefix(s, "UPID:") || !strings.HasSuffix(s, ":") {
		return false
	}
	f := strings.Split(s[len("UPID:"):len(s)-1], ":")
	if len(f) != 7 {
		return false
	}
	isHex := func(x string, lens ...int) bool {
		okLen := false
		for _, n := range lens {
			okLen = okLen || len(x) == n
		}
		if !okLen {
			return false
		}
		for _, c := range x {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
		return true
	}
	free := func(x string, allowEmpty bool) bool {
		if x == "" {
			return allowEmpty
		}
		return !strings.ContainsAny(x, ": \t\n\v\f\r")
	}
	return ValidNodeName(f[0]) && isHex(f[1], 8) && isHex(f[2], 8, 9) && isHex(f[3], 8) &&
		free(f[4], false) && free(f[5], true) && free(f[6], false)
}
