package proxmox

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// GuestType is the kind of a Proxmox VE guest: a QEMU virtual machine or an
// LXC container. It is also the path segment Proxmox uses for the guest's
// endpoints (/nodes/{node}/qemu/{vmid}, /nodes/{node}/lxc/{vmid}). Like all
// the vocabulary types here it is a plain value, safe for concurrent use.
type GuestType string

// The guest types Proxmox VE knows.
const (
	QEMU GuestType = "qemu"
	LXC  GuestType = "lxc"
)

// Valid reports whether t is one of the known guest types.
func (t GuestType) Valid() bool { return t == QEMU || t == LXC }

// MinVMID and MaxVMID bound the guest ids Proxmox VE accepts (pve-vmid).
const (
	MinVMID = 100
	MaxVMID = 999999999
)

// ErrInvalidRef is returned, wrapped, when a Ref names no possible guest.
var ErrInvalidRef = errors.New("proxmox: invalid guest reference")

// nodeRE is Proxmox's pve-node format.
var nodeRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$`)

// ValidNodeName reports whether s is a node name Proxmox accepts.
func ValidNodeName(s string) bool { return nodeRE.MatchString(s) }

// Ref identifies one guest: the node it lives on, its type and its id.
// The zero Ref is invalid. Ref is a comparable value and can key a map; it
// is safe for concurrent use.
type Ref struct {
	Node string
	Type GuestType
	VMID int
}

// Validate returns an error wrapping [ErrInvalidRef] when r cannot name a
// guest: a node name Proxmox would refuse, an unknown type, or a vmid outside
// [MinVMID, MaxVMID].
func (r Ref) Validate() error {
	if !ValidNodeName(r.Node) {
		return fmt.Errorf("%w: node name %q is not a valid Proxmox node name", ErrInvalidRef, r.Node)
	}
	if !r.Type.Valid() {
		return fmt.Errorf("%w: guest type %q is neither %q nor %q", ErrInvalidRef, string(r.Type), QEMU, LXC)
	}
	if r.VMID < MinVMID || r.VMID > MaxVMID {
		return fmt.Errorf("%w: vmid %d is outside %d..%d", ErrInvalidRef, r.VMID, MinVMID, MaxVMID)
	}
	return nil
}

// String renders r as "node/type/vmid", for example "pve1/qemu/100".
func (r Ref) String() string {
	return r.Node + "/" + string(r.Type) + "/" + strconv.Itoa(r.VMID)
}

// ParseRef parses the "node/type/vmid" form written by [Ref.String] and
// validates the result.
func ParseRef(s string) (Ref, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return Ref{}, fmt.Errorf("%w: %q is not of the form node/type/vmid", ErrInvalidRef, s)
	}
	id, err := strconv.Atoi(parts[2])
	if err != nil {
		return Ref{}, fmt.Errorf("%w: vmid %q in %q is not a number", ErrInvalidRef, parts[2], s)
	}
	r := Ref{Node: parts[0], Type: GuestType(parts[1]), VMID: id}
	if err := r.Validate(); err != nil {
		return Ref{}, err
	}
	return r, nil
}

// UPID is a Proxmox task id, as returned by every call that starts a task,
// for example "UPID:pve1:00007323:001036A5:6419CAF8:qmstart:100:root@pam:".
// The empty UPID means "no task": the call completed synchronously.
// A UPID is a plain string value, safe for concurrent use.
type UPID string

// UPIDInfo is the decoded form of a [UPID]. It is a plain value, safe for
// concurrent use.
type UPIDInfo struct {
	Node      string    // node that runs the task; task endpoints are addressed to it
	PID       int       // worker process id
	PStart    uint64    // process start time in clock ticks since boot
	StartTime time.Time // task start, second precision
	Type      string    // task type, e.g. "qmstart", "vzstop", "qmconfig"
	ID        string    // task object id, usually the vmid; may be empty
	User      string    // auth id that started it, e.g. "root@pam" or "u@pve!token"
}

// ErrInvalidUPID is returned, wrapped, by [ParseUPID] for malformed input.
var ErrInvalidUPID = errors.New("proxmox: invalid UPID")

// upidRE is the format pve-common's upid_decode accepts, field for field.
// Perl's \s (5.18 and later) also matches the vertical tab, which Go's \s
// does not, so the class is spelled out.
var upidRE = regexp.MustCompile(`^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\t\n\v\f\r ]+):([^:\t\n\v\f\r ]*):([^:\t\n\v\f\r ]+):$`)

// ParseUPID decodes a task id. It accepts exactly what Proxmox accepts: the
// node, three hexadecimal fields (pid and start time 8 digits, pstart 8 or 9),
// a non-empty type, a possibly empty id, a non-empty user, and the trailing
// colon. The one deliberate difference: Perl's "$" also matches before a
// final newline, so Proxmox would accept "UPID:...:\n"; ParseUPID does not,
// because no API answer carries one and the newline would not survive
// [UPIDInfo.Format]. Errors wrap [ErrInvalidUPID].
func ParseUPID(s string) (UPIDInfo, error) {
	m := upidRE.FindStringSubmatch(s)
	if m == nil {
		return UPIDInfo{}, fmt.Errorf("%w: %q", ErrInvalidUPID, s)
	}
	pid, _ := strconv.ParseUint(m[3], 16, 32)
	pstart, _ := strconv.ParseUint(m[4], 16, 64)
	start, _ := strconv.ParseUint(m[5], 16, 32)
	return UPIDInfo{
		Node:      m[1],
		PID:       int(pid),
		PStart:    pstart,
		StartTime: time.Unix(int64(start), 0).UTC(),
		Type:      m[6],
		ID:        m[7],
		User:      m[8],
	}, nil
}

// Parse decodes u; see [ParseUPID].
func (u UPID) Parse() (UPIDInfo, error) { return ParseUPID(string(u)) }

// String returns the UPID's text.
func (u UPID) String() string { return string(u) }

// Format encodes info as a UPID in Proxmox's canonical form (upper-case hex,
// zero-padded). It is the inverse of [ParseUPID] for canonical input.
func (info UPIDInfo) Format() UPID {
	return UPID(fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:",
		info.Node, info.PID, info.PStart, info.StartTime.Unix(), info.Type, info.ID, info.User))
}
