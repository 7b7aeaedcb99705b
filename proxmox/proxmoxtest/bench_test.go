package proxmoxtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/guestward/guestward/proxmox"
)

// benchServer is a server with eight stopped VMs (100..107) and instant
// tasks.
func benchServer(b *testing.B) *Server {
	b.Helper()
	s, err := NewServer(WithTaskDuration(0), WithRequestLogLimit(1024))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	for i := 0; i < 8; i++ {
		spec := vm100("")
		spec.VMID = 100 + i
		spec.Config = map[string]string{"name": fmt.Sprintf("vm%d", i), "cores": "2", "memory": "2048",
			"net0": "virtio=BC:24:11:0A:0B:0C,bridge=vmbr0", "scsi0": fmt.Sprintf("local-lvm:vm-%d-disk-0,size=32G", 100+i)}
		if err := s.AddGuest(spec); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

func benchGet(b *testing.B, s *Server, auth, url string) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", auth)
	resp, err := s.Client().Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("GET %s: %s", url, resp.Status)
	}
}

// parallel8 runs fn(worker, i) b.N times spread over 8 goroutines.
func parallel8(b *testing.B, fn func(worker, i int)) {
	var wg sync.WaitGroup
	per := (b.N + 7) / 8
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per && w*per+i < b.N; i++ {
				fn(w, i)
			}
		}(w)
	}
	wg.Wait()
}

// BenchmarkGetConfig measures GET .../config over HTTPS against the fake:
// the number the client's overhead is compared with.
func BenchmarkGetConfig(b *testing.B) {
	s := benchServer(b)
	id, secret := s.APIToken()
	auth := "PVEAPIToken=" + id + "=" + secret
	url := s.URL + APIPath + "/nodes/pve/qemu/100/config"
	b.Run("seq", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			benchGet(b, s, auth, url)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	})
	b.Run("par8", func(b *testing.B) {
		b.ReportAllocs()
		parallel8(b, func(w, _ int) {
			benchGet(b, s, auth, fmt.Sprintf("%s%s/nodes/pve/qemu/%d/config", s.URL, APIPath, 100+w))
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	})
}

// BenchmarkServeHTTPGetConfig is the server's own cost per GET config,
// without TLS or sockets.
func BenchmarkServeHTTPGetConfig(b *testing.B) {
	s := benchServer(b)
	id, secret := s.APIToken()
	auth := "PVEAPIToken=" + id + "=" + secret
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest("GET", "/api2/json/nodes/pve/qemu/100/config", nil)
		req.Header.Set("Authorization", auth)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

// startToDone starts a VM, polls its task until it stops, then stops the
// VM again (also to task done) so the next iteration can start it.
func startToDone(b *testing.B, s *Server, auth string, vmid int) {
	for _, action := range []string{"start", "stop"} {
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s%s/nodes/pve/qemu/%d/status/%s", s.URL, APIPath, vmid, action), strings.NewReader(""))
		req.Header.Set("Authorization", auth)
		resp, err := s.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var env struct{ Data string }
		err = json.NewDecoder(resp.Body).Decode(&env)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("%s: %s %v", action, resp.Status, err)
		}
		for {
			req, _ := http.NewRequest("GET", s.URL+APIPath+"/nodes/pve/tasks/"+env.Data+"/status", nil)
			req.Header.Set("Authorization", auth)
			resp, err := s.Client().Do(req)
			if err != nil {
				b.Fatal(err)
			}
			var st struct {
				Data struct{ Status, Exitstatus string }
			}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err != nil {
				b.Fatal(err)
			}
			if st.Data.Status == "stopped" {
				if st.Data.Exitstatus != "OK" {
					b.Fatalf("%s task: %s", action, st.Data.Exitstatus)
				}
				break
			}
		}
	}
}

// BenchmarkStartToTaskDone measures a start and a stop, each polled to task
// completion, with instant tasks: the server's task machinery plus the
// HTTP round trips.
func BenchmarkStartToTaskDone(b *testing.B) {
	s := benchServer(b)
	id, secret := s.APIToken()
	auth := "PVEAPIToken=" + id + "=" + secret
	b.Run("seq", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			startToDone(b, s, auth, 100)
		}
	})
	b.Run("par8", func(b *testing.B) {
		b.ReportAllocs()
		parallel8(b, func(w, _ int) { startToDone(b, s, auth, 100+w) })
	})
	if n := s.TaskCount(proxmox.Ref{}, "qmstart"); n == 0 {
		b.Fatal("no tasks ran")
	}
}
