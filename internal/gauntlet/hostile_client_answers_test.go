package gauntlet

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

// The answers below attack the client itself rather than the engine's
// reading of them: answers that echo the credentials back (from a proxy
// that quotes the request, or a task whose exit status does), answers far
// larger than the client's 64 MiB bound (declared, or compressed), and a
// task list that never ends. None may leak a secret into an error, the
// journal or a log line; none may cost memory beyond the bound, or time
// until the caller's context ends.

func jsonAnswer(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	_, _ = io.WriteString(w, body)
}

// quote renders s as a JSON string.
func quote(s string) string { return strconv.Quote(s) }

// gzipZeroMembers is n gzip members of 1 MiB of zeros each: a small body
// that decodes to n MiB.
func gzipZeroMembers(n int) []byte {
	var one bytes.Buffer
	zw := gzip.NewWriter(&one)
	_, _ = zw.Write(make([]byte, 1<<20))
	_ = zw.Close()
	return bytes.Repeat(one.Bytes(), n)
}

type echoCase struct {
	name  string
	rules func(secret string) []*hostileRule
	shot  *reconcile.OneShot // nil: a pass
	// aborts: the pass must abort.
	aborts bool
	want   []string
	// heap bounds the bytes the client may allocate for the lie (0: not
	// measured).
	heap uint64
	// taskLists bounds the task list pages read (0: not checked).
	taskLists int
}

func echoCases() []echoCase {
	g100 := "/nodes/pve1/qemu/100"
	start := &reconcile.OneShot{Key: "start-100", Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}, Kind: reconcile.ActionStart}
	huge := gzipZeroMembers(100)
	return []echoCase{
		{name: "start answers the Authorization header", shot: start,
			rules: func(string) []*hostileRule {
				return []*hostileRule{{method: "POST", path: g100 + "/status/start", after: true, answer: func(w http.ResponseWriter, r *http.Request) {
					jsonAnswer(w, `{"data":`+quote(r.Header.Get("Authorization"))+`}`)
				}}}
			}},
		{name: "task fails quoting the Authorization header", shot: start, want: []string{"task"},
			rules: func(secret string) []*hostileRule {
				return []*hostileRule{{method: "GET", path: "/nodes/*/tasks/*/status", answer: func(w http.ResponseWriter, r *http.Request) {
					jsonAnswer(w, `{"data":{"status":"stopped","exitstatus":`+quote("bad header: Authorization: "+r.Header.Get("Authorization"))+`}}`)
				}}}
			}},
		{name: "status quotes the secret as a number", want: []string{"reading status"},
			rules: func(secret string) []*hostileRule {
				return []*hostileRule{{method: "GET", path: g100 + "/status/current", answer: func(w http.ResponseWriter, r *http.Request) {
					jsonAnswer(w, `{"data":{"status":"running","uptime":`+quote(secret)+`}}`)
				}}}
			}},
		{name: "list declares 100 MB", aborts: true, want: []string{"listing guests", "larger than"}, heap: 16 << 20,
			rules: func(string) []*hostileRule {
				return []*hostileRule{{method: "GET", path: "/cluster/resources", answer: func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json;charset=UTF-8")
					w.Header().Set("Content-Length", "100000000")
					w.WriteHeader(200)
					_, _ = io.WriteString(w, `{"data":[`)
				}}}
			}},
		{name: "list is a 100 MiB gzip bomb", aborts: true, want: []string{"listing guests", "larger than"}, heap: 96 << 20,
			rules: func(string) []*hostileRule {
				return []*hostileRule{{method: "GET", path: "/cluster/resources", answer: func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json;charset=UTF-8")
					w.Header().Set("Content-Encoding", "gzip")
					w.Header().Set("Content-Length", strconv.Itoa(len(huge)))
					_, _ = w.Write(huge)
				}}}
			}},
		{name: "lost answer meets an endless task list", shot: start, want: []string{"task list"}, taskLists: 21,
			rules: func(string) []*hostileRule {
				return []*hostileRule{
					{method: "POST", path: g100 + "/status/start", after: true, answer: func(w http.ResponseWriter, r *http.Request) {
						jsonAnswer(w, `{"data":12345}`)
					}},
					{method: "GET", path: "/nodes/pve1/tasks", answer: func(w http.ResponseWriter, r *http.Request) {
						q := r.URL.Query()
						from, _ := strconv.Atoi(q.Get("start"))
						limit, _ := strconv.Atoi(q.Get("limit"))
						since, _ := strconv.ParseInt(q.Get("since"), 10, 64)
						var page []string
						for i := from; i < from+limit; i++ {
							// Someone else's tasks, each one new, never an end.
							upid := fmt.Sprintf("UPID:pve1:%08X:00000001:%08X:%s:100:someone@pve:", i+1, since+1, q.Get("typefilter"))
							page = append(page, fmt.Sprintf(`{"upid":%q,"status":"OK","endtime":%d}`, upid, since+2))
						}
						jsonAnswer(w, `{"data":[`+strings.Join(page, ",")+`]}`)
					}},
				}
			}},
	}
}

// TestHostileClientAnswers runs the engine against answers built to
// attack the client, and checks that no secret reaches an error, the
// journal or a log line, that refusing a huge answer costs about the
// client's bound, that an endless task list is given up after a bounded
// number of pages, and that the truth, once told, is found.
func TestHostileClientAnswers(t *testing.T) {
	fig := newFigures(t)
	for _, c := range echoCases() {
		t.Run(c.name, func(t *testing.T) {
			fig.add("hostile_client_cases", 1)
			srv := batteryCluster(t)
			id, secret := srv.APIToken()
			imp := &hostile{srv: srv}
			ts := httptest.NewUnstartedServer(imp)
			ts.Config.ErrorLog = log.New(io.Discard, "", 0)
			ts.StartTLS()
			t.Cleanup(ts.Close)
			var logs bytes.Buffer
			var logMu sync.Mutex
			lg := slog.New(slog.NewTextHandler(&lockedWriter{mu: &logMu, w: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
			client, err := proxmox.New(ts.URL,
				proxmox.WithHTTPClient(ts.Client()),
				proxmox.WithAPIToken(id, secret),
				proxmox.WithLogger(lg),
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
				Proxmox: client, Journal: jr, Provider: prov, Logger: lg,
				RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond, SettleDelay: time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.Queue().Close(ctx) })

			rules := c.rules(secret)
			imp.set(rules...)
			var errText string
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			if c.shot != nil {
				res, err := e.Apply(ctx, *c.shot)
				errText = res.Error
				if err != nil {
					errText = err.Error()
				}
			} else {
				rep, err := e.ReconcileOnce(ctx)
				switch {
				case c.aborts && err == nil:
					t.Fatalf("the pass was not aborted:\n%s", rep)
				case c.aborts:
					errText = err.Error()
				case err != nil:
					t.Fatalf("pass: %v", err)
				default:
					g := rep.Guests[0]
					errText = g.Detail
					for _, a := range g.Actions {
						errText += " " + a.Error
					}
				}
			}
			runtime.ReadMemStats(&after)
			if n := after.TotalAlloc - before.TotalAlloc; c.heap > 0 && n > c.heap {
				t.Errorf("the lie cost %d MiB of allocations, want at most %d MiB", n>>20, c.heap>>20)
			}
			for _, w := range c.want {
				if !strings.Contains(errText, w) {
					t.Errorf("error %q does not mention %q", errText, w)
				}
			}
			for _, r := range rules {
				if r.hits == 0 {
					t.Errorf("rule %s %s never applied", r.method, r.path)
				}
				if c.taskLists > 0 && r.path == "/nodes/pve1/tasks" && r.hits > c.taskLists {
					t.Errorf("read %d task list pages, want at most %d", r.hits, c.taskLists)
				}
			}

			// The truth again: whatever the lie left open is resolved,
			// and a one-shot's start ran once.
			imp.set()
			if err := srv.WaitIdle(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := e.Recover(ctx); err != nil {
				t.Fatalf("recovery after the lie: %v", err)
			}
			if c.shot != nil {
				if n := srv.TaskCount(c.shot.Ref, "qmstart"); n != 1 {
					t.Errorf("the one-shot start ran %d times", n)
				}
			}

			// No secret anywhere: the error, the journal, the logs.
			ops, err := jr.Ops(ctx)
			if err != nil {
				t.Fatal(err)
			}
			texts := []string{errText}
			for _, op := range ops {
				texts = append(texts, op.Error, op.UPID)
			}
			logMu.Lock()
			texts = append(texts, logs.String())
			logMu.Unlock()
			for _, s := range texts {
				for i := 0; i+8 <= len(secret); i++ {
					if strings.Contains(s, secret[i:i+8]) {
						t.Errorf("part of the token secret leaked: %q", s)
						break
					}
				}
			}
			fig.add("hostile_client_requests", len(srv.Requests()))
		})
	}
}
