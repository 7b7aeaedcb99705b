package normalize_test

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/guestward/guestward/normalize"
)

// The rapid properties of the issue: Normalize is idempotent; Equal(f, x, x);
// Equal(f, Normalize(f, x), x); parse-print-parse is stable; and changing a
// declared part of a value to a non-equivalent one makes Equal false.
//
// Values are generated the way different writers (GUI, API clients,
// Ansible, the CLI) spell them: keys in any order, booleans in every
// spelling, sizes in every unit, lists with every separator.

// valueKind is how a generated sub-value is spelled and mutated.
type valueKind int

const (
	kText valueKind = iota
	kBool
	kInt
	kNumber
	kSize
	kSet
	kList
	kMAC
)

type keyGen struct {
	key  string
	kind valueKind
	pool []string // text values, or set/list items
}

// propGen describes how to generate one property-string field.
type propGen struct {
	guest, field string
	defaultKey   string   // written bare at random
	foldKey      string   // written folded with the default key at random (QEMU NIC)
	always       []keyGen // keys every value declares
	optional     []keyGen
}

var propGens = []propGen{
	{guest: "qemu", field: "net0", defaultKey: "model", foldKey: "macaddr",
		always: []keyGen{{"model", kText, []string{"virtio", "e1000", "vmxnet3"}}, {"bridge", kText, []string{"vmbr0", "vmbr1"}}},
		optional: []keyGen{{"macaddr", kMAC, nil}, {"tag", kInt, nil}, {"firewall", kBool, nil}, {"link_down", kBool, nil},
			{"queues", kInt, nil}, {"rate", kNumber, nil}, {"trunks", kSet, []string{"10", "20", "30-40"}}, {"mtu", kInt, nil}}},
	{guest: "qemu", field: "scsi0", defaultKey: "file",
		always: []keyGen{{"file", kText, []string{"local-lvm:vm-100-disk-0", "local-lvm:32", "ceph:vm-100-disk-1", "/dev/sdb"}}},
		optional: []keyGen{{"iothread", kBool, nil}, {"ssd", kBool, nil}, {"backup", kBool, nil}, {"replicate", kBool, nil},
			{"discard", kText, []string{"on", "ignore"}}, {"cache", kText, []string{"none", "writeback", "directsync"}},
			{"size", kSize, nil}, {"mbps_rd", kNumber, nil}, {"iops_rd", kInt, nil}, {"serial", kText, []string{"abc", "DISK1"}}}},
	{guest: "qemu", field: "agent", defaultKey: "enabled",
		always:   []keyGen{{"enabled", kBool, nil}},
		optional: []keyGen{{"fstrim_cloned_disks", kBool, nil}, {"freeze-fs", kBool, nil}, {"type", kText, []string{"virtio", "isa"}}}},
	{guest: "qemu", field: "cpu", defaultKey: "cputype",
		always:   []keyGen{{"cputype", kText, []string{"host", "kvm64", "x86-64-v2-AES"}}},
		optional: []keyGen{{"hidden", kBool, nil}, {"flags", kSet, []string{"+aes", "-pcid", "+spec-ctrl"}}, {"phys-bits", kText, []string{"host", "40"}}}},
	{guest: "qemu", field: "startup", defaultKey: "order",
		optional: []keyGen{{"order", kInt, nil}, {"up", kInt, nil}, {"down", kInt, nil}}},
	{guest: "qemu", field: "ipconfig0",
		always:   []keyGen{{"ip", kText, []string{"dhcp", "10.0.0.5/24"}}},
		optional: []keyGen{{"gw", kText, []string{"10.0.0.1"}}, {"ip6", kText, []string{"auto", "dhcp"}}}},
	{guest: "qemu", field: "memory", defaultKey: "current",
		always: []keyGen{{"current", kInt, nil}}},
	{guest: "qemu", field: "boot",
		always: []keyGen{{"order", kList, []string{"scsi0", "ide2", "net0", "virtio0"}}}},
	{guest: "lxc", field: "net0",
		always: []keyGen{{"name", kText, []string{"eth0", "eth1"}}, {"bridge", kText, []string{"vmbr0", "vmbr1"}}},
		optional: []keyGen{{"hwaddr", kMAC, nil}, {"ip", kText, []string{"dhcp", "10.0.0.5/24"}}, {"gw", kText, []string{"10.0.0.1"}},
			{"firewall", kBool, nil}, {"tag", kInt, nil}, {"mtu", kInt, nil}, {"rate", kNumber, nil}, {"trunks", kSet, []string{"10", "20"}}}},
	{guest: "lxc", field: "rootfs", defaultKey: "volume",
		always: []keyGen{{"volume", kText, []string{"local-lvm:vm-101-disk-0", "local-zfs:8", "local-zfs:subvol-101-disk-0"}}},
		optional: []keyGen{{"size", kSize, nil}, {"acl", kBool, nil}, {"mountoptions", kSet, []string{"noatime", "nosuid", "nodev"}},
			{"ro", kBool, nil}, {"quota", kBool, nil}, {"replicate", kBool, nil}}},
	{guest: "lxc", field: "mp0", defaultKey: "volume",
		always:   []keyGen{{"volume", kText, []string{"local-lvm:vm-101-disk-1", "local-lvm:10", "/mnt/pve/share"}}, {"mp", kText, []string{"/data", "/srv"}}},
		optional: []keyGen{{"backup", kBool, nil}, {"size", kSize, nil}, {"shared", kBool, nil}}},
	{guest: "lxc", field: "features",
		optional: []keyGen{{"nesting", kBool, nil}, {"keyctl", kBool, nil}, {"fuse", kBool, nil}, {"mount", kSet, []string{"nfs", "cifs"}}}},
}

var boolSpellings = map[bool][]string{
	true:  {"1", "on", "yes", "true", "TRUE", "Yes"},
	false: {"0", "off", "no", "false", "False", "NO"},
}

// genValue draws one value of kind k, spelled like some writer would.
func genValue(t *rapid.T, label string, k valueKind, pool []string) string {
	switch k {
	case kBool:
		return rapid.SampledFrom(boolSpellings[rapid.Bool().Draw(t, label+"-bool")]).Draw(t, label)
	case kInt:
		n := rapid.IntRange(1, 4094).Draw(t, label)
		if rapid.Bool().Draw(t, label+"-padded") {
			return "0" + strconv.Itoa(n)
		}
		return strconv.Itoa(n)
	case kNumber:
		n := rapid.IntRange(1, 999).Draw(t, label)
		return strconv.Itoa(n/10) + "." + strconv.Itoa(n%10) + rapid.SampledFrom([]string{"", "0"}).Draw(t, label+"-zero")
	case kSize:
		mib := int64(rapid.IntRange(1, 1<<16).Draw(t, label))
		switch rapid.IntRange(0, 3).Draw(t, label+"-unit") {
		case 0:
			return strconv.FormatInt(mib<<20, 10)
		case 1:
			return strconv.FormatInt(mib<<10, 10) + rapid.SampledFrom([]string{"K", "KiB"}).Draw(t, label+"-k")
		case 2:
			return strconv.FormatInt(mib, 10) + rapid.SampledFrom([]string{"M", "MiB"}).Draw(t, label+"-m")
		default:
			return normalize.FormatSize(mib << 20)
		}
	case kSet:
		items := rapid.SliceOfN(rapid.SampledFrom(pool), 1, 4).Draw(t, label)
		return strings.Join(items, ";")
	case kList:
		items := rapid.SliceOfNDistinct(rapid.SampledFrom(pool), 1, len(pool), rapid.ID[string]).Draw(t, label)
		return strings.Join(items, ";")
	case kMAC:
		b := rapid.SliceOfN(rapid.IntRange(0, 255), 6, 6).Draw(t, label)
		b[0] &^= 1 // unicast
		parts := make([]string, 6)
		for i, x := range b {
			parts[i] = fmt.Sprintf("%02x", x)
		}
		mac := strings.Join(parts, ":")
		if rapid.Bool().Draw(t, label+"-upper") {
			mac = strings.ToUpper(mac)
		}
		return mac
	}
	return rapid.SampledFrom(pool).Draw(t, label)
}

// mutateValue returns a value of kind k that is not equivalent to v.
func mutateValue(k valueKind, v string) string {
	switch k {
	case kBool:
		switch strings.ToLower(v) {
		case "1", "on", "yes", "true":
			return "0"
		}
		return "1"
	case kInt:
		n, _ := strconv.Atoi(strings.TrimLeft(v, "0"))
		return strconv.Itoa(n + 1)
	case kNumber:
		f, _ := strconv.ParseFloat(v, 64)
		return strconv.FormatFloat(f+1, 'f', -1, 64)
	case kSize:
		n, _ := normalize.ParseSize(v)
		return normalize.FormatSize(n + 1024)
	case kSet, kList:
		return v + ";zz-extra"
	case kMAC:
		last := v[len(v)-1]
		if last == '0' {
			return v[:len(v)-1] + "1"
		}
		return v[:len(v)-1] + "0"
	}
	return v + "x"
}

type item struct{ key, val string }

func kindOf(g propGen, key string) valueKind {
	for _, k := range append(append([]keyGen(nil), g.always...), g.optional...) {
		if k.key == key {
			return k.kind
		}
	}
	return kText
}

// respell writes v as another writer would: another boolean spelling,
// padding, another size unit, another list order or separator, another
// letter case of a MAC address.
func respell(t *rapid.T, k valueKind, v string) string {
	switch k {
	case kBool:
		b := map[string]bool{"1": true, "on": true, "yes": true, "true": true}[strings.ToLower(v)]
		return rapid.SampledFrom(boolSpellings[b]).Draw(t, "respell-bool")
	case kInt:
		n, _ := strconv.Atoi(strings.TrimLeft(v, "0"))
		return rapid.SampledFrom([]string{strconv.Itoa(n), "0" + strconv.Itoa(n), "+" + strconv.Itoa(n)}).Draw(t, "respell-int")
	case kNumber:
		return v + rapid.SampledFrom([]string{"", "0", "00"}).Draw(t, "respell-number")
	case kSize:
		n, _ := normalize.ParseSize(v)
		return rapid.SampledFrom([]string{strconv.FormatInt(n, 10), normalize.FormatSize(n), strconv.FormatInt(n>>10, 10) + "KiB"}).Draw(t, "respell-size")
	case kSet:
		items := strings.Split(v, ";")
		items = rapid.Permutation(items).Draw(t, "respell-set")
		if rapid.Bool().Draw(t, "respell-dup") {
			items = append(items, items[0])
		}
		return strings.Join(items, ";")
	case kMAC:
		if rapid.Bool().Draw(t, "respell-mac") {
			return strings.ToLower(v)
		}
		return strings.ToUpper(v)
	}
	return v
}

// drawProp draws a property string for g, and returns its items.
func drawProp(t *rapid.T, g propGen) (string, []item) {
	var items []item
	for _, k := range g.always {
		items = append(items, item{k.key, genValue(t, k.key, k.kind, k.pool)})
	}
	for _, k := range g.optional {
		if rapid.Bool().Draw(t, "has-"+k.key) {
			items = append(items, item{k.key, genValue(t, k.key, k.kind, k.pool)})
		}
	}
	return printItems(t, g, items), items
}

// printItems writes items in a random order, the default key bare or not,
// folded or not.
func printItems(t *rapid.T, g propGen, items []item) string {
	order := rapid.Permutation(items).Draw(t, "order")
	var parts []string
	var model, mac string
	for _, it := range order {
		switch {
		case g.foldKey != "" && it.key == g.defaultKey:
			model = it.val
		case g.foldKey != "" && it.key == g.foldKey:
			mac = it.val
		case it.key == g.defaultKey && rapid.Bool().Draw(t, "bare-"+it.key):
			parts = append(parts, it.val)
		default:
			parts = append(parts, it.key+"="+it.val)
		}
	}
	if model != "" {
		pos := rapid.IntRange(0, len(parts)).Draw(t, "model-pos")
		var fold []string
		switch {
		case mac != "" && rapid.Bool().Draw(t, "folded"):
			fold = []string{model + "=" + mac}
		case mac != "":
			fold = []string{"model=" + model, "macaddr=" + mac}
		case rapid.Bool().Draw(t, "bare-model"):
			fold = []string{model}
		default:
			fold = []string{"model=" + model}
		}
		parts = append(parts[:pos], append(fold, parts[pos:]...)...)
	}
	return strings.Join(parts, ",")
}

func sets() map[string]*normalize.Set {
	return map[string]*normalize.Set{"qemu": normalize.QEMU(), "lxc": normalize.LXC()}
}

func TestRapidPropertyStrings(t *testing.T) {
	sets := sets()
	rapid.Check(t, func(t *rapid.T) {
		g := rapid.SampledFrom(propGens).Draw(t, "field")
		s := sets[g.guest]
		x, items := drawProp(t, g)

		if !s.Equal(g.field, x, x) {
			t.Fatalf("Equal(%s, x, x) false for %q", g.field, x)
		}
		n := s.Normalize(g.field, x)
		if nn := s.Normalize(g.field, n); nn != n {
			t.Fatalf("Normalize(%s) not idempotent: %q -> %q -> %q", g.field, x, n, nn)
		}
		if !s.Equal(g.field, n, x) || !s.Equal(g.field, x, n) {
			t.Fatalf("%s: %q and its normal form %q differ: %v", g.field, x, n, s.Explain(g.field, n, x))
		}

		// The same items written by another writer are equal.
		respelled := make([]item, len(items))
		for i, it := range items {
			respelled[i] = item{it.key, respell(t, kindOf(g, it.key), it.val)}
		}
		y := printItems(t, g, respelled)
		if !s.Equal(g.field, x, y) {
			t.Fatalf("%s: %q and %q are the same items but differ: %v", g.field, x, y, s.Explain(g.field, x, y))
		}
		if s.Normalize(g.field, x) != s.Normalize(g.field, y) {
			t.Fatalf("%s: %q and %q normalize differently: %q, %q", g.field, x, y, s.Normalize(g.field, x), s.Normalize(g.field, y))
		}

		// Changing one declared key to a non-equivalent value is drift.
		if len(items) == 0 {
			return
		}
		i := rapid.IntRange(0, len(items)-1).Draw(t, "mutate")
		kind := kindOf(g, items[i].key)
		mutated := append([]item(nil), items...)
		mutated[i].val = mutateValue(kind, items[i].val)
		m := printItems(t, g, mutated)
		if s.Equal(g.field, m, x) {
			t.Fatalf("%s: changing %s from %q to %q went unnoticed: Equal(%q, %q)", g.field, items[i].key, items[i].val, mutated[i].val, m, x)
		}
		if d := s.Explain(g.field, m, x); len(d) == 0 {
			t.Fatalf("%s: Explain(%q, %q) is empty", g.field, m, x)
		}
	})
}

// scalarGen draws a top-level value and a non-equivalent mutation of it.
type scalarGen struct {
	guest, field string
	draw         func(t *rapid.T) (value, mutated string)
}

var tagPool = []string{"web", "db", "prod", "cache", "eu-west", "k8s_node"}

func randomCase(t *rapid.T, s string) string {
	b := []byte(s)
	for i := range b {
		if rapid.Bool().Draw(t, "upper") {
			b[i] = strings.ToUpper(string(b[i]))[0]
		}
	}
	return string(b)
}

func joinRandom(t *rapid.T, items []string) string {
	var b strings.Builder
	for i, it := range items {
		if i > 0 {
			b.WriteString(rapid.SampledFrom([]string{",", ";", " ", ", ", " ;"}).Draw(t, "sep"))
		}
		b.WriteString(it)
	}
	return b.String()
}

var scalarGens = []scalarGen{
	{"qemu", "onboot", func(t *rapid.T) (string, string) {
		v := genValue(t, "v", kBool, nil)
		return v, mutateValue(kBool, v)
	}},
	{"lxc", "console", func(t *rapid.T) (string, string) {
		v := genValue(t, "v", kBool, nil)
		return v, mutateValue(kBool, v)
	}},
	{"qemu", "cores", func(t *rapid.T) (string, string) {
		v := genValue(t, "v", kInt, nil)
		return v, mutateValue(kInt, v)
	}},
	{"qemu", "cpulimit", func(t *rapid.T) (string, string) {
		v := genValue(t, "v", kNumber, nil)
		return v, mutateValue(kNumber, v)
	}},
	{"qemu", "tags", func(t *rapid.T) (string, string) {
		items := rapid.SliceOfN(rapid.SampledFrom(tagPool), 1, 5).Draw(t, "tags")
		for i := range items {
			items[i] = randomCase(t, items[i])
		}
		v := joinRandom(t, items)
		return v, v + ";added-tag"
	}},
	{"lxc", "nameserver", func(t *rapid.T) (string, string) {
		items := rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"1.1.1.1", "8.8.8.8", "9.9.9.9"}), 2, 3, rapid.ID[string]).Draw(t, "ns")
		v := joinRandom(t, items)
		swapped := append([]string{items[1], items[0]}, items[2:]...)
		return v, strings.Join(swapped, " ")
	}},
	{"qemu", "hotplug", func(t *rapid.T) (string, string) {
		items := rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"network", "disk", "usb", "cpu", "memory"}), 1, 4, rapid.ID[string]).Draw(t, "hp")
		v := joinRandom(t, items)
		return v, joinRandom(t, items[1:]) + ",cloudinit"
	}},
	{"qemu", "description", func(t *rapid.T) (string, string) {
		lines := rapid.SliceOfN(rapid.SampledFrom([]string{"Web server", "", "owner: ops", "  indented", "50% load"}), 1, 4).Draw(t, "lines")
		eol := rapid.SampledFrom([]string{"\n", "\r\n"}).Draw(t, "eol")
		body := strings.Join(lines, eol)
		tail := rapid.SampledFrom([]string{"", "\n", "\r\n", " \n\n", "\t"}).Draw(t, "tail")
		return body + tail, body + "!" + tail
	}},
	{"qemu", "sshkeys", func(t *rapid.T) (string, string) {
		keys := rapid.SliceOfN(rapid.SampledFrom([]string{
			"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMq alice@laptop",
			"ssh-rsa AAAAB3NzaC1yc2E+abc/def== bob@ws",
		}), 1, 3).Draw(t, "keys")
		text := strings.Join(keys, "\n")
		if rapid.Bool().Draw(t, "trailing-newline") {
			text += "\n"
		}
		v := text
		if rapid.Bool().Draw(t, "encoded") {
			v = strings.ReplaceAll(url.QueryEscape(text), "+", "%20")
		}
		return v, text + "\nssh-ed25519 AAAAnew carol@host"
	}},
}

func TestRapidScalars(t *testing.T) {
	sets := sets()
	rapid.Check(t, func(t *rapid.T) {
		g := rapid.SampledFrom(scalarGens).Draw(t, "field")
		s := sets[g.guest]
		x, m := g.draw(t)
		if !s.Equal(g.field, x, x) {
			t.Fatalf("Equal(%s, x, x) false for %q", g.field, x)
		}
		n := s.Normalize(g.field, x)
		if nn := s.Normalize(g.field, n); nn != n {
			t.Fatalf("Normalize(%s) not idempotent: %q -> %q -> %q", g.field, x, n, nn)
		}
		if !s.Equal(g.field, n, x) {
			t.Fatalf("%s: %q and its normal form %q differ", g.field, x, n)
		}
		if s.Equal(g.field, m, x) {
			t.Fatalf("%s: %q against %q went unnoticed", g.field, m, x)
		}
	})
}

// TestRapidParsePrint checks parse-print-parse on a user-defined Format
// that uses every value type.
func TestRapidParsePrint(t *testing.T) {
	f := &normalize.Format{
		DefaultKey: "name",
		Aliases:    map[string]string{"alias": "text"},
		Keys: map[string]normalize.Key{
			"name":   {},
			"req":    {Required: true},
			"text":   {},
			"flag":   {Type: normalize.TypeBool, Default: "0"},
			"count":  {Type: normalize.TypeInt},
			"ratio":  {Type: normalize.TypeNumber},
			"size":   {Type: normalize.TypeSize, Generated: true},
			"set":    {Type: normalize.TypeSet},
			"list":   {Type: normalize.TypeList},
			"folded": {Type: normalize.TypeFold},
		},
	}
	rule := normalize.PropertyRule(f, false)
	g := propGen{defaultKey: "name",
		always: []keyGen{{"name", kText, []string{"a", "b=c", "x y"}}, {"req", kText, []string{"r1", "r2"}}},
		optional: []keyGen{{"text", kText, []string{"t", "u"}}, {"flag", kBool, nil}, {"count", kInt, nil},
			{"ratio", kNumber, nil}, {"size", kSize, nil}, {"set", kSet, []string{"p", "q", "r"}},
			{"list", kList, []string{"p", "q", "r"}}, {"folded", kMAC, nil}}}
	rapid.Check(t, func(t *rapid.T) {
		x, _ := drawProp(t, g)
		p, err := normalize.ParseProperty(f, x)
		if err != nil {
			t.Fatalf("ParseProperty(%q): %v", x, err)
		}
		printed := p.String()
		q, err := normalize.ParseProperty(f, printed)
		if err != nil {
			t.Fatalf("ParseProperty(%q) of the print of %q: %v", printed, x, err)
		}
		if q.String() != printed {
			t.Fatalf("%q prints as %q, then as %q", x, printed, q.String())
		}
		if len(q.Items()) != len(p.Items()) {
			t.Fatalf("%q has %d items, its print %q %d", x, len(p.Items()), printed, len(q.Items()))
		}
		if !rule.Equal(printed, x) || !rule.Equal(x, printed) {
			t.Fatalf("%q and its print %q differ", x, printed)
		}
	})
}
