package proxmox

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Guest is one entry of the cluster-wide guest list ([Client.Guests]).
//
// The list is assembled from statistics every node broadcasts about every
// ten seconds, so Status can lag a power change that just happened, and is
// "unknown" for a guest whose node sent no fresh data (offline, or the
// guest was just created). For an authoritative power state read
// [Client.Status].
//
// A Guest is a value owned by the caller, safe for concurrent reads.
type Guest struct {
	Ref      Ref
	Name     string   // QEMU name or LXC hostname; may be empty
	Status   string   // "running", "stopped" or "unknown" (possibly others in future PVE versions)
	Template bool     // the guest is a template; it cannot be started
	Lock     string   // config lock ("backup", "migrate", ...), "" if none
	Tags     []string // tags as stored, split on ';' ',' and spaces; nil if none
	Pool     string   // resource pool, "" if none
	HAState  string   // the HA manager's state ("started", "stopped", "request_stop", "error", ...), "" if not HA-managed
	MaxCPU   float64  // configured CPUs, 0 when unknown
	MaxMem   int64    // configured memory in bytes, 0 when unknown
	MaxDisk  int64    // boot disk size in bytes, 0 when unknown
	Uptime   time.Duration
}

// resourceEntry is one element of /cluster/resources. PVE 7 and 8 type
// several of these fields differently; every one is decoded leniently.
type resourceEntry struct {
	ID       flexString `json:"id"`
	Type     flexString `json:"type"`
	VMID     flexInt    `json:"vmid"`
	Node     flexString `json:"node"`
	Status   flexString `json:"status"`
	Name     flexString `json:"name"`
	Template flexBool   `json:"template"`
	Lock     flexString `json:"lock"`
	Tags     flexString `json:"tags"`
	Pool     flexString `json:"pool"`
	HAState  flexString `json:"hastate"`
	MaxCPU   flexFloat  `json:"maxcpu"`
	MaxMem   flexInt    `json:"maxmem"`
	MaxDisk  flexInt    `json:"maxdisk"`
	Uptime   flexInt    `json:"uptime"`
}

// Guests lists every QEMU VM and LXC container of the cluster that the
// credentials may see (VM.Audit), from GET /cluster/resources?type=vm,
// sorted by VMID. It fails with [ErrUnexpectedResponse] if an entry's id,
// type or node is malformed, rather than silently dropping a guest.
func (c *Client) Guests(ctx context.Context) ([]Guest, error) {
	var entries []json.RawMessage
	err := c.call(ctx, &request{method: http.MethodGet, path: "/cluster/resources", query: url.Values{"type": {"vm"}}}, &entries)
	if err != nil {
		return nil, err
	}
	out := make([]Guest, 0, len(entries))
	for i, raw := range entries {
		var e resourceEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, c.redactErr(fmt.Errorf("proxmox: GET /cluster/resources: %w: entry %d: %v", ErrUnexpectedResponse, i, err))
		}
		t := GuestType(e.Type)
		if t != QEMU && t != LXC {
			continue // type=vm should return guests only; ignore anything else
		}
		g, err := e.guest()
		if err != nil {
			return nil, c.redactErr(fmt.Errorf("proxmox: GET /cluster/resources: %w: entry %d: %v", ErrUnexpectedResponse, i, err))
		}
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Ref.VMID != out[j].Ref.VMID {
			return out[i].Ref.VMID < out[j].Ref.VMID
		}
		return out[i].Ref.Node < out[j].Ref.Node
	})
	return out, nil
}

func (e *resourceEntry) guest() (Guest, error) {
	ref := Ref{Node: string(e.Node), Type: GuestType(e.Type), VMID: int(e.VMID)}
	if e.VMID == 0 && e.ID != "" {
		// Derive the id from "qemu/100" if vmid was missing.
		if _, id, ok := strings.Cut(string(e.ID), "/"); ok {
			if n, err := strconv.Atoi(id); err == nil {
				ref.VMID = n
			}
		}
	}
	if err := ref.Validate(); err != nil {
		return Guest{}, err
	}
	return Guest{
		Ref:      ref,
		Name:     string(e.Name),
		Status:   string(e.Status),
		Template: bool(e.Template),
		Lock:     string(e.Lock),
		Tags:     SplitTags(string(e.Tags)),
		Pool:     string(e.Pool),
		HAState:  string(e.HAState),
		MaxCPU:   float64(e.MaxCPU),
		MaxMem:   int64(e.MaxMem),
		MaxDisk:  int64(e.MaxDisk),
		Uptime:   time.Duration(e.Uptime) * time.Second,
	}, nil
}

// SplitTags splits a Proxmox tag list the way Proxmox does on input: on
// ';', ',' and white space, dropping empty items. It keeps order, case and
// duplicates; it returns nil for a list with no tags.
func SplitTags(s string) []string {
	f := strings.FieldsFunc(s, func(r rune) bool {
		return r == ';' || r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
	})
	if len(f) == 0 {
		return nil
	}
	return f
}

// GuestStatus is the authoritative state of one guest, from GET
// .../status/current. It is a value owned by the caller, safe for
// concurrent reads.
type GuestStatus struct {
	Ref       Ref
	Status    string // "running" or "stopped"; stays "running" for a paused VM
	QMPStatus string // QEMU only: "running", "paused", "prelaunch", ...; "" for LXC
	Name      string
	Template  bool
	Lock      string // "" if none
	Tags      []string
	PID       int // 0 when stopped
	Uptime    time.Duration
	// HAManaged reports that the guest is an HA resource: Start, Stop
	// and Shutdown go through the HA manager ([Client.Start]). HAState is
	// the HA manager's state of it ("started", "stopped",
	// "request_stop", "error", ...); "" unless HA-managed. A status whose
	// "ha" member is not an object fails with [ErrUnexpectedResponse].
	HAManaged bool
	HAState   string
}

// Running reports whether the guest's processes run. A paused QEMU VM
// counts as running, as Proxmox counts it.
func (s GuestStatus) Running() bool { return s.Status == "running" }

type statusEntry struct {
	Status    flexString `json:"status"`
	QMPStatus flexString `json:"qmpstatus"`
	Name      flexString `json:"name"`
	Template  flexBool   `json:"template"`
	Lock      flexString `json:"lock"`
	Tags      flexString `json:"tags"`
	PID       flexInt    `json:"pid"`
	Uptime    flexInt    `json:"uptime"`
	HA        struct {
		Managed flexBool   `json:"managed"`
		State   flexString `json:"state"`
	} `json:"ha"`
}

// Status reads a guest's current state from GET
// /nodes/{node}/{type}/{vmid}/status/current. Unlike [Client.Guests] it is
// exact at the moment of the call. A guest that does not exist on ref.Node
// yields an error matching [ErrNotFound].
func (c *Client) Status(ctx context.Context, ref Ref) (GuestStatus, error) {
	if err := ref.Validate(); err != nil {
		return GuestStatus{}, err
	}
	var e statusEntry
	if err := c.call(ctx, &request{method: http.MethodGet, path: guestPath(ref, "/status/current")}, &e); err != nil {
		return GuestStatus{}, err
	}
	return GuestStatus{
		Ref:       ref,
		Status:    string(e.Status),
		QMPStatus: string(e.QMPStatus),
		Name:      string(e.Name),
		Template:  bool(e.Template),
		Lock:      string(e.Lock),
		Tags:      SplitTags(string(e.Tags)),
		PID:       int(e.PID),
		Uptime:    time.Duration(e.Uptime) * time.Second,
		HAManaged: bool(e.HA.Managed),
		HAState:   string(e.HA.State),
	}, nil
}

// guestPath is the escaped API path of a validated guest plus suffix.
func guestPath(r Ref, suffix string) string {
	return "/nodes/" + url.PathEscape(r.Node) + "/" + string(r.Type) + "/" + strconv.Itoa(r.VMID) + suffix
}
