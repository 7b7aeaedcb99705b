package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestward/guestward/examples/internal/cli"
	"github.com/guestward/guestward/examples/internal/output"
	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/reconcile"
)

// The JSON output carries the engine's progress: "progress" lines with the
// schema, each phase of the pass, done never above total, and the end of
// the pass before its report. In text, progress goes to stderr.
func TestProgressLines(t *testing.T) {
	c := newCluster(t)
	code, out, errOut := agentRun(t, c.env, c.secret, "-once", "-output", "json")
	if code != cli.ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	recs := records(t, out)
	prog := recs["progress"]
	if len(prog) == 0 {
		t.Fatalf("no progress lines:\n%s", out)
	}
	var phases []string
	for _, p := range prog {
		if p["schema"] != float64(output.SchemaVersion) || p["pass"] != 1.0 {
			t.Fatalf("progress line %v", p)
		}
		done, ok1 := p["done"].(float64)
		total, ok2 := p["total"].(float64)
		if _, ok := p["elapsed_seconds"].(float64); !ok || !ok1 || !ok2 || done > total {
			t.Fatalf("progress line %v", p)
		}
		if ph := p["phase"].(string); len(phases) == 0 || phases[len(phases)-1] != ph {
			phases = append(phases, ph)
		}
	}
	// The agent recovers before its first pass: the pass has nothing to
	// recover.
	if got, want := strings.Join(phases, ","), "list,observe,plan,act,done"; got != want {
		t.Errorf("phases %s, want %s", got, want)
	}
	if last := prog[len(prog)-1]; last["phase"] != "done" || last["total"] != 2.0 || last["error"] != nil {
		t.Errorf("last progress line %v", last)
	}
	lines := strings.Split(out, "\n")
	lastProgress, report := -1, -1
	for i, l := range lines {
		switch {
		case strings.Contains(l, `"type":"progress"`):
			lastProgress = i
		case strings.Contains(l, `"type":"report"`):
			report = i
		}
	}
	if lastProgress > report {
		t.Errorf("progress after the report (lines %d and %d)", lastProgress, report)
	}

	code, out, errOut = agentRun(t, c.env, c.secret, "-once")
	if code != cli.ExitOK {
		t.Fatalf("text: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "pass 1: observe 2/2") || !strings.Contains(errOut, "pass 1: done, 2 guests") {
		t.Errorf("text progress on stderr:\n%s", errOut)
	}
	if strings.Contains(out, "pass 1: observe") {
		t.Errorf("text progress on stdout:\n%s", out)
	}
}

// lineFeed is a stdout that hands each line to the test as it is written.
type lineFeed struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
}

func (f *lineFeed) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf.Write(p)
	for {
		line, err := f.buf.ReadString('\n')
		if err != nil {
			f.buf.WriteString(line) // incomplete: keep it
			return len(p), nil
		}
		f.lines <- line
	}
}

// await returns the next record of type typ, skipping others.
func (f *lineFeed) await(t *testing.T, typ string) map[string]any {
	t.Helper()
	// A bound for a test that would otherwise hang, not a synchronization.
	timeout := time.After(time.Minute)
	for {
		select {
		case line := <-f.lines:
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("output line is not JSON: %q", line)
			}
			if m["type"] == typ {
				return m
			}
		case <-timeout:
			t.Fatalf("no %s record within a minute", typ)
		}
	}
}

// holdJournal holds InFlight, which recovery reads first, until released.
type holdJournal struct {
	*journal.MemoryJournal
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (j *holdJournal) InFlight(ctx context.Context) ([]journal.Entry, error) {
	j.once.Do(func() { close(j.entered) })
	select {
	case <-j.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return j.MemoryJournal.InFlight(ctx)
}

func getHealth(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("health body %q: %v", body, err)
	}
	return res.StatusCode, m
}

// -health-listen serves the engine's health from before recovery: 503
// while recovery is held, 200 once it has completed.
func TestHealthListen(t *testing.T) {
	c := newCluster(t)
	env := cli.MapEnv(c.env)
	fs, s := newFlags(io.Discard)
	must(t, cli.Parse(fs, []string{"-health-listen", "127.0.0.1:0", "-interval", "1h", "-output", "json"}))
	must(t, cli.ApplyEnv(fs, env, bindings()))
	must(t, s.validate(fs))
	logger := slog.New(slog.DiscardHandler)
	client, err := s.conn.Client(env, logger)
	must(t, err)
	t.Cleanup(client.CloseIdleConnections)
	provider, err := reconcile.NewFileProvider(s.desired)
	must(t, err)
	jr := &holdJournal{MemoryJournal: journal.NewMemory(), entered: make(chan struct{}), release: make(chan struct{})}
	feed := &lineFeed{lines: make(chan string, 1024)}
	out := output.New(feed, output.JSON)

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- serve(ctx, s, nil, client, jr, provider, logger, out, startInfo{version: c.srv.Version(), backend: "memory", declared: 2}, io.Discard)
	}()
	defer func() {
		stop()
		if code := <-done; code != cli.ExitOK {
			t.Errorf("exit %d", code)
		}
	}()
	h := feed.await(t, "health")
	url, _ := h["url"].(string)
	if h["schema"] != float64(output.SchemaVersion) || !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, HealthPath) {
		t.Fatalf("health record %v", h)
	}
	<-jr.entered
	code, body := getHealth(t, url)
	if code != http.StatusServiceUnavailable || body["ready"] != false || body["status"].(map[string]any)["recovered"] != false {
		t.Fatalf("health during recovery: %d %v", code, body)
	}
	close(jr.release)
	feed.await(t, "recovery")
	code, body = getHealth(t, url)
	if code != http.StatusOK || body["ready"] != true {
		t.Fatalf("health after recovery: %d %v", code, body)
	}
	// The first pass: its end is a progress line, then the report.
	for {
		p := feed.await(t, "progress")
		if p["phase"] == "done" {
			break
		}
	}
	feed.await(t, "report")
	code, body = getHealth(t, url)
	if lp, _ := body["status"].(map[string]any)["last_pass"].(map[string]any); code != http.StatusOK || lp["pass"] != 1.0 {
		t.Errorf("health after the first pass: %d %v", code, body)
	}
	res, err := http.Post(url, "text/plain", nil)
	must(t, err)
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", res.StatusCode)
	}
}
