// Package demo builds the demonstration fleet the example programs share:
// a fake Proxmox VE cluster (package proxmoxtest) running in-process on
// loopback, holding a dozen guests in realistic, drifted states, and the
// desired state that goes with them.
//
// The guests are made the way a real cluster's guests come to be: created
// from a config file, then changed through the API, so that the fake server
// rewrites what was written exactly as Proxmox does (a generated MAC, an
// allocated disk, sorted and lower-cased tags, a trimmed description,
// space-separated name servers). The desired state declares the values as a
// person writes them, so those rewrites must not count as drift.
//
// The fleet, guest by guest (13 on the cluster, 13 declared):
//
//	pve1/qemu/100 web-1        in sync, although every declared value was rewritten by Proxmox
//	pve1/qemu/101 web-2        stopped with 2 GiB; declared running with 4 GiB: set_config, then start
//	pve2/qemu/102 web-3        running; tags and description changed by hand, its 32G disk declared
//	                           48G: set_config, then resize scsi0 32G -> 48G (grown in place, never
//	                           a new allocation)
//	pve1/qemu/103 db-1         locked by a backup: skipped, whatever it declares
//	pve2/qemu/104 build-1      cores changed while running, pending a restart: skipped
//	pve2/qemu/105 ci-runner-1  running; declared stopped: stop
//	pve1/qemu/106 legacy-app   an installer ISO still attached (ide2), declared absent: set_config
//	pve1/qemu/107 (template)   tags only, in sync
//	pve1/qemu/150 scratch      not declared: left alone
//	pve1/lxc/200  dns-1        in sync, although Proxmox rewrote net0, nameserver, rootfs and description
//	pve1/lxc/201  proxy-1      memory and tags drifted: set_config (synchronous for containers)
//	pve2/lxc/202  cache-1      stopped with 1 core; declared running with 2: set_config, then start
//	pve2/lxc/203  mail-old     running and starting on boot; declared stopped, onboot off: stop, then set_config
//	pve2/lxc/204  vpn-1        declared, but no such guest: skipped (guestward does not create guests)
//
// A Fleet is for demonstrations and tests of the examples; it is not part of
// guestward's API.
package demo

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/proxmox/proxmoxtest"
)

// desiredJSON is the desired state of the fleet, in the format of
// reconcile.FileProvider. A string, so that nobody can modify it.
//
//go:embed desired.json
var desiredJSON string

// DesiredJSON returns the fleet's desired state, in the format of
// reconcile.FileProvider. The caller owns the returned slice.
func DesiredJSON() []byte { return []byte(desiredJSON) }

// DefaultTaskDuration is how long each Proxmox task of the demo runs: long
// enough for a person to see actions in progress, short enough for the
// whole demo to take a few seconds.
const DefaultTaskDuration = 400 * time.Millisecond

// Options configures Start. The zero value is the demo as the README shows
// it. It is a plain value.
type Options struct {
	// Version is the Proxmox VE release the fake server emulates, such as
	// "7.4" or "8.4.1"; "" means proxmoxtest.DefaultVersion.
	Version string
	// TaskDuration is how long each task stays running; 0 means
	// DefaultTaskDuration.
	TaskDuration time.Duration
}

// Fleet is a running fake cluster holding the demo guests. Its methods are
// safe for concurrent use; Close it when done.
type Fleet struct {
	// Server is the fake cluster, for inspection (Server.Guest,
	// Server.TaskCount) and fault injection.
	Server *proxmoxtest.Server
}

// Start starts the fake cluster and creates the demo guests.
func Start(opts Options) (*Fleet, error) {
	if opts.TaskDuration < 0 {
		return nil, fmt.Errorf("demo: negative task duration %v", opts.TaskDuration)
	}
	if opts.TaskDuration == 0 {
		opts.TaskDuration = DefaultTaskDuration
	}
	srvOpts := []proxmoxtest.Option{
		proxmoxtest.WithNodes("pve1", "pve2"),
		proxmoxtest.WithSeed(2025), // the same MACs and UUIDs on every run
		proxmoxtest.WithTaskDuration(opts.TaskDuration),
	}
	if opts.Version != "" {
		srvOpts = append(srvOpts, proxmoxtest.WithVersion(opts.Version))
	}
	srv, err := proxmoxtest.NewServer(srvOpts...)
	if err != nil {
		return nil, fmt.Errorf("demo: starting the fake Proxmox VE cluster: %w", err)
	}
	f := &Fleet{Server: srv}
	for _, g := range guests() {
		if err := f.add(g); err != nil {
			srv.Close()
			return nil, fmt.Errorf("demo: creating %s: %w", g.ref, err)
		}
	}
	return f, nil
}

// Close stops the fake cluster. It is idempotent.
func (f *Fleet) Close() { f.Server.Close() }

// URL returns the API's base URL, "https://127.0.0.1:<port>".
func (f *Fleet) URL() string { return f.Server.URL }

// Version returns the Proxmox VE release the fake server emulates.
func (f *Fleet) Version() string { return f.Server.Version() }

// Nodes returns the names of the cluster's nodes.
func (f *Fleet) Nodes() []string { return f.Server.Nodes() }

// Guests returns how many guests the cluster holds.
func (f *Fleet) Guests() int { return len(f.Server.Guests()) }

// Credentials returns what a client needs to reach the cluster as any
// Proxmox VE cluster is reached: the API token and the SHA-256 fingerprint
// of the server's self-signed certificate.
func (f *Fleet) Credentials() (tokenID, secret, fingerprint string) {
	id, secret := f.Server.APIToken()
	return id, secret, f.Server.Fingerprint()
}

// Client returns a Proxmox client for the cluster, built the way a program
// builds one for a real cluster: token authentication and a pinned
// certificate fingerprint. opts are added after those.
func (f *Fleet) Client(opts ...proxmox.Option) (*proxmox.Client, error) {
	id, secret, fp := f.Credentials()
	all := append([]proxmox.Option{proxmox.WithAPIToken(id, secret), proxmox.WithFingerprint(fp)}, opts...)
	return proxmox.New(f.URL(), all...)
}

// WriteDesired writes the fleet's desired state to dir/desired.json and
// returns the file's path.
func WriteDesired(dir string) (string, error) {
	path := filepath.Join(dir, "desired.json")
	if err := os.WriteFile(path, DesiredJSON(), 0o600); err != nil {
		return "", fmt.Errorf("demo: writing the desired state: %w", err)
	}
	return path, nil
}

// guest is how one demo guest comes to be.
type guest struct {
	ref proxmox.Ref
	// file is the config file it was created with (the form Proxmox
	// stores); api are the changes later written through the API, which
	// the server rewrites as Proxmox does.
	file map[string]string
	api  map[string]string
	// running, lock: its final power state and lock. whileRunning are
	// changes made after it started, which wait for a restart.
	running      bool
	lock         string
	template     bool
	whileRunning map[string]string
}

func (f *Fleet) add(g guest) error {
	srv := f.Server
	if err := srv.AddGuest(proxmoxtest.GuestSpec{
		Node: g.ref.Node, Type: g.ref.Type, VMID: g.ref.VMID, Config: g.file, Template: g.template,
	}); err != nil {
		return err
	}
	if len(g.api) > 0 {
		if err := srv.UpdateConfig(g.ref, g.api, nil); err != nil {
			return err
		}
	}
	if g.running {
		if err := srv.SetRunning(g.ref, true); err != nil {
			return err
		}
	}
	if len(g.whileRunning) > 0 {
		if err := srv.UpdateConfig(g.ref, g.whileRunning, nil); err != nil {
			return err
		}
	}
	if g.lock != "" {
		if err := srv.SetLock(g.ref, g.lock); err != nil {
			return err
		}
	}
	return nil
}

func qemu(node string, vmid int) proxmox.Ref {
	return proxmox.Ref{Node: node, Type: proxmox.QEMU, VMID: vmid}
}

func lxc(node string, vmid int) proxmox.Ref {
	return proxmox.Ref{Node: node, Type: proxmox.LXC, VMID: vmid}
}

// vm is the config file of a freshly created Linux VM.
func vm(name string, cores, memory int) map[string]string {
	return map[string]string{
		"name": name, "ostype": "l26", "scsihw": "virtio-scsi-single",
		"cores": fmt.Sprint(cores), "memory": fmt.Sprint(memory),
	}
}

// ct is the config file of a freshly created Debian container.
func ct(vmid int, hostname string, cores, memory int) map[string]string {
	return map[string]string{
		"hostname": hostname, "ostype": "debian", "arch": "amd64",
		"cores": fmt.Sprint(cores), "memory": fmt.Sprint(memory), "swap": "512",
		"rootfs": fmt.Sprintf("local-lvm:vm-%d-disk-0,size=8G", vmid),
	}
}

// webAPI is what an operator wrote through the API for a web VM, before
// Proxmox rewrote it.
func webAPI() map[string]string {
	return map[string]string{
		"net0":        "virtio,bridge=vmbr0", // Proxmox generates the MAC
		"scsi0":       "local-lvm:32",        // Proxmox allocates vm-<id>-disk-0 with size=32G
		"tags":        "web,Prod",            // stored as "prod;web"
		"description": "Public web server\n\n",
		"onboot":      "1",
	}
}

func guests() []guest {
	web3 := webAPI()
	web3["tags"] = "web"
	web3["description"] = "Public web server (staging copy)"
	return []guest{
		{ref: qemu("pve1", 100), file: vm("web-1", 2, 4096), api: webAPI(), running: true},
		{ref: qemu("pve1", 101), file: vm("web-2", 2, 2048), api: webAPI()},
		{ref: qemu("pve2", 102), file: vm("web-3", 2, 4096), api: web3, running: true},
		{ref: qemu("pve1", 103), file: vm("db-1", 4, 8192),
			api: map[string]string{"scsi0": "local-lvm:100", "net0": "virtio,bridge=vmbr0"}, running: true, lock: "backup"},
		{ref: qemu("pve2", 104), file: vm("build-1", 4, 8192), running: true,
			whileRunning: map[string]string{"cores": "8"}},
		{ref: qemu("pve2", 105), file: vm("ci-runner-1", 2, 2048), running: true},
		{ref: qemu("pve1", 106), file: vm("legacy-app", 1, 1024),
			api: map[string]string{"ide2": "local:iso/debian-12.7.0-amd64-netinst.iso,media=cdrom"}},
		{ref: qemu("pve1", 107), file: vm("tmpl-debian12", 1, 1024), template: true,
			api: map[string]string{"tags": "debian12,template"}},
		{ref: qemu("pve1", 150), file: vm("scratch", 1, 512), running: true},

		{ref: lxc("pve1", 200), file: ct(200, "dns-1", 1, 512), running: true, api: map[string]string{
			"net0":        "name=eth0,bridge=vmbr0,ip=dhcp", // Proxmox adds hwaddr and type=veth
			"nameserver":  "1.1.1.1,9.9.9.9",                // stored space-separated
			"description": "Resolver for the lab",           // read back with a trailing newline
		}},
		{ref: lxc("pve1", 201), file: ct(201, "proxy-1", 1, 512), running: true,
			api: map[string]string{"tags": "proxy"}},
		{ref: lxc("pve2", 202), file: ct(202, "cache-1", 1, 512)},
		{ref: lxc("pve2", 203), file: ct(203, "mail-old", 1, 512), running: true,
			api: map[string]string{"onboot": "1"}},
	}
}
