package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape runs the example with -once and parses what it printed.
func scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"-once", "-journal", t.TempDir() + "/ops.journal"}, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(&out)
	if err != nil {
		t.Fatalf("the scrape is not in the Prometheus text format: %v", err)
	}
	return fams
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// value is a sample's value: a counter's or gauge's value, a histogram's
// count.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// find sums the values of the family's samples whose labels include want.
func find(fams map[string]*dto.MetricFamily, family string, want map[string]string) (float64, bool) {
	f, ok := fams[family]
	if !ok {
		return 0, false
	}
	var total float64
	found := false
next:
	for _, m := range f.GetMetric() {
		l := labels(m)
		for k, v := range want {
			if l[k] != v {
				continue next
			}
		}
		total += value(m)
		found = true
	}
	return total, found
}

func TestOnceServesTheMetrics(t *testing.T) {
	fams := scrape(t)
	tests := []struct {
		family string
		labels map[string]string
		want   float64 // at least this much
		why    string
	}{
		{"guestward_actions_total", map[string]string{"kind": "set_config", "outcome": "succeeded"}, 1, "the drifted memory was set"},
		{"guestward_actions_total", map[string]string{"kind": "start", "outcome": "succeeded"}, 1, "the stopped guest was started"},
		{"guestward_guests", map[string]string{"outcome": "in_sync"}, 3, "after the second pass, three guests are in sync"},
		{"guestward_guests", map[string]string{"outcome": "skipped", "skip_reason": "locked"}, 1, "the locked guest is skipped with its reason"},
		{"guestward_pass_duration_seconds", nil, 2, "two passes"},
		{"guestward_pass_phase_duration_seconds", map[string]string{"phase": "observe"}, 2, "each pass observed"},
		{"guestward_api_request_duration_seconds", map[string]string{"url_template": "/cluster/resources", "http_response_status_code": "200"}, 2, "each pass listed the guests"},
		{"guestward_api_request_duration_seconds", map[string]string{"node": "pve1"}, 1, "requests carry their node"},
		{"guestward_journal_append_duration_seconds", map[string]string{"state": "started"}, 2, "each operation's intent was journaled"},
		{"guestward_journal_append_size_bytes", map[string]string{"state": "succeeded"}, 2, "and its outcome, with a size"},
		{"guestward_task_wait_seconds", map[string]string{"kind": "start"}, 1, "the start waited for its task"},
		{"guestward_queue_wait_seconds", map[string]string{"outcome": "ran"}, 2, "each acting guest's job went through the queue"},
	}
	for _, tt := range tests {
		got, ok := find(fams, tt.family, tt.labels)
		if !ok || got < tt.want {
			t.Errorf("%s%v = %v (present %v), want at least %v (%s)", tt.family, tt.labels, got, ok, tt.want, tt.why)
		}
	}
	for _, fam := range []string{"guestward_operations_in_flight", "guestward_queue_depth"} {
		if got, ok := find(fams, fam, nil); !ok || got != 0 {
			t.Errorf("%s = %v (present %v), want 0 once the passes ended", fam, got, ok)
		}
	}
	// Nothing identifies a guest or a task in a label.
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "UPID") || strings.Contains(l.GetValue(), "/100/") || l.GetName() == "vmid" {
					t.Errorf("%s has a per-guest label %s=%q", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
}

func TestFlagsRefused(t *testing.T) {
	for _, args := range [][]string{{"-interval", "0s"}, {"extra"}, {"-no-such-flag"}} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, &out, &errOut); err == nil {
			t.Errorf("run %q: no error", args)
		}
	}
}

// Serving: /metrics answers in the text format while the engine runs, and
// the program stops cleanly when its context ends.
func TestServes(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-interval", "1h"}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the banner: %v", err)
	}
	go io.Copy(io.Discard, pr)
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[1], "http://") {
		t.Fatalf("banner %q", line)
	}
	url := strings.TrimSuffix(f[1], ";")
	// The first pass runs at once; poll until it has been reported.
	for {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("GET /metrics: %s %s", resp.Status, resp.Header.Get("Content-Type"))
		}
		if strings.Contains(string(body), "guestward_pass_duration_seconds_count 1") {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run ended before its first pass was reported: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after its context ended: %v", err)
	}
}
