package proxmox

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The tests in this file serve recorded Proxmox responses (testdata/, whose
// README cites where each was published) and check that the client decodes
// them exactly.

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// serveFile answers route with the recorded JSON body verbatim.
func serveFile(t *testing.T, s *srv, route, name string) {
	body := readTestdata(t, name)
	s.handle(route, func(w http.ResponseWriter, r *http.Request) { replyRaw(w, body) })
}

// recordedHTTP is a raw HTTP response from testdata: status line, headers,
// and body. A source that elided the headers (V10) has the body right
// after the status line.
type recordedHTTP struct {
	status int
	reason string
	header http.Header
	body   string
}

func parseRecordedHTTP(t *testing.T, name string) recordedHTTP {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(readTestdata(t, name)))
	if !sc.Scan() {
		t.Fatal("empty file")
	}
	proto, rest, _ := strings.Cut(sc.Text(), " ")
	code, reason, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if proto != "HTTP/1.1" || err != nil {
		t.Fatalf("%s: bad status line %q", name, sc.Text())
	}
	out := recordedHTTP{status: status, reason: reason, header: http.Header{}}
	var body []string
	inBody := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case inBody:
			body = append(body, line)
		case line == "":
			inBody = true
		case strings.HasPrefix(line, "{"):
			inBody = true
			body = append(body, line)
		default:
			k, v, _ := strings.Cut(line, ": ")
			out.header.Add(k, v)
		}
	}
	out.body = strings.Join(body, "\n")
	if cl := out.header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(out.body)) {
		t.Fatalf("%s: Content-Length %s but body has %d bytes", name, cl, len(out.body))
	}
	return out
}

func TestRecordedV1QEMUConfig(t *testing.T) {
	s := newSrv(t)
	serveFile(t, s, "GET /nodes/pve1/qemu/505/config", "v01-qemu-config-pve7.json")
	cfg, err := s.tokenClient(t).Config(context.Background(), Ref{"pve1", QEMU, 505})
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	want := Config{
		Digest: "aa9ce37c4df320889d4ab5382a2947efa4c1d815",
		Values: map[string]string{
			"cores":      "2",
			"name":       "minha-nova-vps",
			"bootdisk":   "scsi0",
			"net0":       "virtio=5A:95:56:B3:18:1C,bridge=vmbr0",
			"vga":        "serial0",
			"ipconfig0":  "gw=192.168.0.1,ip=192.168.0.154/24",
			"memory":     "2048",
			"smbios1":    "uuid=5059a66c-23d5-461b-a3cb-004eb3124718",
			"boot":       "c",
			"scsihw":     "virtio-scsi-pci",
			"serial0":    "socket",
			"ide2":       "local-lvm:vm-505-cloudinit,media=cdrom,size=4M",
			"meta":       "creation-qemu=7.2.0,ctime=1691463271",
			"cipassword": "**********",
			"agent":      "enabled=1,fstrim_cloned_disks=1",
			"vmgenid":    "d4443aa6-b66f-45b2-97ff-6dee78eade44",
			"ciuser":     "root",
			"cpulimit":   "0.4",
			"scsi0":      "local-lvm:vm-505-disk-0,size=60G",
		},
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Fatalf("V1 (-want +got):\n%s", diff)
	}
}

func TestRecordedV2TaskWarnings(t *testing.T) {
	s := newSrv(t)
	upid := UPID("UPID:dahu-2:00007323:001036A5:6419CAF8:qmstart:100:root@pam:")
	serveFile(t, s, "GET /nodes/dahu-2/tasks/"+string(upid)+"/status", "v02-task-status-warnings.json")
	c := s.tokenClient(t)
	want := TaskStatus{
		UPID: upid, Node: "dahu-2", PID: 29475, PStart: 1062565, StartTime: time.Unix(1679411960, 0).UTC(),
		Type: "qmstart", ID: "100", User: "root@pam", Status: "stopped", ExitStatus: "WARNINGS: 1",
	}
	st, err := c.TaskStatus(context.Background(), upid)
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Fatalf("V2 (-want +got):\n%s", diff)
	}
	st, err = c.WaitTask(context.Background(), upid)
	if err != nil || !st.Succeeded() || st.Warnings() != 1 {
		t.Fatalf("WaitTask = %+v, %v: WARNINGS: 1 is success with one warning", st, checkErr(t, err))
	}
	// The UPID in the answer agrees with its fields.
	info, err := ParseUPID(string(upid))
	if err != nil || info.PID != st.PID || uint64(info.PStart) != st.PStart || !info.StartTime.Equal(st.StartTime) {
		t.Fatalf("UPID fields %+v disagree with status %+v", info, st)
	}
}

func TestRecordedV3ParameterError(t *testing.T) {
	rec := parseRecordedHTTP(t, "v03-400-parameter-error.http")
	s := newSrv(t)
	s.handle("POST /nodes/pve/lxc/102/status/stop", func(w http.ResponseWriter, r *http.Request) {
		rawReply(w, rec.status, rec.reason, rec.body)
	})
	_, err := s.tokenClient(t).Stop(context.Background(), Ref{"pve", LXC, 102})
	wantErr(t, err, ErrInvalidParameter)
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("not an APIError: %v", err)
	}
	want := &APIError{
		StatusCode: 400, Method: "POST", Path: "/nodes/pve/lxc/102/status/stop",
		Message: "Parameter verification failed.",
		Errors:  map[string]string{"overrule-shutdown": "property is not defined in schema and the schema does not allow additional properties"},
	}
	if diff := cmp.Diff(want, ae); diff != "" {
		t.Fatalf("V3 (-want +got):\n%s", diff)
	}
	if s.count("POST /nodes/pve/lxc/102/status/stop") != 1 {
		t.Fatal("a 400 write must not be resent")
	}
}

func TestRecordedV4LXCListStringVMIDs(t *testing.T) {
	// No method lists /nodes/{node}/lxc; the same lenient entry decoder
	// that Guests uses must read PVE <= 8.1's string vmids.
	var entries []resourceEntry
	if _, err := decodeData([]byte(readTestdata(t, "v04-lxc-list-string-vmid.json")), &entries); err != nil {
		t.Fatal(err)
	}
	var got []Guest
	for _, e := range entries {
		e.Node = "node1" // the node list has no node field
		g, err := e.guest()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, g)
	}
	want := []Guest{
		{Ref: Ref{"node1", LXC, 106}, Name: "test", Status: "running", MaxCPU: 0, MaxMem: 536870912, MaxDisk: 8350298112, Uptime: 919760 * time.Second},
		{Ref: Ref{"node1", LXC, 105}, Name: "zort", Status: "running", MaxMem: 536870912, MaxDisk: 8350298112, Uptime: 919761 * time.Second},
		{Ref: Ref{"node1", LXC, 101}, Name: "test-container", Status: "stopped", Template: true, MaxMem: 536870912, MaxDisk: 8589934592},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("V4 (-want +got):\n%s", diff)
	}
}

func TestRecordedV5V6ClusterResources(t *testing.T) {
	s := newSrv(t)
	v5 := strings.TrimSpace(readTestdata(t, "v05-cluster-resources.json"))
	v6 := strings.TrimSpace(readTestdata(t, "v06-cluster-resources-lxc-entry.json"))
	// Splice the V6 element into V5's list, plus a storage entry that a
	// type=vm answer should not have but must not break the call.
	body := strings.TrimSuffix(strings.TrimSpace(strings.TrimSuffix(v5, "}")), "]") +
		", " + v6 + `, {"id":"storage/pve/local","type":"storage","node":"pve","status":"available"}]}`
	s.handle("GET /cluster/resources", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "type=vm" {
			t.Errorf("query = %q, want type=vm", r.URL.RawQuery)
		}
		replyRaw(w, body)
	})
	got, err := s.tokenClient(t).Guests(context.Background())
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	want := []Guest{
		{Ref: Ref{"node2", QEMU, 100}, Name: "server1", Status: "running", MaxCPU: 1, MaxMem: 1073741824, MaxDisk: 34359738368, Uptime: 874350 * time.Second},
		{Ref: Ref{"node1", QEMU, 101}, Name: "leap154", Status: "stopped", Template: true, MaxCPU: 4, MaxMem: 16777216000, MaxDisk: 68719476736},
		{Ref: Ref{"pve", LXC, 733}, Name: "pbx", Status: "running", MaxCPU: 2, MaxMem: 2147483648, MaxDisk: 10464022528, Uptime: 81418 * time.Second},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("V5+V6 (-want +got):\n%s", diff)
	}
}

func TestRecordedV7LXCConfig(t *testing.T) {
	s := newSrv(t)
	serveFile(t, s, "GET /nodes/pve1/lxc/101/config", "v07-lxc-config-raw-keys.json")
	cfg, err := s.tokenClient(t).Config(context.Background(), Ref{"pve1", LXC, 101})
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	want := Config{
		Digest: "5911baea29f4c0073fb063fd9ab29e75892832bf",
		Values: map[string]string{
			"arch":     "amd64",
			"cores":    "2",
			"features": "fuse=1,mknod=1,nesting=1",
			"hostname": "test-container",
			"memory":   "4096",
			"mp0":      "/mnt/foo/bar,mp=/storage",
			"net0":     "name=eth0,bridge=vmbr0,firewall=1,hwaddr=5D:CF:BD:B2:C5:39,ip=dhcp,type=veth",
			"onboot":   "1",
			"ostype":   "debian",
			"rootfs":   "vmstore:subvol-101-disk-0,size=30G",
			"swap":     "512",
			"tags":     "tag1;tag2",
		},
		LXCRaw: [][2]string{
			{"lxc.cgroup2.devices.allow", "c 226:0 rwm"},
			{"lxc.mount.entry", "/dev/dri dev/dri none bind,optional,create=dir"},
		},
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Fatalf("V7 (-want +got):\n%s", diff)
	}
}

func TestRecordedV8QEMUStatus(t *testing.T) {
	s := newSrv(t)
	serveFile(t, s, "GET /nodes/pve1/qemu/101/status/current", "v08-qemu-status-current.json")
	st, err := s.tokenClient(t).Status(context.Background(), Ref{"pve1", QEMU, 101})
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	want := GuestStatus{
		Ref: Ref{"pve1", QEMU, 101}, Status: "running", QMPStatus: "running", Name: "matt",
		PID: 1563102, Uptime: 170815 * time.Second,
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Fatalf("V8 (-want +got):\n%s", diff)
	}
	if !st.Running() {
		t.Fatal("Running() = false")
	}
}

func TestRecordedV9TaskList(t *testing.T) {
	s := newSrv(t)
	list := readTestdata(t, "v09-task-list-entries.json")
	s.handle("GET /nodes/iaclab-01-01/tasks", func(w http.ResponseWriter, r *http.Request) {
		replyRaw(w, `{"data":`+list+`,"total":2}`)
	})
	got, err := s.tokenClient(t).Tasks(context.Background(), "iaclab-01-01", TaskFilter{})
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	want := []TaskInfo{
		{UPID: "UPID:iaclab-01-01:00000DD3:1C419D88:6119FB65:srvreload:networking:root@pam:", Node: "iaclab-01-01",
			PID: 3539, PStart: 474062216, StartTime: time.Unix(1629092709, 0).UTC(), EndTime: time.Unix(1629092710, 0).UTC(),
			Type: "srvreload", ID: "networking", User: "root@pam", ExitStatus: "OK"},
		{UPID: "UPID:iaclab-01-01:000029DD:1599528B:6108F068:srvreload:networking:root@pam:", Node: "iaclab-01-01",
			PID: 10717, PStart: 362369675, StartTime: time.Unix(1627975784, 0).UTC(), EndTime: time.Unix(1627975785, 0).UTC(),
			Type: "srvreload", ID: "networking", User: "root@pam", ExitStatus: "command 'ifreload -a' failed: exit code 1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("V9 (-want +got):\n%s", diff)
	}
	if !got[0].Succeeded() || got[1].Succeeded() {
		t.Fatal("Succeeded wrong")
	}
}

func TestRecordedV10LockTimeout(t *testing.T) {
	rec := parseRecordedHTTP(t, "v10-500-lock-timeout.http")
	if rec.body != `{"data":null}` {
		t.Fatalf("body = %q", rec.body)
	}
	s := newSrv(t)
	s.handle("PUT /nodes/pve1/lxc/203/config", func(w http.ResponseWriter, r *http.Request) {
		rawReply(w, rec.status, rec.reason, rec.body)
	})
	c := s.tokenClient(t, WithRetry(1, time.Millisecond, time.Millisecond))
	_, err := c.SetConfig(context.Background(), Ref{"pve1", LXC, 203}, ConfigChange{Set: map[string]string{"cores": "2"}})
	// Someone held the guest's config lock: the write did nothing, and
	// may be sent again once the holder is done.
	wantErr(t, err, ErrTransient)
	wantErr(t, err, ErrLocked)
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("a config lock timeout did nothing: %v", err)
	}
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 500 || ae.Message != "can't lock file '/var/lock/qemu-server/lock-203.conf' - got timeout" {
		t.Fatalf("APIError = %#v", ae)
	}
	if n := s.count("PUT /nodes/pve1/lxc/203/config"); n != 2 {
		t.Fatalf("%d requests; the lock timeout is safe to resend (1 retry allowed)", n)
	}
}

func TestRecordedV11Ticket(t *testing.T) {
	s := newSrv(t)
	serveFile(t, s, "POST /access/ticket", "v11-ticket.json")
	s.handle("POST /nodes/pve1/qemu/100/status/start", func(w http.ResponseWriter, r *http.Request) { reply(w, string(testUPID)) })
	c := s.client(t, WithPassword("root@pam", testPassword))
	if _, err := c.Start(context.Background(), testRef); err != nil {
		t.Fatal(checkErr(t, err))
	}
	reqs := s.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	if reqs[0].Body != "password="+testPassword+"&username=root%40pam" {
		t.Errorf("login body = [redacted; %d bytes]", len(reqs[0].Body))
	}
	start := reqs[1]
	if got := start.Header.Get("Cookie"); got != "PVEAuthCookie=PVE%3Aroot%40pam%3A4EEC61E2%3A%3ArsKoApxDTLYPn6H3NNT6iP2mv..." {
		t.Errorf("Cookie = %q", got)
	}
	if got := start.Header.Get("CSRFPreventionToken"); got != "4EEC61E2:lwk7od06fa1+DcPUwBTXCcndyAY" {
		t.Errorf("CSRFPreventionToken = %q", got)
	}
}

func TestRecordedV12StatusLines(t *testing.T) {
	classes := map[int]error{401: ErrUnauthorized, 595: ErrTransient, 501: ErrNotImplemented}
	for _, line := range strings.Split(strings.TrimSpace(readTestdata(t, "v12-status-lines.txt")), "\n") {
		code, reason, _ := strings.Cut(line, " ")
		status, _ := strconv.Atoi(code)
		t.Run(line, func(t *testing.T) {
			s := newSrv(t)
			s.handle("GET /version", func(w http.ResponseWriter, r *http.Request) { rawReply(w, status, reason, "") })
			_, err := s.tokenClient(t, WithRetry(0, 0, 0)).Version(context.Background())
			wantErr(t, err, classes[status])
			var ae *APIError
			if !errors.As(err, &ae) || ae.StatusCode != status || ae.Message != reason {
				t.Fatalf("APIError = %#v, want status %d message %q", ae, status, reason)
			}
		})
	}
}

func TestRecordedV13FailedTask(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(readTestdata(t, "v13-task-exitstatus.txt")), "\n")
	upid, exit := UPID(lines[0]), lines[1]
	info, err := upid.Parse()
	if err != nil || info.Node != "pve-9l" || info.Type != "qmdestroy" || info.ID != "105" {
		t.Fatalf("ParseUPID = %+v, %v", info, err)
	}
	s := newSrv(t)
	s.handle("GET /nodes/pve-9l/tasks/"+string(upid)+"/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"upid": upid, "node": "pve-9l", "status": "stopped", "exitstatus": exit, "pid": info.PID,
			"pstart": info.PStart, "starttime": info.StartTime.Unix(), "type": "qmdestroy", "id": "105", "user": "root@pam"})
	})
	st, err := s.tokenClient(t).WaitTask(context.Background(), upid)
	wantErr(t, err, ErrTaskFailed, ErrNotFound)
	var te *TaskError
	if !errors.As(err, &te) || te.UPID != upid || te.ExitStatus != exit || st.ExitStatus != exit {
		t.Fatalf("TaskError = %#v, status %+v", te, st)
	}
}
