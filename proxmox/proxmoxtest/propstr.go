package proxmoxtest

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds the Proxmox value machinery the fake needs on the write
// side: property strings (parse and canonical print), sizes, lists, tags,
// MAC generation and the comment encoding of descriptions. It is written
// from Proxmox's documented behaviour and deliberately shares no code with
// package normalize: the fake is the oracle normalize is tested against.

type pkind uint8

const (
	pStr pkind = iota
	pInt
	pBool
	pNum
	pSize // disk-size: parsed to bytes, printed with formatSize
	pMAC  // mac-addr
)

type pkey struct {
	kind     pkind
	optional bool
	alias    string // this key is another name for alias
	keyAlias string // with alias: the key's own name is stored under keyAlias
	enum     []string
	min, max *float64
	check    func(string) string // format check: the die text, "" if valid
}

type propFormat struct {
	keys       map[string]pkey
	defaultKey string
	combine    map[string]string // keyAlias target -> alias target (model -> macaddr)
}

func newFormat(defaultKey string, keys map[string]pkey) *propFormat {
	f := &propFormat{keys: keys, defaultKey: defaultKey, combine: map[string]string{}}
	for _, k := range keys {
		if k.keyAlias != "" {
			f.combine[k.keyAlias] = k.alias
		}
	}
	return f
}

// fmtError is a property-string failure, rendered the way a Perl
// PVE::Exception stringifies: the message, then one "key: msg" line per
// entry of the errors map.
type fmtError struct {
	msg    string
	errors map[string]string
}

func (e *fmtError) Error() string {
	var b strings.Builder
	b.WriteString(e.msg)
	b.WriteByte('\n')
	keys := make([]string, 0, len(e.errors))
	for k := range e.errors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(k + ": " + e.errors[k] + "\n")
	}
	return b.String()
}

func dieText(format string, args ...any) *fmtError {
	return &fmtError{msg: fmt.Sprintf(format, args...)}
}

var kvPartRE = regexp.MustCompile(`^([^=]+)=(.+)$`)

// parse follows PVE::JSONSchema::parse_property_string: comma-separated
// parts, an optional bare default key, aliases and key aliases, booleans in
// any Perl spelling folded to 1/0, then a schema check of the result. path
// prefixes the keys of the errors map ("net0.model").
func (f *propFormat) parse(data, path string) (map[string]string, *fmtError) {
	res := map[string]string{}
	defaultSeen := ""
	for _, part := range strings.Split(data, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		if m := kvPartRE.FindStringSubmatch(part); m != nil {
			k, v := m[1], m[2]
			if _, dup := res[k]; dup {
				return nil, dieText("duplicate key in comma-separated list property: %s", k)
			}
			spec, ok := f.keys[k]
			if ok && spec.alias != "" {
				if spec.keyAlias != "" {
					if _, dup := res[spec.keyAlias]; dup {
						return nil, dieText("key alias '%s' is already defined", spec.keyAlias)
					}
					res[spec.keyAlias] = k
				}
				k = spec.alias
				spec, ok = f.keys[k]
			}
			if !ok {
				return nil, dieText("invalid key in comma-separated list property: %s", k)
			}
			if spec.kind == pBool {
				if b, ok := parseBoolean(v); ok {
					v = b
				}
			}
			res[k] = v
			continue
		}
		if !strings.Contains(part, "=") {
			if defaultSeen != "" {
				return nil, dieText("duplicate key in comma-separated list property: %s", defaultSeen)
			}
			if f.defaultKey == "" {
				return nil, dieText("value without key, but schema does not define a default key")
			}
			defaultSeen = f.defaultKey
			if _, dup := res[f.defaultKey]; dup {
				return nil, dieText("duplicate key in comma-separated list property: %s", f.defaultKey)
			}
			res[f.defaultKey] = part
			continue
		}
		return nil, dieText("missing key in comma-separated list property")
	}
	errs := map[string]string{}
	for name, spec := range f.keys {
		if spec.alias != "" {
			continue
		}
		p := name
		if path != "" {
			p = path + "." + name
		}
		v, ok := res[name]
		if !ok {
			if !spec.optional {
				errs[p] = "property is missing and it is not optional"
			}
			continue
		}
		if msg := checkScalar(spec.kind, v, spec.enum, spec.min, spec.max); msg != "" {
			errs[p] = msg
		} else if spec.check != nil {
			if msg := spec.check(v); msg != "" {
				errs[p] = "invalid format - " + msg + "\n"
			}
		}
	}
	if len(errs) > 0 {
		return nil, &fmtError{msg: "format error", errors: errs}
	}
	for name, spec := range f.keys {
		if spec.kind == pSize {
			if v, ok := res[name]; ok {
				n, _ := parseSize(v)
				res[name] = strconv.FormatInt(n, 10)
			}
		}
	}
	return res, nil
}

// checkScalar applies JSONSchema's type, format, enum and range checks to one
// value and returns the error text ("" if valid).
func checkScalar(kind pkind, v string, enum []string, min, max *float64) string {
	switch kind {
	case pInt:
		if !isInteger(v) {
			return fmt.Sprintf("type check ('integer') failed - got '%s'", v)
		}
	case pNum:
		if !isNumber(v) {
			return fmt.Sprintf("type check ('number') failed - got '%s'", v)
		}
	case pBool:
		if v != "1" && v != "0" {
			return fmt.Sprintf("type check ('boolean') failed - got '%s'", v)
		}
	case pSize:
		if _, ok := parseSize(v); !ok {
			return fmt.Sprintf("invalid format - value does not look like a valid disk size: %s\n", v)
		}
	case pMAC:
		if !macRE.MatchString(v) {
			return "invalid format - value does not look like a valid unicast MAC address\n"
		}
	}
	if (kind == pInt || kind == pNum) && isNumber(v) {
		f, _ := strconv.ParseFloat(v, 64)
		if max != nil && f > *max {
			return fmt.Sprintf("value must have a maximum value of %s", fmtNum(*max))
		}
		if min != nil && f < *min {
			return fmt.Sprintf("value must have a minimum value of %s", fmtNum(*min))
		}
	}
	if len(enum) > 0 {
		found := false
		for _, e := range enum {
			if e == v {
				found = true
				break
			}
		}
		if !found {
			return fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", v, strings.Join(enum, ", "))
		}
	}
	return ""
}

func fmtNum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

var (
	integerRE = regexp.MustCompile(`^[+-]?\d+$`)
	numberRE  = regexp.MustCompile(`^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$`)
	macRE     = regexp.MustCompile(`(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$`)
)

func isInteger(s string) bool { return integerRE.MatchString(s) }
func isNumber(s string) bool  { return numberRE.MatchString(s) }

// print follows print_property_string: the default key first (bare, or as
// "<alias>=<value>" when a key alias combines two keys, like virtio=MAC),
// then the required keys sorted, then the optional keys sorted. Sizes are
// printed in the largest exact binary unit. skip names keys left out.
func (f *propFormat) print(data map[string]string, skip ...string) (string, *fmtError) {
	done := map[string]bool{}
	for _, k := range skip {
		done[k] = true
	}
	var parts []string
	var failed *fmtError
	value := func(key, v string) string {
		if spec, ok := f.keys[key]; ok && spec.kind == pSize {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				return formatSize(n)
			}
		}
		if strings.Contains(v, ",") && failed == nil {
			failed = dieText("illegal value with commas for %s", key)
		}
		return v
	}
	add := func(key string, isDefault bool) {
		if done[key] {
			return
		}
		done[key] = true
		v, ok := data[key]
		if !ok {
			return
		}
		if partner, ok := f.combine[key]; ok {
			if pv, ok := data[partner]; ok {
				parts = append(parts, value(key, v)+"="+value(partner, pv))
				done[partner] = true
				return
			}
		}
		if isDefault {
			parts = append(parts, value(key, v))
		} else {
			parts = append(parts, key+"="+value(key, v))
		}
	}
	if f.defaultKey != "" {
		add(f.defaultKey, true)
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if spec, ok := f.keys[k]; ok && !spec.optional {
			add(k, false)
		}
	}
	for _, k := range keys {
		add(k, false)
	}
	if failed != nil {
		return "", failed
	}
	return strings.Join(parts, ","), nil
}

func fp(f float64) *float64 { return &f }

var nicModels = []string{
	"e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551", "i82557b",
	"i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3",
}

// qemuNetFormat is qemu-server's $net_fmt.
var qemuNetFormat = func() *propFormat {
	keys := map[string]pkey{
		"model":     {kind: pStr, enum: nicModels},
		"macaddr":   {kind: pMAC, optional: true},
		"bridge":    {kind: pStr, optional: true, check: checkBridge},
		"queues":    {kind: pInt, optional: true, min: fp(0), max: fp(64)},
		"rate":      {kind: pNum, optional: true, min: fp(0)},
		"tag":       {kind: pInt, optional: true, min: fp(1), max: fp(4094)},
		"trunks":    {kind: pStr, optional: true},
		"firewall":  {kind: pBool, optional: true},
		"link_down": {kind: pBool, optional: true},
		"mtu":       {kind: pInt, optional: true, min: fp(1), max: fp(65520)},
	}
	for _, m := range nicModels {
		keys[m] = pkey{alias: "macaddr", keyAlias: "model", optional: true}
	}
	return newFormat("model", keys)
}()

func optKeys(kind pkind, names ...string) map[string]pkey {
	m := map[string]pkey{}
	for _, n := range names {
		m[n] = pkey{kind: kind, optional: true}
	}
	return m
}

func mergeKeys(ms ...map[string]pkey) map[string]pkey {
	out := map[string]pkey{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

var (
	// pve-volume-id-or-qm-path (QEMU drives) and pve-lxc-mp-string (LXC):
	// a storage volume, an absolute path, "none"/"cdrom" (QEMU), or the
	// "[storage:]size" allocation syntax.
	volumeRE = regexp.MustCompile(`(?i)^(?:/.+|[a-z][a-z0-9\-_.]*[a-z0-9]:.+|(?:[a-z][a-z0-9\-_.]*[a-z0-9]:)?\d+(?:\.\d+)?)$`)
	ifaceRE  = regexp.MustCompile(`(?i)^[a-z][a-z0-9_]{1,20}(?:[:.]\d+)?$`)
	bridgeRE = regexp.MustCompile(`^[-_.\w]+$`)
)

func checkQemuVolume(v string) string {
	if v == "none" || v == "cdrom" || volumeRE.MatchString(v) {
		return ""
	}
	return "unable to parse volume ID '" + v + "'"
}

func checkLXCVolume(v string) string {
	if volumeRE.MatchString(v) {
		return ""
	}
	return "unable to parse volume ID '" + v + "'"
}

func checkIface(v string) string {
	if ifaceRE.MatchString(v) {
		return ""
	}
	return "invalid network interface name '" + v + "'"
}

func checkBridge(v string) string {
	if bridgeRE.MatchString(v) {
		return ""
	}
	return "invalid bridge ID '" + v + "'"
}

// qemuDriveFormat covers the keys of qemu-server's drive formats (ide, sata,
// scsi, virtio, efidisk, tpmstate share most of them).
var qemuDriveFormat = newFormat("file", mergeKeys(
	map[string]pkey{
		"file":    {kind: pStr, check: checkQemuVolume},
		"volume":  {alias: "file", optional: true},
		"media":   {kind: pStr, optional: true, enum: []string{"cdrom", "disk"}},
		"trans":   {kind: pStr, optional: true, enum: []string{"none", "lba", "auto"}},
		"cache":   {kind: pStr, optional: true, enum: []string{"none", "writethrough", "writeback", "unsafe", "directsync"}},
		"format":  {kind: pStr, optional: true, enum: []string{"raw", "cow", "qcow", "qed", "qcow2", "vmdk", "cloop"}},
		"aio":     {kind: pStr, optional: true, enum: []string{"native", "threads", "io_uring"}},
		"discard": {kind: pStr, optional: true, enum: []string{"ignore", "on"}},
		"rerror":  {kind: pStr, optional: true, enum: []string{"ignore", "report", "stop"}},
		"werror":  {kind: pStr, optional: true, enum: []string{"enospc", "ignore", "report", "stop"}},
		"size":    {kind: pSize, optional: true},
		"efitype": {kind: pStr, optional: true, enum: []string{"2m", "4m"}},
		"version": {kind: pStr, optional: true, enum: []string{"v1.2", "v2.0"}},
		"queues":  {kind: pInt, optional: true, min: fp(2)},
	},
	optKeys(pInt, "cyls", "heads", "secs", "iops", "iops_rd", "iops_wr", "iops_max", "iops_rd_max",
		"iops_wr_max", "iops_max_length", "iops_rd_max_length", "iops_wr_max_length", "bps", "bps_rd",
		"bps_wr", "bps_max_length", "bps_rd_max_length", "bps_wr_max_length"),
	optKeys(pNum, "mbps", "mbps_rd", "mbps_wr", "mbps_max", "mbps_rd_max", "mbps_wr_max"),
	optKeys(pBool, "snapshot", "iothread", "ssd", "backup", "replicate", "shared", "detect_zeroes",
		"ro", "removable", "pre-enrolled-keys"),
	optKeys(pStr, "serial", "model", "wwn", "product", "vendor", "import-from", "ms-cert"),
))

// lxcNetFormat is pve-container's $netconf_desc.
var lxcNetFormat = newFormat("", mergeKeys(
	map[string]pkey{
		"name":   {kind: pStr, check: checkIface},
		"bridge": {kind: pStr, optional: true, check: checkBridge},
		"hwaddr": {kind: pMAC, optional: true},
		"mtu":    {kind: pInt, optional: true, min: fp(64), max: fp(65535)},
		"rate":   {kind: pNum, optional: true, min: fp(0)},
		"tag":    {kind: pInt, optional: true, min: fp(1), max: fp(4094)},
		"type":   {kind: pStr, optional: true, enum: []string{"veth"}},
	},
	optKeys(pStr, "gw", "gw6", "ip", "ip6", "trunks"),
	optKeys(pBool, "firewall", "link_down", "host-managed"),
))

var lxcVolumeKeys = mergeKeys(
	map[string]pkey{
		"volume": {kind: pStr, check: checkLXCVolume},
		"size":   {kind: pSize, optional: true},
	},
	optKeys(pBool, "acl", "quota", "replicate", "ro", "shared"),
	optKeys(pStr, "mountoptions"),
)

// lxcRootfsFormat is $rootfs_desc; lxcMPFormat is $mp_desc.
var (
	lxcRootfsFormat = newFormat("volume", lxcVolumeKeys)
	lxcMPFormat     = newFormat("volume", mergeKeys(lxcVolumeKeys,
		map[string]pkey{"mp": {kind: pStr}},
		optKeys(pBool, "backup", "keepattrs")))
)

// qemuMemoryFormat is the [current=]<integer> property string QEMU memory
// became in qemu-server 8.0.8.
var qemuMemoryFormat = newFormat("current", map[string]pkey{
	"current": {kind: pInt, optional: true, min: fp(16)},
})

// parseBoolean is PVE::JSONSchema::parse_boolean.
func parseBoolean(v string) (string, bool) {
	switch strings.ToLower(v) {
	case "1", "on", "yes", "true":
		return "1", true
	case "0", "off", "no", "false":
		return "0", true
	}
	return "", false
}

var sizeRE = regexp.MustCompile(`^(\d+(\.\d+)?)([KMGT])?$`)

// parseSize is PVE::JSONSchema::parse_size: a decimal number of bytes, or
// of KiB/MiB/GiB/TiB with a K/M/G/T suffix, truncated to an integer.
func parseSize(v string) (int64, bool) {
	m := sizeRE.FindStringSubmatch(v)
	if m == nil {
		return 0, false
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, false
	}
	switch m[3] {
	case "K":
		f *= 1 << 10
	case "M":
		f *= 1 << 20
	case "G":
		f *= 1 << 30
	case "T":
		f *= 1 << 40
	}
	return int64(f), true
}

// formatSize is PVE::JSONSchema::format_size: the largest binary unit that
// divides n exactly, or plain bytes.
func formatSize(n int64) string {
	kb := n / 1024
	if kb*1024 != n {
		return strconv.FormatInt(n, 10)
	}
	mb := kb / 1024
	if mb*1024 != kb {
		return strconv.FormatInt(kb, 10) + "K"
	}
	gb := mb / 1024
	if gb*1024 != mb {
		return strconv.FormatInt(mb, 10) + "M"
	}
	tb := gb / 1024
	if tb*1024 != gb {
		return strconv.FormatInt(gb, 10) + "G"
	}
	return strconv.FormatInt(tb, 10) + "T"
}

// splitList is PVE::Tools::split_list: a NUL-separated list (how repeated
// form keys arrive) is split on NUL; otherwise ',' and ';' count as
// whitespace and the text is split on runs of whitespace.
func splitList(s string) []string {
	if strings.Contains(s, "\x00") {
		return strings.Split(s, "\x00")
	}
	s = strings.NewReplacer(",", " ", ";", " ").Replace(s)
	return strings.Fields(s)
}

var tagRE = regexp.MustCompile(`(?i)^[a-z0-9_][a-z0-9_\-+.]*$`)

// uniqueTags is get_unique_tags (pve-guest-common PVE/GuestHelpers.pm)
// under the datacenter's tag-style: unless the ordering is "config", tags
// are sorted with Perl's stable sort by "cmp" (code point order) on the
// tag, lower-cased unless case-sensitive; tags are lower-cased unless
// case-sensitive, de-duplicated keeping the first, and joined with ';'.
func (st TagStyle) uniqueTags(s string) string {
	tags := splitList(s)
	key := strings.ToLower
	if st.CaseSensitive {
		key = func(s string) string { return s }
	}
	if !st.ConfigOrder {
		// Go compares strings bytewise, which for UTF-8 is code point
		// order: Perl's cmp without "use locale".
		sort.SliceStable(tags, func(i, j int) bool { return key(tags[i]) < key(tags[j]) })
	}
	seen := map[string]bool{}
	out := tags[:0:0]
	for _, t := range tags {
		t = key(t)
		if seen[t] {
			continue
		}
		seen[t] = true
		out = append(out, t)
	}
	return strings.Join(out, ";")
}

// randomMAC is PVE::Tools::random_ether_addr: six random bytes with the
// multicast bit cleared and the locally-administered bit set, printed in
// upper case, with the leading characters replaced by prefix.
func randomMAC(rng *rand.Rand, prefix string) string {
	var b [6]byte
	v := rng.Uint64()
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	b[0] = b[0]&0xfe | 2
	addr := fmt.Sprintf("%02X:%02X:%02X:%02X:%02X:%02X", b[0], b[1], b[2], b[3], b[4], b[5])
	if prefix != "" {
		addr = strings.ToUpper(prefix) + addr[len(prefix):]
	}
	return addr
}

// randomUUID returns a version 4 UUID from rng (vmgenid "1" becomes one).
func randomUUID(rng *rand.Rand) string {
	var b [16]byte
	a, c := rng.Uint64(), rng.Uint64()
	for i := 0; i < 8; i++ {
		b[i] = byte(a >> (8 * i))
		b[8+i] = byte(c >> (8 * i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// encodeText escapes one description line for the config file: control
// characters, ':', '%', DEL and every non-ASCII byte (of the UTF-8 form)
// become %XX.
func encodeText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == ':' || c == '%' || c >= 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// decodeText reverses encodeText: %XX sequences decoded, then the bytes read
// as UTF-8.
func decodeText(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		out = append(out, s[i])
	}
	if !utf8.Valid(out) {
		return strings.ToValidUTF8(string(out), "\uFFFD")
	}
	return string(out)
}
