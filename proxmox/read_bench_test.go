package proxmox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// The read benchmarks measure what the client adds to one read on top of
// what any Go program pays for it. A TLS test server answers with fixed
// bytes, so the server costs next to nothing and the client's own work
// shows; the client and a bare net/http + encoding/json reader share that
// server and the same *http.Client (one transport), one goroutine, and
// alternate request by request so both see the same machine load.
//
// Run them with
//
//	go test -run '^$' -bench 'ReadRatio$' -benchtime 3000x -count 5 ./proxmox/
//
// and read the client/bare column (the median of the five runs).

// readConfigAnswer is GET /nodes/{node}/qemu/{vmid}/config of a cloud-init
// VM on PVE 8: the recorded PVE 7 answer in testdata/v01-qemu-config-pve7.json
// with the options a typical production VM adds (a second NIC and disk,
// startup order, tags, a multi-line description, ...), 36 options and the
// digest, typed as Proxmox types them (integers as numbers, cpulimit as a
// string).
const readConfigAnswer = `{"data":{"cores":2,"name":"web-01","bootdisk":"scsi0",` +
	`"net0":"virtio=BC:24:11:2E:C5:4A,bridge=vmbr0,firewall=1",` +
	`"net1":"virtio=BC:24:11:7D:03:9E,bridge=vmbr1,tag=20",` +
	`"vga":"serial0","ipconfig0":"gw=192.168.0.1,ip=192.168.0.154/24","ipconfig1":"ip=10.20.0.154/24",` +
	`"memory":2048,"balloon":1024,"smbios1":"uuid=5059a66c-23d5-461b-a3cb-004eb3124718",` +
	`"boot":"order=scsi0;ide2;net0","scsihw":"virtio-scsi-single","serial0":"socket",` +
	`"ide2":"local-lvm:vm-505-cloudinit,media=cdrom,size=4M","meta":"creation-qemu=8.1.5,ctime=1706012345",` +
	`"cipassword":"**********","agent":"enabled=1,fstrim_cloned_disks=1",` +
	`"vmgenid":"d4443aa6-b66f-45b2-97ff-6dee78eade44","ciuser":"root","cpulimit":"0.4","cpu":"x86-64-v2-AES",` +
	`"digest":"aa9ce37c4df320889d4ab5382a2947efa4c1d815",` +
	`"scsi0":"local-lvm:vm-505-disk-0,discard=on,iothread=1,size=60G,ssd=1",` +
	`"scsi1":"local-lvm:vm-505-disk-1,backup=0,discard=on,iothread=1,size=200G,ssd=1",` +
	`"ostype":"l26","onboot":1,"numa":0,"sockets":1,"tablet":0,"startup":"order=2,up=30",` +
	`"hotplug":"disk,network,usb","nameserver":"192.168.0.1","searchdomain":"example.com","tags":"prod;web",` +
	`"sshkeys":"ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIJ0rV5VqkqE1lYy0m8b3a1T0d3Xx7m1Qx3a1b2c3d4e5%20ops%40example.com%0A",` +
	`"description":"Web front end for the shop.\n\nOwner: ops team <ops@example.com>\nTicket: OPS-1234\n"}}`

// readPendingAnswer is GET .../pending of the same VM, with a pending
// change of cores and memory, as vm_pending writes it: one row per option,
// digest included.
func readPendingAnswer(tb testing.TB) string {
	var env struct {
		Data map[string]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(readConfigAnswer), &env); err != nil {
		tb.Fatal(err)
	}
	keys := make([]string, 0, len(env.Data))
	for k := range env.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	pending := map[string]json.RawMessage{"cores": json.RawMessage(`4`), "memory": json.RawMessage(`4096`)}
	rows := make([]map[string]json.RawMessage, 0, len(keys))
	for _, k := range keys {
		row := map[string]json.RawMessage{"key": json.RawMessage(strconv.Quote(k)), "value": env.Data[k]}
		if p, ok := pending[k]; ok {
			row["pending"] = p
		}
		rows = append(rows, row)
	}
	b, err := json.Marshal(map[string]any{"data": rows})
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

type readEnv struct {
	c    *proxmox.Client
	bare *bareClient
	ref  proxmox.Ref
}

func newReadEnv(b *testing.B) *readEnv {
	b.Helper()
	const node, vmid = "pve1", 505
	config, pending := []byte(readConfigAnswer), []byte(readPendingAnswer(b))
	answer := func(body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json;charset=UTF-8")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
		}
	}
	mux := http.NewServeMux()
	prefix := fmt.Sprintf("/api2/json/nodes/%s/qemu/%d", node, vmid)
	mux.Handle("GET "+prefix+"/config", answer(config))
	mux.Handle("GET "+prefix+"/pending", answer(pending))
	srv := httptest.NewTLSServer(mux)
	b.Cleanup(srv.Close)
	auth := "PVEAPIToken=" + proxmox.TestTokenID + "=" + proxmox.TestSecret
	c, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(proxmox.TestTokenID, proxmox.TestSecret))
	if err != nil {
		b.Fatal(err)
	}
	return &readEnv{
		c:    c,
		bare: &bareClient{hc: srv.Client(), base: srv.URL + "/api2/json", auth: auth},
		ref:  proxmox.Ref{Node: node, Type: proxmox.QEMU, VMID: vmid},
	}
}

func (env *readEnv) clientConfig(ctx context.Context) error {
	cfg, err := env.c.Config(ctx, env.ref)
	if err == nil && (cfg.Values["cores"] != "2" || len(cfg.Values) != 36) {
		err = fmt.Errorf("cores = %q, %d values", cfg.Values["cores"], len(cfg.Values))
	}
	return err
}

func (env *readEnv) bareConfig(ctx context.Context) error {
	data, err := env.bare.config(ctx, env.ref)
	if err == nil && (data["cores"] != 2.0 || len(data) != 37) {
		err = fmt.Errorf("cores = %v, %d members", data["cores"], len(data))
	}
	return err
}

func (env *readEnv) clientPending(ctx context.Context) error {
	pc, err := env.c.PendingConfig(ctx, env.ref)
	if err == nil && (pc.Config.Values["cores"] != "4" || len(pc.Items) != 36) {
		err = fmt.Errorf("cores = %q, %d items", pc.Config.Values["cores"], len(pc.Items))
	}
	return err
}

// barePending is what a program without this package would write for the
// pending endpoint: the rows as maps.
func (env *readEnv) barePending(ctx context.Context) error {
	var out struct {
		Data []map[string]any `json:"data"`
	}
	err := env.bare.do(ctx, http.MethodGet, "/nodes/"+env.ref.Node+"/qemu/"+strconv.Itoa(env.ref.VMID)+"/pending", &out)
	if err == nil && len(out.Data) != 37 {
		err = fmt.Errorf("%d rows", len(out.Data))
	}
	return err
}

// BenchmarkRead runs each reader alone, for profiles:
//
//	go test -run '^$' -bench 'Read$/client/config' -benchtime 5000x -cpuprofile cpu.out ./proxmox/
func BenchmarkRead(b *testing.B) {
	ctx := context.Background()
	env := newReadEnv(b)
	for _, r := range []struct {
		name string
		fn   func(context.Context) error
	}{
		{"client/config", env.clientConfig}, {"bare/config", env.bareConfig},
		{"client/pending", env.clientPending}, {"bare/pending", env.barePending},
	} {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := r.fn(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadRatio alternates the client's read and the bare one, and
// reports each one's median latency and their ratio. Medians, because on a
// shared machine a few requests stall for milliseconds and would swamp a
// mean.
func BenchmarkReadRatio(b *testing.B) {
	ctx := context.Background()
	env := newReadEnv(b)
	for _, r := range []struct {
		name           string
		client, bareFn func(context.Context) error
	}{
		{"config", env.clientConfig, env.bareConfig},
		{"pending", env.clientPending, env.barePending},
	} {
		b.Run(r.name, func(b *testing.B) {
			var clientNS, bareNS []time.Duration
			for i := 0; b.Loop(); i++ {
				// Alternate which goes first, so neither always
				// finds the connection just returned to the pool.
				first, second, fd, sd := r.client, r.bareFn, &clientNS, &bareNS
				if i%2 == 1 {
					first, second, fd, sd = r.bareFn, r.client, &bareNS, &clientNS
				}
				start := time.Now()
				if err := first(ctx); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				if err := second(ctx); err != nil {
					b.Fatal(err)
				}
				*fd = append(*fd, mid.Sub(start))
				*sd = append(*sd, time.Since(mid))
			}
			c, r := float64(median(clientNS)), float64(median(bareNS))
			b.ReportMetric(c, "client-ns/op")
			b.ReportMetric(r, "bare-ns/op")
			if r > 0 {
				b.ReportMetric(c/r, "client/bare")
			}
		})
	}
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}
