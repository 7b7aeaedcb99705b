package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

func TestPathTemplate(t *testing.T) {
	upid := "UPID:pve1:00007323:001036A5:6419CAF8:qmstart:100:guestward@pve!ci:"
	tests := []struct {
		name, path, want, node string
		why                    string
	}{
		{"guest status", "/nodes/pve1/qemu/100/status/current", "/nodes/{node}/qemu/{vmid}/status/current", "pve1",
			"the vmid would make one series per guest"},
		{"container config", "/nodes/pve-2/lxc/200/config", "/nodes/{node}/lxc/{vmid}/config", "pve-2",
			"both guest types are templated alike"},
		{"task status, escaped", "/nodes/pve1/tasks/" + url.PathEscape(upid) + "/status", "/nodes/{node}/tasks/{upid}/status", "pve1",
			"a UPID is unique per task and names the token's user"},
		{"task status, raw", "/nodes/pve1/tasks/" + upid + "/status", "/nodes/{node}/tasks/{upid}/status", "pve1",
			"an unescaped UPID holds no '/' and is still one segment"},
		{"task list", "/nodes/pve1/tasks", "/nodes/{node}/tasks", "pve1",
			"a fixed word after tasks is kept when nothing follows"},
		{"storage volume", "/nodes/pve1/storage/local-lvm/content/" + url.PathEscape("local-lvm:vm-100-disk-0"), "/nodes/{node}/storage/{storage}/content/{volume}", "pve1",
			"volume names carry the vmid"},
		{"snapshot", "/nodes/pve1/qemu/100/snapshot/before-upgrade/config", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config", "pve1",
			"snapshot names are the user's"},
		{"ha resource", "/cluster/ha/resources/vm:100", "/cluster/ha/resources/{sid}", "",
			"an HA service id names the guest"},
		{"user", "/access/users/root@pam", "/access/users/{id}", "",
			"anything that is not a plain word is an identifier"},
		{"query dropped", "/cluster/resources?type=vm", "/cluster/resources", "",
			"queries are never part of the template"},
		{"login", "/access/ticket", "/access/ticket", "", "fixed paths stay as they are"},
		{"root", "/", "/", "", "the empty path is the root"},
		{"odd node", "/nodes/" + url.PathEscape("a b/../c") + "/qemu/100/config", "/nodes/{node}/qemu/{vmid}/config", "{invalid}",
			"something that cannot be a node name is never reported as one"},
		{"upper case word", "/nodes/pve1/qemu/100/Config", "/nodes/{node}/qemu/{vmid}/{id}", "pve1",
			"API words are lower case; anything else may be data"},
		{"long word", "/" + strings.Repeat("a", 33), "/{id}", "", "a long segment may be data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, node := PathTemplate(tt.path)
			if got != tt.want || node != tt.node {
				t.Errorf("PathTemplate(%q) = %q, %q; want %q, %q (%s)", tt.path, got, node, tt.want, tt.node, tt.why)
			}
		})
	}
}

// observations collects RequestInfo values from several goroutines.
type observations struct {
	mu    sync.Mutex
	infos []RequestInfo
}

func (o *observations) add(ri RequestInfo) {
	o.mu.Lock()
	o.infos = append(o.infos, ri)
	o.mu.Unlock()
}

func (o *observations) take() []RequestInfo {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := o.infos
	o.infos = nil
	return out
}

// noSecretIn fails t if a secret, or an identifier the template should
// have hidden, appears anywhere in the observations.
func noSecretIn(t *testing.T, infos []RequestInfo, hidden ...string) {
	t.Helper()
	for _, ri := range infos {
		text := fmt.Sprintf("%+v %#v", ri, ri)
		assertNoSecret(t, "RequestInfo", text)
		for _, h := range append([]string{testTokenID, "PVEAPIToken"}, hidden...) {
			if strings.Contains(text, h) {
				t.Errorf("RequestInfo shows %q: %s", h, text)
			}
		}
	}
}

func TestRequestObserverOnePerAttempt(t *testing.T) {
	s := newSrv(t)
	var calls int
	var mu sync.Mutex
	s.handle("GET /nodes/pve1/qemu/100/status/current", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			rawReply(w, 503, "Service Unavailable", "")
			return
		}
		reply(w, map[string]any{"status": "running", "vmid": 100})
	})
	s.handle("GET /nodes/pve1/tasks/"+string(testUPID)+"/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"status": "stopped", "exitstatus": "OK", "upid": string(testUPID)})
	})
	var obs observations
	c := s.tokenClient(t, WithRequestObserver(obs.add))
	ctx := context.Background()

	if _, err := c.Status(ctx, testRef); err != nil {
		t.Fatal(checkErr(t, err))
	}
	got := obs.take()
	if len(got) != 2 {
		t.Fatalf("got %d observations for a request answered 503 then 200, want one per attempt: %+v", len(got), got)
	}
	want := []RequestInfo{
		{Method: "GET", Path: "/nodes/{node}/qemu/{vmid}/status/current", Node: "pve1", Status: 503, Attempt: 1, Retried: true},
		{Method: "GET", Path: "/nodes/{node}/qemu/{vmid}/status/current", Node: "pve1", Status: 200, Attempt: 2},
	}
	for i := range want {
		g := got[i]
		if g.Duration <= 0 {
			t.Errorf("attempt %d: duration %v, want > 0", i+1, g.Duration)
		}
		g.Duration = 0
		if g != want[i] {
			t.Errorf("attempt %d:\n got %+v\nwant %+v", i+1, g, want[i])
		}
	}

	if _, err := c.TaskStatus(ctx, testUPID); err != nil {
		t.Fatal(checkErr(t, err))
	}
	got = obs.take()
	if len(got) != 1 || got[0].Path != "/nodes/{node}/tasks/{upid}/status" || got[0].Status != 200 {
		t.Fatalf("task status observed as %+v", got)
	}
	noSecretIn(t, got, "UPID:", "qmstart")
}

func TestRequestObserverFailures(t *testing.T) {
	s := newSrv(t)
	s.handle("POST /nodes/pve1/qemu/100/status/start", func(w http.ResponseWriter, r *http.Request) { hangUp(w) })
	s.handle("POST /nodes/pve1/qemu/100/status/stop", func(w http.ResponseWriter, r *http.Request) {
		rawReply(w, 500, "VM 100 not running", `{"data":null}`)
	})
	var obs observations
	c := s.tokenClient(t, WithRequestObserver(obs.add))
	ctx := context.Background()

	// A write whose connection dropped after it was sent is not resent:
	// one attempt, no answer.
	if _, err := c.Start(ctx, testRef); err == nil {
		t.Fatal("Start succeeded against a server that hangs up")
	}
	got := obs.take()
	if len(got) != 1 || got[0].Status != 0 || got[0].ErrorClass != "network" || got[0].Retried || got[0].Path != "/nodes/{node}/qemu/{vmid}/status/start" {
		t.Fatalf("dropped connection observed as %+v, want one attempt, status 0, class network", got)
	}

	// An error answer is an answer: its status, no error class.
	if _, err := c.Stop(ctx, testRef); err == nil {
		t.Fatal("Stop succeeded against a 500")
	}
	got = obs.take()
	if len(got) != 1 || got[0].Status != 500 || got[0].ErrorClass != "" || got[0].Method != "POST" {
		t.Fatalf("500 observed as %+v", got)
	}

	// A context that ended before the request: nothing was attempted.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Status(cctx, testRef); !errors.Is(err, context.Canceled) {
		t.Fatalf("Status with an ended context: %v", err)
	}
	if got := obs.take(); len(got) != 0 {
		t.Fatalf("a request never sent was observed: %+v", got)
	}
	noSecretIn(t, got)
}

func TestRequestObserverLoginHoldsNoSecret(t *testing.T) {
	ts := newTicketServer(t)
	var obs observations
	c := ts.client(t, WithPassword("root@pam", testPassword), WithRequestObserver(obs.add))
	if _, err := c.Version(context.Background()); err != nil {
		t.Fatal(checkErr(t, err))
	}
	got := obs.take()
	if len(got) != 2 || got[0].Path != "/access/ticket" || got[0].Method != "POST" || got[0].Node != "" || got[1].Status != 200 {
		t.Fatalf("login then request observed as %+v", got)
	}
	noSecretIn(t, got, "root@pam", ticketMarker)
}

func TestWithRequestObserverRefusesNil(t *testing.T) {
	_, err := New("https://pve:8006", WithRequestObserver(nil))
	if !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("New with a nil observer: %v, want ErrInvalidOption", err)
	}
	if s := fmt.Sprint(WithRequestObserver(func(RequestInfo) {})); s != "proxmox.WithRequestObserver(func)" {
		t.Errorf("option prints as %q", s)
	}
}

// The observer sees every attempt of a request the client gives up on,
// and installing it changes no retry decision: a write answered 503 is
// still sent once.
func TestRequestObserverRetriesUnchanged(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /cluster/resources", func(w http.ResponseWriter, r *http.Request) {
		rawReply(w, 503, "Service Unavailable", "")
	})
	s.handle("POST /nodes/pve1/qemu/100/status/start", func(w http.ResponseWriter, r *http.Request) {
		rawReply(w, 503, "Service Unavailable", "")
	})
	var obs observations
	c := s.tokenClient(t, WithRequestObserver(obs.add))
	ctx := context.Background()

	if _, err := c.Guests(ctx); err == nil {
		t.Fatal("Guests succeeded against a 503")
	}
	got := obs.take()
	// s.client allows 3 retries: 4 attempts.
	if len(got) != 4 || s.count("GET /cluster/resources") != 4 {
		t.Fatalf("got %d observations of %d attempts, want 4 of 4: %+v", len(got), s.count("GET /cluster/resources"), got)
	}
	for n, ri := range got {
		if ri.Attempt != n+1 || ri.Status != 503 || ri.Retried != (n < 3) {
			t.Errorf("attempt %d observed as %+v", n+1, ri)
		}
	}

	if _, err := c.Start(ctx, testRef); err == nil {
		t.Fatal("Start succeeded against a 503")
	}
	got = obs.take()
	if len(got) != 1 || s.count("POST /nodes/pve1/qemu/100/status/start") != 1 || got[0].Retried {
		t.Fatalf("a write answered 503 was attempted %d times, observed as %+v", s.count("POST /nodes/pve1/qemu/100/status/start"), got)
	}
}
