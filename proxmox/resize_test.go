package proxmox

import (
	"context"
	"errors"
	"math"
	"math/big"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
)

// perlSizePattern is the resize endpoints' size schema pattern, anchored
// as PVE::JSONSchema anchors patterns.
var perlSizePattern = regexp.MustCompile(`^(?:\+?\d+(\.\d+)?[KMGT]?)$`)

// perlSize computes what resize_vm makes of an absolute size string: the
// number times the unit's power of 1024, exactly.
func perlSize(t *testing.T, s string) *big.Int {
	t.Helper()
	m := regexp.MustCompile(`^(\d+)([KMGT]?)$`).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("%q is not an integral size", s)
	}
	n, _ := new(big.Int).SetString(m[1], 10)
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[2]]
	return n.Lsh(n, shift)
}

func TestSizeParam(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{1, "1"},
		{1023, "1023"},
		{1024, "1K"},
		{1536, "1536"}, // 1.5 KiB: not a whole number of any unit
		{3 << 10, "3K"},
		{32 << 30, "32G"},
		{32<<30 + 1<<20, "32769M"},
		{32<<30 + 1<<10, "33554433K"},
		{32<<30 + 1, "34359738369"},
		{1 << 40, "1T"},
		{5 << 40, "5T"},
		{1 << 50, "1024T"}, // T is the largest unit
		{math.MaxInt64, "9223372036854775807"},
		{math.MaxInt64 &^ (1<<40 - 1), "8388607T"},
	}
	for _, tt := range tests {
		got := sizeParam(tt.n)
		if got != tt.want {
			t.Errorf("sizeParam(%d) = %q, want %q", tt.n, got, tt.want)
		}
		if !perlSizePattern.MatchString(got) {
			t.Errorf("sizeParam(%d) = %q does not match Proxmox's size pattern", tt.n, got)
		}
		if p := perlSize(t, got); p.Cmp(big.NewInt(tt.n)) != 0 {
			t.Errorf("Proxmox reads %q as %s bytes, want %d", got, p, tt.n)
		}
	}
}

func TestDiskResizeValidate(t *testing.T) {
	const digest = "0123456789abcdef0123456789ABCDEF01234567"
	tests := []struct {
		name string
		t    GuestType
		r    DiskResize
		ok   bool
	}{
		{"scsi0", QEMU, DiskResize{Disk: "scsi0", Size: 1 << 30}, true},
		{"every bus's last", QEMU, DiskResize{Disk: "scsi30", Size: 1}, true},
		{"ide3", QEMU, DiskResize{Disk: "ide3", Size: 1}, true},
		{"sata5", QEMU, DiskResize{Disk: "sata5", Size: 1}, true},
		{"virtio15", QEMU, DiskResize{Disk: "virtio15", Size: 1}, true},
		{"efidisk0", QEMU, DiskResize{Disk: "efidisk0", Size: 1}, true},
		{"tpmstate0", QEMU, DiskResize{Disk: "tpmstate0", Size: 1, Digest: digest}, true},
		{"scsi31 does not exist", QEMU, DiskResize{Disk: "scsi31", Size: 1}, false},
		{"ide4 does not exist", QEMU, DiskResize{Disk: "ide4", Size: 1}, false},
		{"sata6 does not exist", QEMU, DiskResize{Disk: "sata6", Size: 1}, false},
		{"virtio16 does not exist", QEMU, DiskResize{Disk: "virtio16", Size: 1}, false},
		{"leading zero", QEMU, DiskResize{Disk: "scsi01", Size: 1}, false},
		{"efidisk1", QEMU, DiskResize{Disk: "efidisk1", Size: 1}, false},
		{"unused disks cannot be resized", QEMU, DiskResize{Disk: "unused0", Size: 1}, false},
		{"not a disk", QEMU, DiskResize{Disk: "net0", Size: 1}, false},
		{"upper case", QEMU, DiskResize{Disk: "SCSI0", Size: 1}, false},
		{"trailing newline", QEMU, DiskResize{Disk: "scsi0\n", Size: 1}, false},
		{"empty", QEMU, DiskResize{Size: 1}, false},
		{"lxc key on qemu", QEMU, DiskResize{Disk: "rootfs", Size: 1}, false},
		{"rootfs", LXC, DiskResize{Disk: "rootfs", Size: 8 << 30}, true},
		{"mp0", LXC, DiskResize{Disk: "mp0", Size: 1}, true},
		{"mp255", LXC, DiskResize{Disk: "mp255", Size: 1}, true},
		{"mp99", LXC, DiskResize{Disk: "mp99", Size: 1}, true},
		{"mp256", LXC, DiskResize{Disk: "mp256", Size: 1}, false},
		{"mp07", LXC, DiskResize{Disk: "mp07", Size: 1}, false},
		{"qemu key on lxc", LXC, DiskResize{Disk: "scsi0", Size: 1}, false},
		{"zero size", QEMU, DiskResize{Disk: "scsi0"}, false},
		{"negative size", LXC, DiskResize{Disk: "rootfs", Size: -1 << 30}, false},
		{"short digest", QEMU, DiskResize{Disk: "scsi0", Size: 1, Digest: "abc"}, false},
		{"digest with junk", QEMU, DiskResize{Disk: "scsi0", Size: 1, Digest: digest[:39] + "&"}, false},
		{"unknown type", GuestType("vm"), DiskResize{Disk: "scsi0", Size: 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Validate(tt.t)
			if (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("error %v does not match ErrInvalidArgument", err)
			}
		})
	}
}

// TestResizeRefusesBadInputWithoutRequest: nothing is sent for input
// Proxmox would refuse.
func TestResizeRefusesBadInputWithoutRequest(t *testing.T) {
	s := newSrv(t)
	c := s.tokenClient(t)
	ctx := context.Background()
	for _, tc := range []struct {
		ref Ref
		r   DiskResize
	}{
		{testRef, DiskResize{Disk: "scsi0", Size: 0}},
		{testRef, DiskResize{Disk: "mp0", Size: 1 << 30}},
		{testLXCRef, DiskResize{Disk: "virtio0", Size: 1 << 30}},
		{testRef, DiskResize{Disk: "scsi0", Size: 1 << 30, Digest: "nope"}},
		{Ref{Node: "bad node", Type: QEMU, VMID: 100}, DiskResize{Disk: "scsi0", Size: 1 << 30}},
		{Ref{Node: "pve1", Type: QEMU, VMID: 99}, DiskResize{Disk: "scsi0", Size: 1 << 30}},
	} {
		if _, err := c.Resize(ctx, tc.ref, tc.r); err == nil {
			t.Errorf("Resize(%v, %+v) succeeded", tc.ref, tc.r)
		} else if !errors.Is(err, ErrInvalidArgument) && !errors.Is(err, ErrInvalidRef) {
			t.Errorf("Resize(%v, %+v) = %v, want an invalid-input error", tc.ref, tc.r, err)
		}
	}
	if n := len(s.requests()); n != 0 {
		t.Fatalf("%d requests sent for invalid input", n)
	}
}

func TestResizeRequestAndAnswers(t *testing.T) {
	const path = "/nodes/pve1/qemu/100/resize"
	const lxcPath = "/nodes/pve1/lxc/200/resize"
	qemuUPID := "UPID:pve1:00001234:00005678:6419CAF8:resize:100:guestward@pve!ci:"
	lxcUPID := "UPID:pve1:00001234:00005678:6419CAF8:resize:200:guestward@pve!ci:"
	ctx := context.Background()

	t.Run("qemu task", func(t *testing.T) {
		s := newSrv(t)
		s.handle("PUT "+path, func(w http.ResponseWriter, r *http.Request) { reply(w, qemuUPID) })
		c := s.tokenClient(t)
		upid, err := c.Resize(ctx, testRef, DiskResize{Disk: "scsi0", Size: 64 << 30, Digest: strings.Repeat("a", 40)})
		if err != nil || upid != UPID(qemuUPID) {
			t.Fatalf("Resize = %q, %v", upid, err)
		}
		req := s.requests()[0]
		if req.Method != http.MethodPut || req.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			t.Fatalf("request %s %s", req.Method, req.Header.Get("Content-Type"))
		}
		if want := "digest=" + strings.Repeat("a", 40) + "&disk=scsi0&size=64G"; req.Body != want {
			t.Fatalf("body %q, want %q", req.Body, want)
		}
	})
	t.Run("qemu pve7 is synchronous", func(t *testing.T) {
		s := newSrv(t)
		s.handle("PUT "+path, func(w http.ResponseWriter, r *http.Request) { replyRaw(w, `{"data":null}`) })
		c := s.tokenClient(t)
		upid, err := c.Resize(ctx, testRef, DiskResize{Disk: "virtio1", Size: 10<<30 + 512})
		if err != nil || upid != "" {
			t.Fatalf("Resize = %q, %v; want a synchronous success", upid, err)
		}
		if want := "disk=virtio1&size=10737418752"; s.requests()[0].Body != want {
			t.Fatalf("body %q, want %q (no digest when none is given)", s.requests()[0].Body, want)
		}
	})
	t.Run("lxc task", func(t *testing.T) {
		s := newSrv(t)
		s.handle("PUT "+lxcPath, func(w http.ResponseWriter, r *http.Request) { reply(w, lxcUPID) })
		c := s.tokenClient(t)
		upid, err := c.Resize(ctx, testLXCRef, DiskResize{Disk: "mp3", Size: 100 << 30})
		if err != nil || upid != UPID(lxcUPID) {
			t.Fatalf("Resize = %q, %v", upid, err)
		}
	})
	t.Run("lxc without a task is not an answer", func(t *testing.T) {
		s := newSrv(t)
		s.handle("PUT "+lxcPath, func(w http.ResponseWriter, r *http.Request) { replyRaw(w, `{"data":null}`) })
		c := s.tokenClient(t)
		_, err := c.Resize(ctx, testLXCRef, DiskResize{Disk: "rootfs", Size: 8 << 30})
		wantErr(t, err, ErrUnexpectedResponse, ErrOutcomeUnknown)
	})
	t.Run("task of another guest", func(t *testing.T) {
		s := newSrv(t)
		s.handle("PUT "+path, func(w http.ResponseWriter, r *http.Request) { reply(w, lxcUPID) })
		c := s.tokenClient(t)
		_, err := c.Resize(ctx, testRef, DiskResize{Disk: "scsi0", Size: 8 << 30})
		wantErr(t, err, ErrUnexpectedResponse, ErrOutcomeUnknown)
	})
	t.Run("refusals are classified", func(t *testing.T) {
		for _, tc := range []struct {
			ref    Ref
			reason string
			want   []error
		}{
			{testRef, "shrinking disks is not supported", []error{ErrShrink}},
			{testLXCRef, "unable to shrink disk size", []error{ErrShrink}},
			{testLXCRef, "disk is already at specified size", []error{ErrAlreadySized}},
			{testLXCRef, "CT is locked (backup)", []error{ErrLocked}},
			{testLXCRef, "detected modified configuration - file changed by other user? Try again.", []error{ErrDigestMismatch}},
			{testRef, "checksum missmatch (file change by other user?)", []error{ErrDigestMismatch}},
		} {
			s := newSrv(t)
			p := path
			if tc.ref.Type == LXC {
				p = lxcPath
			}
			s.handle("PUT "+p, func(w http.ResponseWriter, r *http.Request) { rawReply(w, 500, tc.reason, `{"data":null}`) })
			c := s.tokenClient(t)
			disk := "rootfs"
			if tc.ref.Type == QEMU {
				disk = "scsi0"
			}
			_, err := c.Resize(ctx, tc.ref, DiskResize{Disk: disk, Size: 8 << 30})
			wantErr(t, err, tc.want...)
			if errors.Is(err, ErrTransient) || errors.Is(err, ErrOutcomeUnknown) {
				t.Errorf("%q: terminal refusal classified as transient or unknown: %v", tc.reason, err)
			}
		}
	})
	t.Run("lock timeout is sent again", func(t *testing.T) {
		s := newSrv(t)
		var n atomic.Int32
		s.handle("PUT "+lxcPath, func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				rawReply(w, 500, "can't lock file '/run/lock/lxc/pve-config-200.lock' - got timeout", `{"data":null}`)
				return
			}
			reply(w, lxcUPID)
		})
		c := s.tokenClient(t)
		upid, err := c.Resize(ctx, testLXCRef, DiskResize{Disk: "rootfs", Size: 8 << 30})
		if err != nil || upid != UPID(lxcUPID) || s.count("PUT "+lxcPath) != 2 {
			t.Fatalf("Resize = %q, %v after %d requests; a lock timeout did nothing and is safe to resend", upid, err, s.count("PUT "+lxcPath))
		}
	})
}
