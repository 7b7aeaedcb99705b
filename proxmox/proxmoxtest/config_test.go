package proxmoxtest

import (
	"crypto/sha1"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"

	"github.com/guestward/guestward/proxmox"
)

var macGenRE = regexp.MustCompile(`^BC:24:11:[0-9A-F]{2}:[0-9A-F]{2}:[0-9A-F]{2}$`)

// put writes config synchronously and fails the test on an error answer.
func put(t *testing.T, s *Server, r proxmox.Ref, kv ...string) {
	t.Helper()
	rp := do(t, s, "PUT", guestPath(r)+"/config", form(kv...))
	if rp.Code != 200 {
		t.Fatalf("PUT %v: %d %q %s", kv, rp.Code, rp.Status, rp.Raw)
	}
}

func getConfig(t *testing.T, s *Server, r proxmox.Ref, query string) map[string]any {
	t.Helper()
	rp := do(t, s, "GET", guestPath(r)+"/config"+query, nil)
	if rp.Code != 200 {
		t.Fatalf("GET config: %d %q", rp.Code, rp.Status)
	}
	return rp.dataMap(t)
}

func TestQEMUNetRewriting(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	put(t, s, r, "net1", "bridge=vmbr1,model=virtio,firewall=true", "net2", "e1000,bridge=vmbr0,tag=20",
		"net3", "virtio=aa:bb:cc:dd:ee:ff,bridge=vmbr0", "net4", "bridge=vmbr0,macaddr=02:00:00:00:00:01,model=vmxnet3,link_down=0")
	c := mustGuest(t, s, r).Config
	mac1 := strings.TrimPrefix(strings.SplitN(c["net1"], ",", 2)[0], "virtio=")
	if !macGenRE.MatchString(mac1) || c["net1"] != "virtio="+mac1+",bridge=vmbr1,firewall=1" {
		t.Errorf("net1 = %q", c["net1"])
	}
	mac2 := strings.TrimPrefix(strings.SplitN(c["net2"], ",", 2)[0], "e1000=")
	if !macGenRE.MatchString(mac2) || c["net2"] != "e1000="+mac2+",bridge=vmbr0,tag=20" || mac1 == mac2 {
		t.Errorf("net2 = %q", c["net2"])
	}
	if c["net3"] != "virtio=aa:bb:cc:dd:ee:ff,bridge=vmbr0" {
		t.Errorf("a given MAC is kept verbatim, lower case included: %q", c["net3"])
	}
	if c["net4"] != "vmxnet3=02:00:00:00:00:01,bridge=vmbr0,link_down=0" {
		t.Errorf("net4 = %q", c["net4"])
	}
}

func TestMACPrefixByVersion(t *testing.T) {
	s7 := Start(t, WithVersion(PVE74))
	r := mustAdd(t, s7, vm100(""))
	put(t, s7, r, "net1", "virtio,bridge=vmbr0")
	mac := strings.TrimPrefix(strings.SplitN(mustGuest(t, s7, r).Config["net1"], ",", 2)[0], "virtio=")
	if strings.HasPrefix(mac, "BC:24:11") {
		t.Errorf("PVE 7 has no default prefix: %s", mac)
	}
	var first byte
	if _, err := hex.Decode([]byte{0}, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := hex.DecodeString(mac[:2])
	first = b[0]
	if first&1 != 0 || first&2 == 0 {
		t.Errorf("generated MAC %s is not unicast and locally administered", mac)
	}
	s := Start(t, WithMACPrefix("02:AB"))
	r = mustAdd(t, s, vm100(""))
	put(t, s, r, "net1", "virtio,bridge=vmbr0")
	if c := mustGuest(t, s, r).Config["net1"]; !strings.HasPrefix(c, "virtio=02:AB:") {
		t.Errorf("prefix not applied: %s", c)
	}
}

func TestDeterministicMACsWithSeed(t *testing.T) {
	gen := func() string {
		s := Start(t, WithSeed(42))
		r := mustAdd(t, s, vm100(""))
		put(t, s, r, "net1", "virtio,bridge=vmbr0")
		return mustGuest(t, s, r).Config["net1"]
	}
	if a, b := gen(), gen(); a != b {
		t.Fatalf("same seed, different MACs: %s vs %s", a, b)
	}
}

func TestQEMUDiskAllocation(t *testing.T) {
	s := Start(t, WithStorage("local", StorageDir), WithStorage("local-lvm", StorageLVMThin), WithStorage("tank", StorageZFS))
	r := mustAdd(t, s, vm100(""))
	put(t, s, r, "scsi1", "local-lvm:4,cache=writeback,format=raw,iothread=on",
		"scsi2", "local:1.5,format=qcow2", "virtio0", "tank:2",
		"ide2", "local-lvm:cloudinit", "efidisk0", "local-lvm:1,efitype=4m,pre-enrolled-keys=1",
		"sata0", "local-lvm:vm-100-disk-0,size=1024G,ssd=1")
	c := mustGuest(t, s, r).Config
	for k, want := range map[string]string{
		// Options are handled in key order here (Perl: hash order), so
		// efidisk0 allocates before scsi1.
		"scsi1":    "local-lvm:vm-100-disk-2,cache=writeback,iothread=1,size=4G",
		"scsi2":    "local:100/vm-100-disk-0.qcow2,size=1536M",
		"virtio0":  "tank:vm-100-disk-0,size=2G",
		"ide2":     "local-lvm:vm-100-cloudinit,media=cdrom",
		"efidisk0": "local-lvm:vm-100-disk-1,efitype=4m,pre-enrolled-keys=1,size=4M",
		"sata0":    "local-lvm:vm-100-disk-0,size=1T,ssd=1",
	} {
		if c[k] != want {
			t.Errorf("%s = %q, want %q", k, c[k], want)
		}
	}
	// Unknown storage is refused before any task or write.
	rp := do(t, s, "PUT", guestPath(r)+"/config", form("scsi3", "nope:8"))
	if rp.Code != 500 || rp.Status != "storage 'nope' does not exist" {
		t.Fatalf("unknown storage: %d %q", rp.Code, rp.Status)
	}
	rp = do(t, s, "PUT", guestPath(r)+"/config", form("scsi3", "8"))
	if rp.Code != 500 || rp.Status != "no storage ID specified (and no default storage)" {
		t.Fatalf("no storage: %d %q", rp.Code, rp.Status)
	}
}

func TestReplacedAndDeletedDisksBecomeUnused(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	put(t, s, r, "scsi1", "local-lvm:4")
	put(t, s, r, "scsi1", "local-lvm:8") // replaces vm-100-disk-1
	c := mustGuest(t, s, r).Config
	if c["scsi1"] != "local-lvm:vm-100-disk-2,size=8G" || c["unused0"] != "local-lvm:vm-100-disk-1" {
		t.Fatalf("after replace: scsi1=%q unused0=%q", c["scsi1"], c["unused0"])
	}
	put(t, s, r, "delete", "scsi0")
	c = mustGuest(t, s, r).Config
	if _, ok := c["scsi0"]; ok || c["unused1"] != "local-lvm:vm-100-disk-0" {
		t.Fatalf("after delete: %v", c)
	}
	if c["boot"] != "order=net0" {
		t.Errorf("deleted disk not removed from the boot order: %q", c["boot"])
	}
	put(t, s, r, "delete", "unused0")
	put(t, s, r, "scsi2", "local-lvm:1") // disk-1 is free again
	if got := mustGuest(t, s, r).Config["scsi2"]; got != "local-lvm:vm-100-disk-1,size=1G" {
		t.Fatalf("freed volume not reused: %q", got)
	}
	// Re-attaching an unused volume drops its unusedN entry.
	put(t, s, r, "scsi3", "local-lvm:vm-100-disk-0,size=32G")
	if _, ok := mustGuest(t, s, r).Config["unused1"]; ok {
		t.Fatal("unused1 kept after its volume was attached again")
	}
}

func TestTagsDescriptionAndOtherRewrites(t *testing.T) {
	s := Start(t)
	vm := mustAdd(t, s, vm100(""))
	ct := mustAdd(t, s, ct200(""))
	put(t, s, vm, "tags", "Web, db;web  Prod", "description", "Web server\n\n  ", "cpuunits", "20000", "vmgenid", "1",
		"boot", "order=net0;scsi0")
	c := getConfig(t, s, vm, "")
	if c["tags"] != "db;prod;web" {
		t.Errorf("tags %q", c["tags"])
	}
	if c["description"] != "Web server" {
		t.Errorf("QEMU description %q", c["description"])
	}
	if c["cpuunits"] != float64(10000) {
		t.Errorf("cpuunits %v", c["cpuunits"])
	}
	if ok, _ := regexp.MatchString(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, c["vmgenid"].(string)); !ok {
		t.Errorf("vmgenid %q", c["vmgenid"])
	}
	put(t, s, ct, "tags", "b,A", "description", "Web server", "nameserver", "1.1.1.1,8.8.8.8;9.9.9.9",
		"searchdomain", "a.example b.example")
	c = getConfig(t, s, ct, "")
	if c["tags"] != "a;b" || c["description"] != "Web server\n" || c["nameserver"] != "1.1.1.1 8.8.8.8 9.9.9.9" ||
		c["searchdomain"] != "a.example b.example" {
		t.Errorf("lxc config %v", c)
	}
	put(t, s, ct, "description", "two\n\nlines\n\n\n")
	if c := getConfig(t, s, ct, ""); c["description"] != "two\n\nlines\n" {
		t.Errorf("lxc description %q", c["description"])
	}
	// Characters the config file escapes come back decoded.
	put(t, s, vm, "description", "Owner: ops (50% load) – Grüße")
	if c := getConfig(t, s, vm, ""); c["description"] != "Owner: ops (50% load) – Grüße" {
		t.Errorf("description %q", c["description"])
	}
	if f := mustGuest(t, s, vm).File; !strings.HasPrefix(f, "#Owner%3A ops (50%25 load) %E2%80%93 Gr%C3%BC%C3%9Fe\n") {
		t.Errorf("file %q", f)
	}
	// An invalid boot order fails inside the worker (sync for PUT).
	rp := do(t, s, "PUT", guestPath(vm)+"/config", form("boot", "order=scsi9"))
	if rp.Code != 500 || rp.Status != "invalid bootorder: device 'scsi9' does not exist'" {
		t.Errorf("bad boot order: %d %q", rp.Code, rp.Status)
	}
}

func TestLXCNetAndMountPoints(t *testing.T) {
	s := Start(t, WithStorage("local-lvm", StorageLVMThin), WithStorage("tank", StorageZFS), WithStorage("local", StorageDir))
	r := mustAdd(t, s, ct200(""))
	put(t, s, r, "net1", "ip=10.0.0.5/24,name=eth1,bridge=vmbr1,firewall=yes", "mp0", "local-lvm:10,mp=/data,backup=1",
		"mp1", "tank:2.5,mp=/zfs", "mp2", "local:1,mp=/dir")
	c := mustGuest(t, s, r).Config
	hw := regexp.MustCompile(`hwaddr=([0-9A-F:]{17})`).FindStringSubmatch(c["net1"])
	if hw == nil || c["net1"] != "name=eth1,bridge=vmbr1,firewall=1,hwaddr="+hw[1]+",ip=10.0.0.5/24,type=veth" {
		t.Errorf("net1 = %q", c["net1"])
	}
	for k, want := range map[string]string{
		"mp0": "local-lvm:vm-200-disk-1,mp=/data,backup=1,size=10G",
		"mp1": "tank:subvol-200-disk-0,mp=/zfs,size=2560M",
		"mp2": "local:200/vm-200-disk-0.raw,mp=/dir,size=1G",
	} {
		if c[k] != want {
			t.Errorf("%s = %q, want %q", k, c[k], want)
		}
	}
	rp := do(t, s, "PUT", guestPath(r)+"/config", form("delete", "memory"))
	if rp.Code != 500 || rp.Status != "unable to delete required option 'memory'" {
		t.Errorf("delete memory: %d %q", rp.Code, rp.Status)
	}
	rp = do(t, s, "PUT", guestPath(r)+"/config", form("mp3", "nope:1,mp=/x"))
	if rp.Code != 500 || rp.Status != "storage 'nope' does not exist" {
		t.Errorf("mp on unknown storage: %d %q", rp.Code, rp.Status)
	}
	rp = do(t, s, "PUT", guestPath(r)+"/config", form("net2", "bridge=vmbr0"))
	if rp.Code != 400 || rp.errorsMap()["net2"] != "invalid format - format error\nnet2.name: property is missing and it is not optional\n" {
		t.Errorf("net without name: %d %s", rp.Code, rp.Raw)
	}
}

func TestRunningQEMUPendingRules(t *testing.T) {
	s := Start(t)
	spec := vm100("")
	spec.Running = true
	r := mustAdd(t, s, spec)
	put(t, s, r, "cores", "4", "onboot", "1", "net1", "virtio,bridge=vmbr1", "name", "web2", "cpu", "host",
		"cpulimit", "1.5", "memory", "4096")
	st := mustGuest(t, s, r)
	for _, k := range []string{"onboot", "net1", "name", "cpulimit"} {
		if _, ok := st.Config[k]; !ok {
			t.Errorf("%s should be applied at once on a running VM", k)
		}
	}
	for _, k := range []string{"cores", "cpu", "memory"} {
		if _, ok := st.Pending[k]; !ok {
			t.Errorf("%s should stay pending on a running VM (pending %v)", k, st.Pending)
		}
	}
	merged := getConfig(t, s, r, "")
	current := getConfig(t, s, r, "?current=1")
	if merged["cores"] != float64(4) || current["cores"] != float64(2) {
		t.Errorf("cores merged %v current %v", merged["cores"], current["cores"])
	}
	if merged["digest"] != current["digest"] || merged["digest"] != st.Digest {
		t.Errorf("digest differs between views")
	}
	// Deleting on a running VM: a NIC hot-unplugs, scsihw's deletion stays
	// pending, and deleting a value that was only pending just drops it.
	put(t, s, r, "delete", "net1,scsihw,cpu")
	st = mustGuest(t, s, r)
	if _, ok := st.Config["net1"]; ok {
		t.Errorf("net1 should be unplugged at once")
	}
	if strings.Join(st.PendingDelete, ",") != "scsihw" {
		t.Errorf("pending delete %v", st.PendingDelete)
	}
	if _, ok := st.Pending["cpu"]; ok {
		t.Errorf("pending cpu survived its deletion")
	}
	if c := getConfig(t, s, r, ""); c["scsihw"] != nil || c["cpu"] != nil {
		t.Errorf("merged config still shows deleted options: %v", c)
	}
	if c := getConfig(t, s, r, "?current=1"); c["scsihw"] != "virtio-scsi-pci" {
		t.Errorf("current config lost scsihw: %v", c)
	}
	// With hotplug=0, a NIC change waits for a restart too.
	put(t, s, r, "hotplug", "0")
	s.SetRunning(r, false)
	s.SetRunning(r, true) // applies hotplug=0 (and everything else pending)
	put(t, s, r, "net2", "virtio,bridge=vmbr2")
	if _, ok := mustGuest(t, s, r).Pending["net2"]; !ok {
		t.Errorf("net2 should be pending with hotplug=0")
	}
	// Revert drops a pending change.
	put(t, s, r, "revert", "net2")
	if st := mustGuest(t, s, r); len(st.Pending) != 0 || len(st.PendingDelete) != 0 {
		t.Errorf("pending after revert: %v %v", st.Pending, st.PendingDelete)
	}
}

func TestPendingEndpoint(t *testing.T) {
	s := Start(t)
	spec := vm100("")
	spec.Running = true
	spec.Config["cpu"] = "host"
	r := mustAdd(t, s, spec)
	put(t, s, r, "cores", "4", "sockets", "2", "delete", "cpu")
	rp := do(t, s, "GET", guestPath(r)+"/pending", nil)
	items := map[string]map[string]any{}
	for _, it := range rp.dataList(t) {
		items[it["key"].(string)] = it
	}
	if it := items["cores"]; it["value"] != float64(2) || it["pending"] != float64(4) || it["delete"] != nil {
		t.Errorf("cores item %v", it)
	}
	if it := items["sockets"]; it["value"] != nil || it["pending"] != float64(2) {
		t.Errorf("sockets item %v", it)
	}
	if it := items["cpu"]; it["value"] != "host" || it["delete"] != float64(1) {
		t.Errorf("cpu item %v", it)
	}
	if it := items["digest"]; it["value"] != mustGuest(t, s, r).Digest {
		t.Errorf("digest item %v", it)
	}
	if it := items["name"]; it["value"] != "web" || len(it) != 2 {
		t.Errorf("name item %v", it)
	}
	// force delete shows as 2
	put(t, s, r, "delete", "scsi0", "force", "1")
	for _, it := range do(t, s, "GET", guestPath(r)+"/pending", nil).dataList(t) {
		if it["key"] == "scsi0" && it["delete"] != float64(2) {
			t.Errorf("forced delete item %v", it)
		}
	}
}

func TestRunningLXCPendingRules(t *testing.T) {
	s := Start(t)
	spec := ct200("")
	spec.Running = true
	r := mustAdd(t, s, spec)
	put(t, s, r, "cores", "2", "memory", "1024", "hostname", "ct2", "ostype", "ubuntu", "net1", "name=eth1,bridge=vmbr1",
		"mp0", "local-lvm:4,mp=/data", "arch", "arm64")
	st := mustGuest(t, s, r)
	for _, k := range []string{"cores", "memory", "hostname", "net1", "mp0"} {
		if _, ok := st.Config[k]; !ok {
			t.Errorf("%s should apply at once on a running CT", k)
		}
	}
	for _, k := range []string{"ostype", "arch"} {
		if _, ok := st.Pending[k]; !ok {
			t.Errorf("%s should stay pending (pending %v)", k, st.Pending)
		}
	}
	// Changing an existing mount point waits for a restart.
	put(t, s, r, "mp0", "local-lvm:vm-200-disk-1,mp=/other,size=4G")
	if _, ok := mustGuest(t, s, r).Pending["mp0"]; !ok {
		t.Errorf("mp0 change should be pending")
	}
	// A start applies all pending changes.
	do(t, s, "POST", guestPath(r)+"/status/stop", nil)
	waitIdle(t, s)
	do(t, s, "POST", guestPath(r)+"/status/start", nil)
	waitIdle(t, s)
	if st := mustGuest(t, s, r); len(st.Pending) != 0 || st.Config["ostype"] != "ubuntu" || !strings.Contains(st.Config["mp0"], "mp=/other") {
		t.Errorf("after restart: config %v pending %v", st.Config, st.Pending)
	}
}

func TestDigest(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	st := mustGuest(t, s, r)
	sum := sha1.Sum([]byte(st.File))
	if st.Digest != hex.EncodeToString(sum[:]) {
		t.Fatalf("digest is not the SHA-1 of the file")
	}
	d0 := getConfig(t, s, r, "")["digest"]
	put(t, s, r, "cores", "3", "digest", d0.(string))
	d1 := getConfig(t, s, r, "")["digest"]
	if d1 == d0 {
		t.Fatal("digest unchanged by a write")
	}
	rp := do(t, s, "PUT", guestPath(r)+"/config", form("cores", "4", "digest", d0.(string)))
	if rp.Code != 500 || rp.Status != "checksum mismatch (file change by other user?)" {
		t.Fatalf("stale digest: %d %q", rp.Code, rp.Status)
	}
	if mustGuest(t, s, r).Config["cores"] != "3" {
		t.Fatal("a refused write changed the config")
	}
	// Writing the same value again leaves the file, and so the digest, alone.
	put(t, s, r, "cores", "3")
	if getConfig(t, s, r, "")["digest"] != d1 {
		t.Fatal("a no-op write changed the digest")
	}
}

func TestDigestAndLockTextsAndOrder(t *testing.T) {
	for _, tc := range []struct {
		version string
		ref     proxmox.Ref
		spec    GuestSpec
		digest  string
		lock    string
		// both wrong: which error wins
		both string
	}{
		{PVE74, qemu("pve", 100), vm100(""), "checksum missmatch (file change by other user?)", "VM is locked (backup)", "checksum missmatch (file change by other user?)"},
		{PVE84, qemu("pve", 100), vm100(""), "checksum mismatch (file change by other user?)", "VM is locked (backup)", "checksum mismatch (file change by other user?)"},
		{PVE84, lxc("pve", 200), ct200(""), "detected modified configuration - file changed by other user? Try again.", "CT is locked (backup)", "CT is locked (backup)"},
	} {
		s := Start(t, WithVersion(tc.version))
		r := mustAdd(t, s, tc.spec)
		bad := strings.Repeat("0", 40)
		if rp := do(t, s, "PUT", guestPath(r)+"/config", form("onboot", "1", "digest", bad)); rp.Status != tc.digest {
			t.Errorf("%s %s digest: %q", tc.version, r.Type, rp.Status)
		}
		s.SetLock(r, "backup")
		good := mustGuest(t, s, r).Digest
		if rp := do(t, s, "PUT", guestPath(r)+"/config", form("onboot", "1", "digest", good)); rp.Status != tc.lock {
			t.Errorf("%s %s lock: %q", tc.version, r.Type, rp.Status)
		}
		if rp := do(t, s, "PUT", guestPath(r)+"/config", form("onboot", "1", "digest", bad)); rp.Status != tc.both {
			t.Errorf("%s %s lock+digest: %q", tc.version, r.Type, rp.Status)
		}
	}
}

func TestUpdateErrors(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	for _, tc := range []struct {
		name   string
		body   []string
		code   int
		reason string
		errs   map[string]string
	}{
		{"nothing", nil, 500, "no options specified", nil},
		{"only digest", []string{"digest", "abc"}, 500, "no options specified", nil},
		{"delete unknown", []string{"delete", "nosuch"}, 400, "Parameter verification failed.", map[string]string{"delete": "unknown option 'nosuch'"}},
		{"delete and set", []string{"delete", "cores", "cores", "2"}, 400, "Parameter verification failed.", map[string]string{"delete": "you can't use '-cores' and -delete cores' at the same time"}},
		{"revert and set", []string{"revert", "cores", "cores", "2"}, 400, "Parameter verification failed.", map[string]string{"delete": "you can't use '-cores' and -revert cores' at the same time"}},
		{"balloon", []string{"balloon", "4096"}, 500, "balloon value too large (must be smaller than assigned memory)", nil},
		{"snapshot", nil, 0, "", nil},
	} {
		if tc.code == 0 {
			continue
		}
		rp := do(t, s, "PUT", guestPath(r)+"/config", form(tc.body...))
		if rp.Code != tc.code || rp.Status != tc.reason {
			t.Errorf("%s: %d %q", tc.name, rp.Code, rp.Status)
		}
		for k, v := range tc.errs {
			if rp.errorsMap()[k] != v {
				t.Errorf("%s: errors %v", tc.name, rp.errorsMap())
			}
		}
	}
	if rp := do(t, s, "GET", guestPath(r)+"/config?snapshot=s1", nil); rp.Status != "snapshot 's1' does not exist" {
		t.Errorf("snapshot: %q", rp.Status)
	}
	// Deleting an unset option is only a warning; the write succeeds.
	put(t, s, r, "delete", "onboot", "cores", "5")
	if mustGuest(t, s, r).Config["cores"] != "5" {
		t.Error("write with a harmless delete failed")
	}
	// Protection blocks drive removal.
	put(t, s, r, "protection", "1")
	rp := do(t, s, "PUT", guestPath(r)+"/config", form("delete", "scsi0"))
	if rp.Code != 500 || rp.Status != "can't remove drive 'scsi0' - protection mode enabled" {
		t.Errorf("protection: %d %q", rp.Code, rp.Status)
	}
	if _, ok := mustGuest(t, s, r).Config["scsi0"]; !ok {
		t.Error("protected drive removed")
	}
	// A newline in a value dies when the file is written.
	rp = do(t, s, "PUT", guestPath(r)+"/config", form("args", "-a\n-b"))
	if rp.Code != 500 || rp.Status != "unable to parse value of 'args' - property contains a line feed" {
		t.Errorf("newline: %d %q", rp.Code, rp.Status)
	}
	rp = do(t, s, "PUT", guestPath(lxc("pve", 999))+"/config", form("cores", "1"))
	if rp.Code != 500 || rp.Status != "Configuration file 'nodes/pve/lxc/999.conf' does not exist" {
		t.Errorf("missing ct: %d %q", rp.Code, rp.Status)
	}
}

func TestCipasswordMasked(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	put(t, s, r, "cipassword", "hunter2", "ciuser", "root")
	if c := getConfig(t, s, r, ""); c["cipassword"] != "**********" {
		t.Fatalf("cipassword %v", c["cipassword"])
	}
	st := mustGuest(t, s, r)
	if !strings.HasPrefix(st.Config["cipassword"], "$5$") || strings.Contains(st.File, "hunter2") {
		t.Fatalf("cipassword stored as %q", st.Config["cipassword"])
	}
	// A value that already is a crypt hash is stored as given.
	put(t, s, r, "cipassword", "$6$abc$def")
	if got := mustGuest(t, s, r).Config["cipassword"]; got != "$6$abc$def" {
		t.Fatalf("hash re-hashed: %q", got)
	}
	for _, rq := range s.Requests() {
		if strings.Contains(rq.Params["cipassword"], "hunter2") {
			t.Fatal("request log holds the cloud-init password")
		}
	}
}

func TestUpdateConfigHelper(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	s.SetLock(r, "backup")
	if err := s.UpdateConfig(r, map[string]string{"tags": "B,a", "net1": "virtio,bridge=vmbr1"}, []string{"net0"}); err != nil {
		t.Fatal(err)
	}
	c := mustGuest(t, s, r).Config
	if c["tags"] != "a;b" || !strings.HasPrefix(c["net1"], "virtio=BC:24:11:") || c["net0"] != "" {
		t.Fatalf("config %v", c)
	}
	if err := s.UpdateConfig(r, map[string]string{"cores": "x"}, nil); err == nil {
		t.Fatal("invalid value accepted")
	}
	if err := s.UpdateConfig(qemu("pve", 555), map[string]string{"cores": "1"}, nil); err == nil || !strings.Contains(err.Error(), ErrNoGuest.Error()) {
		t.Fatalf("missing guest: %v", err)
	}
}

func TestAddGuestValidation(t *testing.T) {
	s := Start(t, WithNodes("a", "b"))
	for _, tc := range []struct {
		name string
		spec GuestSpec
	}{
		{"bad type", GuestSpec{Type: "vz", VMID: 100}},
		{"bad vmid", GuestSpec{Type: proxmox.QEMU, VMID: 5}},
		{"unknown node", GuestSpec{Node: "c", Type: proxmox.QEMU, VMID: 100}},
		{"unknown option", GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"colour": "red"}}},
		{"bad value", GuestSpec{Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"cores": "many"}}},
		{"bad lock", GuestSpec{Type: proxmox.QEMU, VMID: 100, Lock: "fstrim"}},
		{"running template", GuestSpec{Type: proxmox.QEMU, VMID: 100, Running: true, Template: true}},
		{"newline", GuestSpec{Type: proxmox.LXC, VMID: 100, Config: map[string]string{"hostname": "a\nb"}}},
	} {
		if err := s.AddGuest(tc.spec); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	mustAdd(t, s, GuestSpec{Node: "a", Type: proxmox.QEMU, VMID: 100, Config: map[string]string{"onboot": "yes", "cores": "004"}})
	if err := s.AddGuest(GuestSpec{Node: "b", Type: proxmox.LXC, VMID: 100}); err == nil {
		t.Error("duplicate vmid accepted")
	}
	c := mustGuest(t, s, qemu("a", 100)).Config
	if c["onboot"] != "1" || c["cores"] != "4" {
		t.Errorf("file normalisation: %v", c)
	}
	if err := s.RemoveGuest(qemu("a", 100)); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveGuest(qemu("a", 100)); err == nil {
		t.Error("removed twice")
	}
}
