package proxmoxtest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// reply is a raw HTTP answer, decoded.
type reply struct {
	Code   int
	Status string // full status line text after the code, i.e. the reason
	Header http.Header
	Raw    []byte
	Body   map[string]any // nil if the body is empty or not an object
	Close  bool
}

func (r reply) data() any { return r.Body["data"] }

func (r reply) dataMap(t *testing.T) map[string]any {
	t.Helper()
	m, ok := r.data().(map[string]any)
	if !ok {
		t.Fatalf("data is %T, want object; raw %s", r.data(), r.Raw)
	}
	return m
}

func (r reply) dataList(t *testing.T) []map[string]any {
	t.Helper()
	l, ok := r.data().([]any)
	if !ok {
		t.Fatalf("data is %T, want array; raw %s", r.data(), r.Raw)
	}
	out := make([]map[string]any, len(l))
	for i, x := range l {
		out[i], _ = x.(map[string]any)
	}
	return out
}

func (r reply) errorsMap() map[string]any {
	m, _ := r.Body["errors"].(map[string]any)
	return m
}

// reqOpt adjusts a raw request.
type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func noAuth() reqOpt { return func(r *http.Request) { r.Header.Del("Authorization") } }

// rawBody sends body verbatim as a form.
type rawBody string

// do sends one request with the server's default token. body is nil,
// url.Values (form-encoded), rawBody (sent verbatim) or any other value
// (sent as JSON).
func do(t *testing.T, s *Server, method, path string, body any, opts ...reqOpt) reply {
	t.Helper()
	rp, err := tryDo(s, method, path, body, opts...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return rp
}

func tryDo(s *Server, method, path string, body any, opts ...reqOpt) (reply, error) {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case url.Values:
		rd, ctype = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	case rawBody:
		rd, ctype = strings.NewReader(string(b)), "application/x-www-form-urlencoded"
	default:
		js, err := json.Marshal(b)
		if err != nil {
			return reply{}, err
		}
		rd, ctype = bytes.NewReader(js), "application/json"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.URL+APIPath+path, rd)
	if err != nil {
		return reply{}, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	id, secret := s.APIToken()
	req.Header.Set("Authorization", "PVEAPIToken="+id+"="+secret)
	for _, o := range opts {
		o(req)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	rp := reply{Code: resp.StatusCode, Header: resp.Header, Raw: raw, Close: resp.Close}
	_, rp.Status, _ = strings.Cut(resp.Status, " ") // "500 VM is locked (backup)" -> reason
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &rp.Body)
	}
	return rp, nil
}

func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

func qemu(node string, vmid int) proxmox.Ref {
	return proxmox.Ref{Node: node, Type: proxmox.QEMU, VMID: vmid}
}

func lxc(node string, vmid int) proxmox.Ref {
	return proxmox.Ref{Node: node, Type: proxmox.LXC, VMID: vmid}
}

func guestPath(r proxmox.Ref) string {
	return "/nodes/" + r.Node + "/" + string(r.Type) + "/" + itoa(r.VMID)
}

func itoa(n int) string { return strconv.Itoa(n) }

func mustAdd(t *testing.T, s *Server, spec GuestSpec) proxmox.Ref {
	t.Helper()
	if err := s.AddGuest(spec); err != nil {
		t.Fatal(err)
	}
	node := spec.Node
	if node == "" {
		node = s.Nodes()[0]
	}
	return proxmox.Ref{Node: node, Type: spec.Type, VMID: spec.VMID}
}

func mustGuest(t *testing.T, s *Server, r proxmox.Ref) GuestState {
	t.Helper()
	st, ok := s.Guest(r)
	if !ok {
		t.Fatalf("guest %s missing", r)
	}
	return st
}

// waitIdle waits for all tasks with a generous bound: the bound only turns
// a hang into a failure, it does not pace the test.
func waitIdle(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitIdle(ctx); err != nil {
		t.Fatalf("WaitIdle: %v", err)
	}
}

// taskOf returns the task snapshot for the UPID in a reply.
func taskOf(t *testing.T, s *Server, rp reply) Task {
	t.Helper()
	upid, ok := rp.data().(string)
	if !ok {
		t.Fatalf("want a UPID, got %s %s", rp.Status, rp.Raw)
	}
	tk, ok := s.Task(proxmox.UPID(upid))
	if !ok {
		t.Fatalf("task %s unknown", upid)
	}
	return tk
}

// finish finishes the task a reply started (manual mode) and returns it.
func finish(t *testing.T, s *Server, rp reply) Task {
	t.Helper()
	tk := taskOf(t, s, rp)
	if tk.Running {
		if err := s.FinishTask(tk.UPID); err != nil {
			t.Fatal(err)
		}
	}
	tk, _ = s.Task(tk.UPID)
	return tk
}

// vm100 is a stopped VM with a disk and a NIC, in Proxmox's stored form.
func vm100(node string) GuestSpec {
	return GuestSpec{Node: node, Type: proxmox.QEMU, VMID: 100, Config: map[string]string{
		"name": "web", "cores": "2", "memory": "2048", "boot": "order=scsi0;net0",
		"scsi0": "local-lvm:vm-100-disk-0,size=32G", "scsihw": "virtio-scsi-pci",
		"net0": "virtio=BC:24:11:0A:0B:0C,bridge=vmbr0,firewall=1",
	}}
}

// ct200 is a stopped container.
func ct200(node string) GuestSpec {
	return GuestSpec{Node: node, Type: proxmox.LXC, VMID: 200, Config: map[string]string{
		"hostname": "ct", "memory": "512", "swap": "512", "ostype": "debian", "arch": "amd64",
		"rootfs": "local-lvm:vm-200-disk-0,size=8G",
		"net0":   "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:0D:0E:0F,ip=dhcp,type=veth",
	}}
}

func httpNewRequest(ctx context.Context, method, url string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, method, url, nil)
}
