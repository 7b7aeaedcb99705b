package gauntlet

import (
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// hostile is a Proxmox that lies: it serves the fake cluster, except that
// the answers its rules match are replaced by what the rules say. A rule
// may let the fake handle the request first (the write happens, only its
// answer is garbage) or answer in its place (nothing happens).
type hostile struct {
	srv *proxmoxtest.Server

	mu    sync.Mutex
	rules []*hostileRule
}

type hostileRule struct {
	method string // "" matches any
	path   string // path.Match pattern below /api2/json
	after  bool   // let the fake handle the request, then replace its answer
	status int
	body   string
	// size, when set, streams a body of that many bytes: a JSON prefix
	// and filler, never held in memory.
	size int64
	// answer, when set, writes the whole answer, built from the request;
	// status, body and size are then unused.
	answer func(w http.ResponseWriter, r *http.Request)
	hits   int
}

func (h *hostile) set(rules ...*hostileRule) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rules = rules
}

func (h *hostile) match(r *http.Request) *hostileRule {
	p := strings.TrimPrefix(r.URL.Path, proxmoxtest.APIPath)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, rule := range h.rules {
		if rule.method != "" && rule.method != r.Method {
			continue
		}
		if ok, _ := path.Match(rule.path, p); ok {
			rule.hits++
			return rule
		}
	}
	return nil
}

func (h *hostile) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rule := h.match(r)
	if rule == nil {
		h.srv.ServeHTTP(w, r)
		return
	}
	if rule.after {
		h.srv.ServeHTTP(httptest.NewRecorder(), r)
	} else {
		_, _ = io.Copy(io.Discard, r.Body)
	}
	if rule.answer != nil {
		rule.answer(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(rule.status)
	if rule.size > 0 {
		_, _ = io.WriteString(w, `{"data":[`)
		chunk := strings.Repeat(`{"vmid":100,"type":"qemu","node":"pve1"},`, 1024)
		for n := int64(len(chunk)); n < rule.size; n += int64(len(chunk)) {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
		return
	}
	_, _ = io.WriteString(w, rule.body)
}

// hostileCase is one lie and what the engine must make of it.
type hostileCase struct {
	name  string
	rules []*hostileRule
	// shot, when set, is applied as a one-shot; otherwise a pass runs
	// with the battery's desired state.
	shot *reconcile.OneShot
	// aborts: the pass must be aborted (it could not act at all).
	aborts bool
	// want lists what the error (of the pass, the action or the one-shot)
	// must mention.
	want []string
}

func hostileCases() []hostileCase {
	g100 := "/nodes/pve1/qemu/100"
	start := &reconcile.OneShot{Key: "start-100", Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}, Kind: reconcile.ActionStart}
	setLXC := &reconcile.OneShot{Key: "mem-200", Ref: proxmox.Ref{Node: "pve1", Type: proxmox.LXC, VMID: 200}, Kind: reconcile.ActionSetConfig, Set: map[string]string{"memory": "1024"}}
	return []hostileCase{
		// The guest list.
		{name: "list truncated", rules: []*hostileRule{{path: "/cluster/resources", status: 200, body: `{"data":[{"vmid":100,"type":"qem`}}, aborts: true, want: []string{"listing guests", "unexpected response"}},
		{name: "list huge", rules: []*hostileRule{{path: "/cluster/resources", status: 200, size: 65 << 20}}, aborts: true, want: []string{"listing guests", "larger than"}},
		{name: "list is a string", rules: []*hostileRule{{path: "/cluster/resources", status: 200, body: `{"data":"hello"}`}}, aborts: true, want: []string{"listing guests", "unexpected response"}},
		{name: "list is not JSON", rules: []*hostileRule{{path: "/cluster/resources", status: 200, body: `<html><body>502 Bad Gateway</body></html>`}}, aborts: true, want: []string{"listing guests", "not a JSON envelope"}},
		{name: "list empty body", rules: []*hostileRule{{path: "/cluster/resources", status: 200, body: ``}}, aborts: true, want: []string{"listing guests"}},
		{name: "vmid an object", rules: []*hostileRule{{path: "/cluster/resources", status: 200, body: `{"data":[{"id":"qemu/100","type":"qemu","vmid":{"x":1},"node":"pve1"}]}`}}, aborts: true, want: []string{"listing guests", "entry 0"}},
		{name: "vmid too large", rules: []*hostileRule{{path: "/cluster/resources", status: 200, body: `{"data":[{"id":"qemu/100","type":"qemu","vmid":1e30,"node":"pve1"}]}`}}, aborts: true, want: []string{"listing guests", "entry 0"}},
		{name: "node a path", rules: []*hostileRule{{path: "/cluster/resources", status: 200, body: `{"data":[{"id":"qemu/100","type":"qemu","vmid":100,"node":"../../access","status":"stopped"}]}`}}, aborts: true, want: []string{"listing guests", "entry 0"}},
		{name: "list 200 with an error", rules: []*hostileRule{{path: "/cluster/resources", status: 200, body: `{"data":null,"errors":{"type":"bad"}}`}}, aborts: true, want: []string{"listing guests", "data is null"}},
		{name: "list status 999", rules: []*hostileRule{{path: "/cluster/resources", status: 999, body: `{}`}}, aborts: true, want: []string{"listing guests", "999"}},

		// One guest's state.
		{name: "status null", rules: []*hostileRule{{path: g100 + "/status/current", status: 200, body: `{"data":null}`}}, want: []string{"reading status"}},
		{name: "status wrong types", rules: []*hostileRule{{path: g100 + "/status/current", status: 200, body: `{"data":{"status":{"a":1},"template":"perhaps"}}`}}, want: []string{"reading status"}},
		// A pass reads configuration, digest and pending changes in one
		// request to the pending endpoint.
		{name: "pending truncated", rules: []*hostileRule{{path: g100 + "/pending", status: 200, body: `{"data":[{"key":"memory","value":"5`}}, want: []string{"reading config and pending changes"}},
		{name: "pending digest not hex", rules: []*hostileRule{{path: g100 + "/pending", status: 200, body: `{"data":[{"key":"memory","value":"512"},{"key":"digest","value":"not-a-digest; rm -rf /"}]}`}}, want: []string{"digest", "40-digit hex"}},
		{name: "pending without digest", rules: []*hostileRule{{path: g100 + "/pending", status: 200, body: `{"data":[{"key":"memory","value":"512"}]}`}}, want: []string{"no digest row"}},
		{name: "pending key twice", rules: []*hostileRule{{path: g100 + "/pending", status: 200, body: `{"data":[{"key":"memory","value":"512"},{"key":"memory","value":"4096"},{"key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"}]}`}}, want: []string{"appears twice"}},
		{name: "pending garbage", rules: []*hostileRule{{path: g100 + "/pending", status: 200, body: `{"data":[{"key":["memory"]}]}`}}, want: []string{"reading config and pending changes"}},

		// Answers to writes, after the write happened.
		{name: "start answers a bogus UPID", shot: start, rules: []*hostileRule{{path: g100 + "/status/start", after: true, status: 200, body: `{"data":"UPID:bogus"}`}}},
		{name: "start answers a number", shot: start, rules: []*hostileRule{{path: g100 + "/status/start", after: true, status: 200, body: `{"data":12345}`}}},
		{name: "start answers truncated", shot: start, rules: []*hostileRule{{path: g100 + "/status/start", after: true, status: 200, body: `{"data":"UPID:pve1:000`}}},
		{name: "start answers null", shot: start, rules: []*hostileRule{{path: g100 + "/status/start", after: true, status: 200, body: `{"data":null}`}}},
		{name: "start answers another guest's UPID", shot: start, rules: []*hostileRule{{path: g100 + "/status/start", after: true, status: 200,
			body: `{"data":"UPID:pve1:00001234:00C5C0DF:6B0725F0:qmstart:999:root@pam!guestward:"}`}}},
		{name: "start answers another node's UPID", shot: start, rules: []*hostileRule{{path: g100 + "/status/start", after: true, status: 200,
			body: `{"data":"UPID:pve2:00001234:00C5C0DF:6B0725F0:qmstart:100:root@pam!guestward:"}`}}},
		{name: "lxc config answers garbage", shot: setLXC, rules: []*hostileRule{{path: "/nodes/pve1/lxc/200/config", method: "PUT", after: true, status: 200, body: `{"data":{"odd":true}}`}}},

		// Task status.
		{name: "task status garbage", shot: start, rules: []*hostileRule{{path: "/nodes/*/tasks/*/status", status: 200, body: `{"data":{"status":7,"exitstatus":["OK"]}}`}}, want: []string{"unexpected response"}},
		{name: "task status html", shot: start, rules: []*hostileRule{{path: "/nodes/*/tasks/*/status", status: 200, body: `<html>`}}, want: []string{"not a JSON envelope"}},
	}
}

// TestHostileServer runs the engine against a Proxmox whose answers are
// malformed or lies. Each lie must end in a clear error or be seen
// through; nothing the engine sends may carry what the lie contained; and
// whatever the lie hid, no operation runs twice and the journal tells what
// really happened, once the server tells the truth again.
func TestHostileServer(t *testing.T) {
	fig := newFigures(t)
	for _, c := range hostileCases() {
		t.Run(c.name, func(t *testing.T) {
			fig.add("hostile_cases", 1)
			srv := batteryCluster(t)
			h := &hostile{srv: srv}
			ts := httptest.NewUnstartedServer(h)
			ts.Config.ErrorLog = log.New(io.Discard, "", 0) // clients hanging up are part of the game
			ts.StartTLS()
			t.Cleanup(ts.Close)
			client, err := proxmox.New(ts.URL,
				proxmox.WithHTTPClient(ts.Client()),
				proxmox.WithAPIToken(srv.APIToken()),
				proxmox.WithTaskPolling(time.Millisecond, 5*time.Millisecond),
				proxmox.WithTaskNotFoundGrace(50*time.Millisecond),
				proxmox.WithRetry(1, time.Millisecond, 2*time.Millisecond),
			)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(client.CloseIdleConnections)
			ctx := ctxFor(t, time.Minute)
			ds, err := reconcile.ParseDesiredJSON([]byte(good))
			if err != nil {
				t.Fatal(err)
			}
			prov, err := reconcile.NewStaticProvider(ds)
			if err != nil {
				t.Fatal(err)
			}
			jr := journal.NewMemory()
			e, err := reconcile.NewEngine(reconcile.Config{
				Proxmox: client, Journal: jr, Provider: prov,
				RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond, SettleDelay: time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.Queue().Close(ctx) })

			h.set(c.rules...)
			var errText string
			if c.shot != nil {
				res, err := e.Apply(ctx, *c.shot)
				errText = res.Error
				if err != nil {
					errText = err.Error()
				}
			} else {
				rep, err := e.ReconcileOnce(ctx)
				switch {
				case c.aborts && !errors.Is(err, reconcile.ErrPassAborted):
					t.Fatalf("the pass was not aborted: %v\n%s", err, rep)
				case !c.aborts && err != nil:
					t.Fatalf("pass: %v", err)
				case c.aborts:
					errText = err.Error()
				default:
					g := rep.Guests[0]
					if g.Outcome == reconcile.GuestChanged || g.Outcome == reconcile.GuestInSync {
						t.Fatalf("guest 100 %s despite the lie:\n%s", g.Outcome, rep)
					}
					errText = g.Detail
					for _, a := range g.Actions {
						errText += " " + a.Error
					}
				}
			}
			for _, w := range c.want {
				if !strings.Contains(errText, w) {
					t.Errorf("error %q does not mention %q", errText, w)
				}
			}
			for _, r := range c.rules {
				if r.hits == 0 {
					t.Errorf("rule %s %s never applied", r.method, r.path)
				}
			}
			// Nothing the lie carried reached Proxmox: no request names a
			// guest, node or digest that only the lie held.
			for _, r := range srv.Requests() {
				if strings.Contains(r.Path, "..") || strings.Contains(r.Path, "/999") || strings.Contains(r.Path, "/access/") {
					t.Errorf("request to %s %s", r.Method, r.Path)
				}
				if d, ok := r.Params["digest"]; ok && len(d) != 40 {
					t.Errorf("%s %s sent digest %q", r.Method, r.Path, d)
				}
			}

			// The server tells the truth again. The engine resolves
			// whatever the lie left open, and then: every task Proxmox ran
			// belongs to one operation, the journal says how it really
			// ended, a one-shot asked for again does not run again, and the
			// fleet converges.
			h.set()
			if err := srv.WaitIdle(ctx); err != nil {
				t.Fatal(err)
			}
			if c.shot != nil {
				res, err := e.Apply(ctx, *c.shot)
				if err != nil || !res.Replayed && !res.Applied() {
					t.Fatalf("one-shot asked again: %+v %v", res, err)
				}
			}
			var rep reconcile.Report
			for range 3 {
				if rep, err = e.ReconcileOnce(ctx); err != nil {
					t.Fatalf("pass after the lie: %v", err)
				}
				if sent, _ := rep.Actions(); sent == 0 && rep.Converged() {
					break
				}
			}
			if !rep.Converged() {
				t.Fatalf("not converged after the lie:\n%s", rep)
			}
			if err := srv.WaitIdle(ctx); err != nil {
				t.Fatal(err)
			}
			ops, err := jr.Ops(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range taskClaims(srv.Tasks(), ops, func(proxmox.Ref) bool { return true }) {
				t.Error(p)
			}
			for _, p := range outcomeTruth(srv.Tasks(), ops) {
				t.Error(p)
			}
			if c.shot != nil {
				en, ok, err := jr.LatestByKey(ctx, c.shot.Key)
				if err != nil || !ok {
					t.Fatalf("key %q: %v %v", c.shot.Key, ok, err)
				}
				switch c.shot.Kind {
				case reconcile.ActionStart:
					// The passes after the lie only change the config:
					// every start task is the one-shot's.
					if n := srv.TaskCount(c.shot.Ref, "qmstart"); n != 1 {
						t.Errorf("the one-shot start ran %d times", n)
					} else if en.State != journal.Succeeded {
						t.Errorf("the start ran and succeeded, but its key is recorded %s: %s", en.State, en.Error)
					}
				case reconcile.ActionSetConfig:
					// The change was made before the answer was garbled.
					if en.State != journal.Succeeded {
						t.Errorf("the change was made, but its key is recorded %s: %s", en.State, en.Error)
					}
				}
			}
			fig.add("hostile_requests", len(srv.Requests()))
		})
	}
}
