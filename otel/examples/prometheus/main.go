// Command prometheus runs a guestward engine against a fake Proxmox VE
// cluster in this process and serves what it measures in the Prometheus text
// format, through the OpenTelemetry SDK and its Prometheus exporter. It shows
// the wiring a program needs: one gwotel.Instruments, and its hooks in the
// Proxmox client, the queue, the journal and the engine's Config.
//
//	go run ./examples/prometheus              # serve http://127.0.0.1:9464/metrics
//	go run ./examples/prometheus -once        # two passes, print the scrape, exit
//
// The cluster holds four guests: one whose memory drifted, one stopped that
// should run, one in sync and one locked by a backup. The first pass changes
// the first two and skips the locked one; later passes find nothing to do.
//
// Flags: -listen (address to serve /metrics on, default 127.0.0.1:9464),
// -interval (between passes when serving, default 10s), -once, -journal
// (journal file; default a file in a temporary directory, removed at exit).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/guestward/guestward/journal"
	gwotel "github.com/guestward/guestward/otel"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/queue"
	"github.com/guestward/guestward/reconcile"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "prometheus:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("prometheus", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9464", "address to serve /metrics on")
	interval := fs.Duration("interval", 10*time.Second, "time between passes when serving")
	once := fs.Bool("once", false, "run two passes, print the scrape to stdout and exit")
	journalPath := fs.String("journal", "", "journal file (default: one in a temporary directory, removed at exit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *interval <= 0 {
		return fmt.Errorf("-interval must be positive, not %v", *interval)
	}

	// The metrics pipeline: an SDK MeterProvider whose reader is the
	// Prometheus exporter, registered in a registry of our own.
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		return fmt.Errorf("making the Prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp),
		sdkmetric.WithResource(resource.NewSchemaless(attribute.String("service.name", "guestward-example"))))
	defer mp.Shutdown(context.WithoutCancel(ctx))
	// The operation gauges read the engine's Status, which also counts
	// what a crash left unresolved; eng is set before anything collects.
	var eng *reconcile.Engine
	ins, err := gwotel.New(mp, gwotel.WithStatus(func() (inFlight, unresolved int) {
		if eng == nil {
			return 0, 0
		}
		s := eng.Status()
		return s.InFlight, s.Unresolved
	}))
	if err != nil {
		return err
	}
	defer ins.Close()

	srv, err := startCluster()
	if err != nil {
		return err
	}
	defer srv.Close()

	// Every seam of the core, wired to the instruments.
	id, secret := srv.APIToken()
	client, err := proxmox.New(srv.URL,
		proxmox.WithAPIToken(id, secret),
		proxmox.WithFingerprint(srv.Fingerprint()),
		proxmox.WithTaskPolling(10*time.Millisecond, 100*time.Millisecond),
		ins.ProxmoxOption(),
	)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	q := queue.New[int](queue.WithMaxConcurrent(4), ins.QueueOption())
	defer q.Close(context.WithoutCancel(ctx))
	fj, cleanup, err := openJournal(*journalPath)
	if err != nil {
		return err
	}
	defer cleanup()
	prov, err := reconcile.NewStaticProvider(desired())
	if err != nil {
		return err
	}
	cfg := reconcile.Config{
		Proxmox:  client,
		Journal:  ins.Journal(fj),
		Provider: prov,
		Queue:    q,
		Interval: *interval,
	}
	ins.Wire(&cfg)
	eng, err = reconcile.NewEngine(cfg)
	if err != nil {
		return err
	}
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})

	if *once {
		for range 2 {
			rep, err := eng.ReconcileOnce(ctx)
			if err != nil {
				return fmt.Errorf("pass: %w", err)
			}
			// ReconcileOnce returns its report; only Run calls OnReport.
			ins.OnReport(rep)
		}
		rec := httptest.NewRecorder()
		metrics.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK {
			return fmt.Errorf("scrape: status %d: %s", rec.Code, rec.Body)
		}
		_, err := io.Copy(stdout, rec.Body)
		return err
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	fmt.Fprintf(stdout, "serving http://%s/metrics; a pass every %v; interrupt to stop\n", ln.Addr(), *interval)

	runErr := eng.Run(ctx)
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	if errors.Is(runErr, context.Canceled) {
		return nil
	}
	return runErr
}

// startCluster starts the fake cluster with its four guests.
func startCluster() (*proxmoxtest.Server, error) {
	srv, err := proxmoxtest.NewServer(
		proxmoxtest.WithNodes("pve1", "pve2"),
		proxmoxtest.WithSeed(2025),
		proxmoxtest.WithTaskDuration(20*time.Millisecond),
	)
	if err != nil {
		return nil, fmt.Errorf("starting the fake cluster: %w", err)
	}
	for _, g := range []proxmoxtest.GuestSpec{
		{Node: "pve1", Type: proxmox.QEMU, VMID: 100, Running: true, Config: map[string]string{"name": "web", "memory": "2048"}},
		{Node: "pve1", Type: proxmox.QEMU, VMID: 101, Config: map[string]string{"name": "db", "memory": "4096"}},
		{Node: "pve2", Type: proxmox.LXC, VMID: 200, Running: true, Config: map[string]string{"hostname": "cache", "memory": "512"}},
		{Node: "pve2", Type: proxmox.QEMU, VMID: 102, Lock: "backup", Config: map[string]string{"name": "batch", "memory": "1024"}},
	} {
		if err := srv.AddGuest(g); err != nil {
			srv.Close()
			return nil, fmt.Errorf("adding guest %d: %w", g.VMID, err)
		}
	}
	return srv, nil
}

func desired() []reconcile.Desired {
	return []reconcile.Desired{
		{Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}, Power: reconcile.PowerRunning, Config: map[string]string{"memory": "4096"}},
		{Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 101}, Power: reconcile.PowerRunning},
		{Ref: proxmox.Ref{Node: "pve2", Type: proxmox.LXC, VMID: 200}, Power: reconcile.PowerRunning, Config: map[string]string{"memory": "512"}},
		{Ref: proxmox.Ref{Node: "pve2", Type: proxmox.QEMU, VMID: 102}, Config: map[string]string{"memory": "2048"}},
	}
}

// openJournal opens the journal file at path, or in a new temporary
// directory when path is empty; cleanup closes it and removes that
// directory.
func openJournal(path string) (j *journal.FileJournal, cleanup func(), err error) {
	dir := ""
	if path == "" {
		if dir, err = os.MkdirTemp("", "guestward-metrics-"); err != nil {
			return nil, nil, err
		}
		path = filepath.Join(dir, "ops.journal")
	}
	if j, err = journal.OpenFile(path); err != nil {
		if dir != "" {
			os.RemoveAll(dir)
		}
		return nil, nil, err
	}
	return j, func() {
		j.Close()
		if dir != "" {
			os.RemoveAll(dir)
		}
	}, nil
}
