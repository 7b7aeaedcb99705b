package proxmoxtest

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// leakedGoroutines lists goroutines that belong to a server or to HTTP
// connections (server or client side) and are not the test's own.
func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "testing.tRunner") || strings.Contains(g, "leakedGoroutines") {
			continue
		}
		if strings.Contains(g, "guestward/proxmox/proxmoxtest.") ||
			strings.Contains(g, "net/http.(*conn).serve") ||
			strings.Contains(g, "net/http.(*persistConn)") ||
			strings.Contains(g, "net/http.(*Server).Serve") {
			out = append(out, g)
		}
	}
	return out
}

func TestNoGoroutineLeaksAfterClose(t *testing.T) {
	for i := 0; i < 3; i++ {
		s, err := NewServer(WithTaskDuration(time.Hour)) // timers pending at Close
		if err != nil {
			t.Fatal(err)
		}
		r := mustAdd(t, s, vm100(""))
		do(t, s, "POST", guestPath(r)+"/status/start", nil)
		do(t, s, "GET", guestPath(r)+"/config", nil) // leaves an idle keep-alive connection
		arrived := make(chan struct{})
		s.Inject(Fault{Path: "/version", Before: func() { close(arrived) }, Wait: make(chan struct{})})
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = tryDo(s, "GET", "/version", nil) // blocked in the gate until Close
		}()
		<-arrived
		s.Close()
		<-done
		s.Close() // idempotent
	}
	// Close has waited for every goroutine the server started: none may be
	// left now, without any waiting.
	for _, g := range leakedGoroutines() {
		if strings.Contains(g, "guestward/proxmox/proxmoxtest.") {
			t.Fatalf("server goroutine alive after Close:\n%s", g)
		}
	}
	// net/http's per-connection goroutines (the server's after the close
	// hook ran, the client's after it reads EOF) exit on their own; wait
	// for that with a bound, as goleak does.
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaked := leakedGoroutines()
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Close:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClosedServerRefusesWork(t *testing.T) {
	s, err := NewServer()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.AddGuest(vm100("")); err == nil {
		t.Fatal("AddGuest after Close succeeded")
	}
	if _, err := tryDo(s, "GET", "/version", nil); err == nil {
		t.Fatal("request after Close succeeded")
	}
}
