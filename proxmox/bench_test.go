package proxmox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

// The benchmarks run the client against the fake server, next to a bare
// net/http + encoding/json client doing the same requests on the same
// server, in the same run. The *Ratio benchmarks interleave the two so
// both see the same machine load, and report client/bare.

const benchGuests = 8

// benchConfig is a realistic QEMU config, about the size of the recorded
// one in testdata/v01-qemu-config-pve7.json.
func benchConfig(vmid int) map[string]string {
	return map[string]string{
		"name": fmt.Sprintf("bench-%d", vmid), "cores": "2", "sockets": "1", "memory": "2048", "cpu": "x86-64-v2-AES",
		"net0":   fmt.Sprintf("virtio=BC:24:11:00:%02X:%02X,bridge=vmbr0,firewall=1", vmid/256, vmid%256),
		"scsihw": "virtio-scsi-pci", "ostype": "l26", "onboot": "1", "agent": "enabled=1,fstrim_cloned_disks=1",
		"serial0": "socket", "vga": "serial0", "tags": "bench;prod", "description": "benchmark guest\nsecond line",
		"ipconfig0": "gw=192.168.0.1,ip=192.168.0.154/24", "ciuser": "root", "cpulimit": "0.4", "numa": "0",
		"smbios1": "uuid=5059a66c-23d5-461b-a3cb-004eb3124718", "boot": "order=net0",
	}
}

type benchEnv struct {
	srv  *proxmoxtest.Server
	c    *proxmox.Client
	bare *bareClient
	refs []proxmox.Ref
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	srv := proxmoxtest.Start(b, proxmoxtest.WithTaskDuration(0), proxmoxtest.WithRequestLogLimit(0))
	id, secret := srv.APIToken()
	// Both clients poll tasks at the same fixed 1 ms interval.
	c, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(id, secret),
		proxmox.WithTaskPolling(time.Millisecond, time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	env := &benchEnv{srv: srv, c: c, bare: &bareClient{hc: srv.Client(), base: srv.URL + proxmoxtest.APIPath, auth: "PVEAPIToken=" + id + "=" + secret}}
	for i := range benchGuests {
		spec := proxmoxtest.GuestSpec{Type: proxmox.QEMU, VMID: 100 + i, Config: benchConfig(100 + i)}
		if err := srv.AddGuest(spec); err != nil {
			b.Fatal(err)
		}
		env.refs = append(env.refs, proxmox.Ref{Node: srv.Nodes()[0], Type: proxmox.QEMU, VMID: 100 + i})
	}
	return env
}

// bareClient is what a program without this package would write: one
// request, check the status, decode the envelope.
type bareClient struct {
	hc   *http.Client
	base string
	auth string
}

func (bc *bareClient) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, bc.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", bc.auth)
	resp, err := bc.hc.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return json.Unmarshal(body, out)
}

func (bc *bareClient) config(ctx context.Context, ref proxmox.Ref) (map[string]any, error) {
	var env struct {
		Data map[string]any `json:"data"`
	}
	err := bc.do(ctx, http.MethodGet, "/nodes/"+ref.Node+"/qemu/"+strconv.Itoa(ref.VMID)+"/config", &env)
	return env.Data, err
}

func (bc *bareClient) startAndWait(ctx context.Context, ref proxmox.Ref) error {
	var upid struct {
		Data string `json:"data"`
	}
	if err := bc.do(ctx, http.MethodPost, "/nodes/"+ref.Node+"/qemu/"+strconv.Itoa(ref.VMID)+"/status/start", &upid); err != nil {
		return err
	}
	for {
		var st struct {
			Data struct {
				Status     string `json:"status"`
				ExitStatus string `json:"exitstatus"`
			} `json:"data"`
		}
		if err := bc.do(ctx, http.MethodGet, "/nodes/"+ref.Node+"/tasks/"+upid.Data+"/status", &st); err != nil {
			return err
		}
		if st.Data.Status == "stopped" {
			if st.Data.ExitStatus != "OK" {
				return fmt.Errorf("task failed: %s", st.Data.ExitStatus)
			}
			return nil
		}
		time.Sleep(time.Millisecond)
	}
}

func (env *benchEnv) clientConfig(ctx context.Context, ref proxmox.Ref) error {
	cfg, err := env.c.Config(ctx, ref)
	if err == nil && cfg.Values["cores"] != "2" {
		err = fmt.Errorf("cores = %q", cfg.Values["cores"])
	}
	return err
}

func (env *benchEnv) bareConfig(ctx context.Context, ref proxmox.Ref) error {
	data, err := env.bare.config(ctx, ref)
	if err == nil && fmt.Sprint(data["cores"]) != "2" {
		err = fmt.Errorf("cores = %v", data["cores"])
	}
	return err
}

func (env *benchEnv) clientStart(ctx context.Context, ref proxmox.Ref) error {
	upid, err := env.c.Start(ctx, ref)
	if err != nil {
		return err
	}
	_, err = env.c.WaitTask(ctx, upid)
	return err
}

// stopped resets a guest between start iterations, behind the API's back
// (an in-process call, the same cost for both clients).
func (env *benchEnv) stopped(ref proxmox.Ref) error { return env.srv.SetRunning(ref, false) }

type op func(ctx context.Context, ref proxmox.Ref) error

// run performs b.N operations with the given number of workers, worker w
// using guest w.
func run(b *testing.B, env *benchEnv, workers int, fn func(w int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := fn(w); err != nil {
					once.Do(func() { b.Error(err) })
					return
				}
			}
		}()
	}
	wg.Wait()
}

var modes = []struct {
	name    string
	workers int
}{{"seq", 1}, {"par8", 8}}

func BenchmarkGetConfig(b *testing.B) {
	ctx := context.Background()
	env := newBenchEnv(b)
	for _, impl := range []struct {
		name string
		fn   op
	}{{"client", env.clientConfig}, {"bare", env.bareConfig}} {
		for _, m := range modes {
			b.Run(impl.name+"/"+m.name, func(b *testing.B) {
				b.ReportAllocs()
				run(b, env, m.workers, func(w int) error { return impl.fn(ctx, env.refs[w]) })
			})
		}
	}
}

func BenchmarkStartToTaskDone(b *testing.B) {
	ctx := context.Background()
	env := newBenchEnv(b)
	for _, impl := range []struct {
		name string
		fn   op
	}{{"client", env.clientStart}, {"bare", env.bare.startAndWait}} {
		for _, m := range modes {
			b.Run(impl.name+"/"+m.name, func(b *testing.B) {
				b.ReportAllocs()
				run(b, env, m.workers, func(w int) error {
					if err := impl.fn(ctx, env.refs[w]); err != nil {
						return err
					}
					return env.stopped(env.refs[w])
				})
			})
		}
	}
}

// ratio interleaves client and bare operations and reports each one's
// mean latency and their ratio.
func ratio(b *testing.B, env *benchEnv, workers int, client, bare op, reset func(proxmox.Ref) error) {
	ctx := context.Background()
	var clientNS, bareNS atomic.Int64
	timed := func(sum *atomic.Int64, fn op, ref proxmox.Ref) error {
		start := time.Now()
		err := fn(ctx, ref)
		sum.Add(int64(time.Since(start)))
		if err == nil && reset != nil {
			err = reset(ref)
		}
		return err
	}
	run(b, env, workers, func(w int) error {
		if err := timed(&clientNS, client, env.refs[w]); err != nil {
			return err
		}
		return timed(&bareNS, bare, env.refs[w])
	})
	c, r := float64(clientNS.Load())/float64(b.N), float64(bareNS.Load())/float64(b.N)
	b.ReportMetric(c, "client-ns/op")
	b.ReportMetric(r, "bare-ns/op")
	if r > 0 {
		b.ReportMetric(c/r, "client/bare")
	}
}

func BenchmarkGetConfigRatio(b *testing.B) {
	env := newBenchEnv(b)
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) { ratio(b, env, m.workers, env.clientConfig, env.bareConfig, nil) })
	}
}

func BenchmarkStartToTaskDoneRatio(b *testing.B) {
	env := newBenchEnv(b)
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) { ratio(b, env, m.workers, env.clientStart, env.bare.startAndWait, env.stopped) })
	}
}
