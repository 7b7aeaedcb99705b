package proxmoxtest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

// call sends one API request with the server's token and returns the status
// line and the decoded "data" member.
func call(srv *proxmoxtest.Server, method, path string, form url.Values) (string, any) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, srv.URL+proxmoxtest.APIPath+path, body)
	if err != nil {
		return err.Error(), nil
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	id, secret := srv.APIToken()
	req.Header.Set("Authorization", "PVEAPIToken="+id+"="+secret)
	resp, err := srv.Client().Do(req)
	if err != nil {
		return err.Error(), nil
	}
	defer resp.Body.Close()
	var env struct{ Data any }
	_ = json.NewDecoder(resp.Body).Decode(&env)
	return resp.Status, env.Data
}

// A fake cluster with one VM; the test reads its config over HTTPS with
// the client the server hands out.
func ExampleNewServer() {
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100,
		Config: map[string]string{"name": "web", "cores": "2", "memory": "2048"}})

	status, data := call(srv, "GET", "/nodes/pve1/qemu/100/config", nil)
	cfg := data.(map[string]any)
	fmt.Println(status)
	fmt.Printf("name=%v cores=%v memory=%q\n", cfg["name"], cfg["cores"], cfg["memory"])
	// Output:
	// 200 OK
	// name=web cores=2 memory="2048"
}

// Values are rewritten on write as Proxmox rewrites them: a MAC address is
// generated, property strings are reordered, tags sorted and lower-cased,
// and "storage:size" allocates a disk.
func ExampleServer_UpdateConfig() {
	srv, _ := proxmoxtest.NewServer(proxmoxtest.WithSeed(7))
	defer srv.Close()
	ref := proxmox.Ref{Node: "pve", Type: proxmox.QEMU, VMID: 100}
	srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID})

	status, _ := call(srv, "PUT", "/nodes/pve/qemu/100/config", url.Values{
		"net0":  {"bridge=vmbr0,model=virtio,firewall=1"},
		"tags":  {"Web, prod;web"},
		"scsi0": {"local-lvm:32,cache=writeback"},
	})
	fmt.Println(status)
	st, _ := srv.Guest(ref)
	fmt.Println(st.Config["net0"])
	fmt.Println(st.Config["tags"])
	fmt.Println(st.Config["scsi0"])
	// Output:
	// 200 OK
	// virtio=BC:24:11:76:A3:03,bridge=vmbr0,firewall=1
	// prod;web
	// local-lvm:vm-100-disk-0,cache=writeback,size=32G
}

// With manual tasks nothing depends on time: a start task stays running
// until the test finishes it.
func ExampleWithManualTasks() {
	clk := proxmoxtest.NewManualClock(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	srv, _ := proxmoxtest.NewServer(proxmoxtest.WithManualTasks(), proxmoxtest.WithClock(clk))
	defer srv.Close()
	srv.AddGuest(proxmoxtest.GuestSpec{Type: proxmox.LXC, VMID: 200, Config: map[string]string{"memory": "512"}})

	_, data := call(srv, "POST", "/nodes/pve/lxc/200/status/start", nil)
	upid := proxmox.UPID(data.(string))
	fmt.Println(upid)
	_, st := call(srv, "GET", "/nodes/pve/tasks/"+string(upid)+"/status", nil)
	fmt.Println(st.(map[string]any)["status"])

	srv.FinishTask(upid)
	_, st = call(srv, "GET", "/nodes/pve/tasks/"+string(upid)+"/status", nil)
	fmt.Println(st.(map[string]any)["status"], st.(map[string]any)["exitstatus"])
	fmt.Println(srv.TaskCount(proxmox.Ref{VMID: 200}, "vzstart"))
	// Output:
	// UPID:pve:00002A32:00C5C100:67760225:vzstart:200:root@pam!guestward:
	// running
	// stopped OK
	// 1
}

// Faults script misbehaviour: here the first config read fails the way a
// broken cluster proxy fails it, the second succeeds.
func ExampleServer_Inject() {
	srv, _ := proxmoxtest.NewServer()
	defer srv.Close()
	srv.AddGuest(proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100})
	h := srv.Inject(proxmoxtest.Fault{
		Method: "GET", Path: "/nodes/*/qemu/100/config",
		Status: 595, Message: "Connection refused", Times: 1,
	})
	for i := 0; i < 2; i++ {
		status, _ := call(srv, "GET", "/nodes/pve/qemu/100/config", nil)
		fmt.Println(status)
	}
	fmt.Println(h.Hits())
	// Output:
	// 595 Connection refused
	// 200 OK
	// 1
}

// Locks and digests behave as on Proxmox: a write with a stale digest is
// refused, and so is a write to a locked guest.
func ExampleServer_SetLock() {
	srv, _ := proxmoxtest.NewServer()
	defer srv.Close()
	ref := proxmox.Ref{Node: "pve", Type: proxmox.QEMU, VMID: 100}
	srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID})
	before, _ := srv.Guest(ref)

	srv.SetLock(ref, "backup")
	status, _ := call(srv, "PUT", "/nodes/pve/qemu/100/config", url.Values{"cores": {"4"}})
	fmt.Println(status)
	status, _ = call(srv, "PUT", "/nodes/pve/qemu/100/config", url.Values{"cores": {"4"}, "digest": {before.Digest}})
	fmt.Println(status)
	// Output:
	// 500 VM is locked (backup)
	// 500 checksum mismatch (file change by other user?)
}

// An HA-managed guest: the start request only hands the guest to the HA
// manager, in a hastart task of the caller; the HA manager then starts it
// in a qmstart task of its own, as root@pam. Holding the manager shows the
// moment in between.
func ExampleServer_HoldHA() {
	srv, _ := proxmoxtest.NewServer(proxmoxtest.WithManualTasks())
	defer srv.Close()
	ref := proxmox.Ref{Node: "pve", Type: proxmox.QEMU, VMID: 100}
	srv.AddGuest(proxmoxtest.GuestSpec{Node: ref.Node, Type: ref.Type, VMID: ref.VMID, HA: true})

	release := srv.HoldHA()
	_, data := call(srv, "POST", "/nodes/pve/qemu/100/status/start", nil)
	srv.FinishTask(proxmox.UPID(data.(string)))
	st, _ := srv.Guest(ref)
	fmt.Println("handed over:", st.HAState, st.Running)

	release()
	st, _ = srv.Guest(ref)
	fmt.Println("manager acted:", st.HAState, st.Running)
	srv.FinishTasks()
	st, _ = srv.Guest(ref)
	fmt.Println("started:", st.HAState, st.Running)
	for _, t := range srv.Tasks() {
		fmt.Println(t.Type, t.User, t.ExitStatus)
	}
	// Output:
	// handed over: stopped false
	// manager acted: started false
	// started: started true
	// hastart root@pam!guestward OK
	// qmstart root@pam OK
}
