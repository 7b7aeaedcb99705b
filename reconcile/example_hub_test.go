package reconcile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
	"github.com/guestward/guestward/reconcile"
)

// hub is the whole of a hub that takes desired state over HTTP, guest by
// guest (PUT /guests with one guest of the desired-state file's format,
// DELETE /guests/{vmid}), reconciles each change at once with a targeted
// pass, runs a full pass every interval, and stops gracefully when ctx
// ends. It returns the handler to serve and a function that waits for the
// stop.
func hub(ctx context.Context, pve reconcile.Proxmox, jnl journal.Journal, onReport func(reconcile.Report)) (http.Handler, func() error, error) {
	desired, err := reconcile.NewMapProvider(reconcile.ValidateOptions{})
	if err != nil {
		return nil, nil, err
	}
	engine, err := reconcile.NewEngine(reconcile.Config{Proxmox: pve, Journal: jnl, Provider: desired, OnReport: onReport})
	if err != nil {
		return nil, nil, err
	}
	desired.Notify(func(refs ...proxmox.Ref) { engine.Trigger(refs...) })

	mux := http.NewServeMux()
	mux.HandleFunc("PUT /guests", func(w http.ResponseWriter, r *http.Request) {
		var d reconcile.Desired // read as strictly as the desired-state file
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&d); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		} else if err := desired.Upsert(d); err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		}
	})
	mux.HandleFunc("DELETE /guests/{vmid}", func(w http.ResponseWriter, r *http.Request) {
		vmid, err := strconv.Atoi(r.PathValue("vmid"))
		if err != nil || desired.Delete(vmid) == 0 {
			http.NotFound(w, r)
		}
	})

	done := make(chan error, 1)
	go func() { done <- engine.Run(context.WithoutCancel(ctx)) }()
	stopped := func() error {
		<-ctx.Done()
		stop, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return engine.Shutdown(stop) // nothing new is sent; what was sent finishes
	}
	return mux, stopped, nil
}

// A hub that takes desired state over HTTP guest by guest: a guest put to
// it is reconciled at once by a targeted pass, and the hub stops gracefully.
// The hub itself is the function hub above, 37 lines; the rest sets up a
// fake cluster and plays the client.
func Example_hub() {
	srv, err := proxmoxtest.NewServer(proxmoxtest.WithNodes("pve1"))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	if err := srv.AddGuest(proxmoxtest.GuestSpec{Node: "pve1", Type: proxmox.QEMU, VMID: 100,
		Config: map[string]string{"name": "web", "memory": "2048"}}); err != nil {
		log.Fatal(err)
	}
	client, err := proxmox.New(srv.URL, proxmox.WithHTTPClient(srv.Client()), proxmox.WithAPIToken(srv.APIToken()))
	if err != nil {
		log.Fatal(err)
	}

	reports := make(chan reconcile.Report, 16)
	ctx, stop := context.WithCancel(context.Background())
	h, stopped, err := hub(ctx, client, journal.NewMemory(), func(r reconcile.Report) { reports <- r })
	if err != nil {
		log.Fatal(err)
	}
	api := httptest.NewServer(h)
	defer api.Close()

	req, _ := http.NewRequest(http.MethodPut, api.URL+"/guests",
		strings.NewReader(`{"node": "pve1", "type": "qemu", "vmid": 100, "power": "running", "config": {"memory": 4096}}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println("PUT /guests:", resp.StatusCode)
	for r := range reports { // the first pass may find no guest declared yet
		if len(r.Guests) > 0 {
			fmt.Print(r.Guests[0].Ref, ": ", r.Guests[0].Outcome, "\n")
			break
		}
	}
	stop()
	fmt.Println("stopped:", stopped())
	// Output:
	// PUT /guests: 200
	// pve1/qemu/100: changed
	// stopped: <nil>
}
