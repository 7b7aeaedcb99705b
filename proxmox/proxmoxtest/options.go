package proxmoxtest

import (
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// Option configures a [Server] at construction. Options are applied in
// order; a later option overrides an earlier one of the same kind, except
// [WithAPIToken], [WithUser] and [WithStorage], which accumulate. An Option
// is an immutable value and may be shared between servers and goroutines.
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

// StorageKind selects how a fake storage names the volumes it allocates.
// It is a plain string value.
type StorageKind string

// Storage kinds. Each allocates volumes the way the Proxmox plugin of the
// same name does.
const (
	StorageDir     StorageKind = "dir"     // "local:100/vm-100-disk-0.qcow2" (containers: .raw)
	StorageLVMThin StorageKind = "lvmthin" // "local-lvm:vm-100-disk-0"
	StorageZFS     StorageKind = "zfspool" // "tank:vm-100-disk-0", containers "tank:subvol-100-disk-0"
)

type tokenSpec struct {
	id, secret string
}

type storageSpec struct {
	id   string
	kind StorageKind
}

type config struct {
	version        version
	qemuServer     *semver // WithQemuServerVersion; copied into version at NewServer
	tagStyle       TagStyle
	nodes          []string
	tokens         []tokenSpec
	users          map[string]string
	ticketLifetime time.Duration
	authDelay      time.Duration
	clock          Clock
	taskDuration   time.Duration
	manualTasks    bool
	hiddenPolls    int
	storages       []storageSpec
	macPrefix      *string
	seed           uint64
	logger         *slog.Logger
	logLimit       int
	latency        time.Duration            // WithLatency
	nodeLatency    map[string]time.Duration // WithNodeLatency
	nodeWorkers    int                      // WithNodeWorkers; 0: no limit
}

func defaultConfig() *config {
	v, _ := parseVersion(DefaultVersion)
	return &config{
		version:        v,
		users:          map[string]string{},
		ticketLifetime: 2 * time.Hour,
		clock:          realClock{},
		taskDuration:   2 * time.Millisecond,
		seed:           1,
		logLimit:       10000,
	}
}

// WithVersion selects the Proxmox VE release to emulate, for example
// [PVE74] or "8.2.4". It decides response typing, error texts and limits;
// see the package documentation for the table. Default [DefaultVersion].
func WithVersion(v string) Option {
	return optionFunc(func(c *config) error {
		pv, err := parseVersion(v)
		if err != nil {
			return err
		}
		c.version = pv
		return nil
	})
}

// WithQemuServerVersion pins the qemu-server package version ("9.1.18",
// "8.2.4-1") behind the QEMU behaviours that changed with it: memory as a
// string (8.0.8), the "resize" task (8.0.2), the digest text's spelling
// (8.2.5) and where an asynchronous config update takes the config lock
// (9.1.19). Unpinned, each follows the [WithVersion] release that first
// shipped it, as the package documentation's version table says.
func WithQemuServerVersion(v string) Option {
	return optionFunc(func(c *config) error {
		sv, err := parseSemver(v)
		if err != nil {
			return err
		}
		if sv.major < 7 || sv.major > 9 {
			return fmt.Errorf("proxmoxtest: qemu-server %q: only qemu-server 7, 8 and 9 are emulated", v)
		}
		c.qemuServer = &sv
		return nil
	})
}

// TagStyle is the part of datacenter.cfg's tag-style that decides how
// Proxmox stores a guest's tags. The zero value is Proxmox's default:
// sorted case-insensitively and lower-cased. It is a plain value.
type TagStyle struct {
	// CaseSensitive keeps each tag's case; tags that differ only in case
	// are then distinct, and sorting compares code points, so upper case
	// sorts before lower case ("B" before "a").
	CaseSensitive bool
	// ConfigOrder keeps the order the tags were given in (ordering
	// "config") instead of sorting them.
	ConfigOrder bool
}

// WithTagStyle sets the cluster's tag style (datacenter.cfg tag-style
// case-sensitive and ordering). Default: the zero [TagStyle].
func WithTagStyle(st TagStyle) Option {
	return optionFunc(func(c *config) error {
		c.tagStyle = st
		return nil
	})
}

// WithNodes names the cluster's nodes, in order; the first is the node the
// API is served from ("localhost" in a path means it). Default: one node,
// "pve".
func WithNodes(names ...string) Option {
	return optionFunc(func(c *config) error {
		if len(names) == 0 {
			return fmt.Errorf("proxmoxtest: WithNodes needs at least one node")
		}
		seen := map[string]bool{}
		for _, n := range names {
			if !proxmox.ValidNodeName(n) || n == "localhost" {
				return fmt.Errorf("proxmoxtest: %q is not a usable node name", n)
			}
			if seen[n] {
				return fmt.Errorf("proxmoxtest: node %q named twice", n)
			}
			seen[n] = true
		}
		c.nodes = append([]string(nil), names...)
		return nil
	})
}

var tokenIDRE = regexp.MustCompile(`^([^\s:!@]+@[A-Za-z][A-Za-z0-9.\-_]+)!([A-Za-z][A-Za-z0-9.\-_]+)$`)

// WithAPIToken adds an API token the server accepts: id is
// "user@realm!name", secret the token value (Proxmox issues UUIDs; any
// non-empty string without ';' works here). The first token added is the one
// [Server.APIToken] returns. Without this option the server makes one
// token, "root@pam!guestward", with a random secret.
func WithAPIToken(id, secret string) Option {
	return optionFunc(func(c *config) error {
		if !tokenIDRE.MatchString(id) {
			return fmt.Errorf("proxmoxtest: %q is not a token id of the form user@realm!name", id)
		}
		if secret == "" || containsAny(secret, ";\r\n") {
			return fmt.Errorf("proxmoxtest: token %s: the secret must be non-empty and free of ';' and newlines", id)
		}
		for _, t := range c.tokens {
			if t.id == id {
				return fmt.Errorf("proxmoxtest: token %s added twice", id)
			}
		}
		c.tokens = append(c.tokens, tokenSpec{id: id, secret: secret})
		return nil
	})
}

var userIDRE = regexp.MustCompile(`^[^\s:!@/]+@[A-Za-z][A-Za-z0-9.\-_]+$`)

// WithUser adds a user who can log in with a password through
// POST /access/ticket, enabling ticket authentication (cookie
// PVEAuthCookie plus the CSRFPreventionToken header on writes).
// userid is "user@realm", for example "root@pam".
func WithUser(userid, password string) Option {
	return optionFunc(func(c *config) error {
		if !userIDRE.MatchString(userid) {
			return fmt.Errorf("proxmoxtest: %q is not a user id of the form user@realm", userid)
		}
		if password == "" {
			return fmt.Errorf("proxmoxtest: user %s: empty password", userid)
		}
		c.users[userid] = password
		return nil
	})
}

// WithTicketLifetime sets how long a ticket (and its CSRF token) stays
// valid, measured on the server's [Clock] in whole seconds: as in Proxmox,
// a ticket whose age reaches the lifetime is refused. Proxmox uses 2
// hours, the default; tests of ticket renewal usually shorten it or use a
// [ManualClock].
func WithTicketLifetime(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("proxmoxtest: ticket lifetime %v is not positive", d)
		}
		c.ticketLifetime = d
		return nil
	})
}

// WithAuthFailureDelay delays every 401 response by d, as Proxmox does
// (3 s). The default is no delay, so failing-auth tests stay fast.
func WithAuthFailureDelay(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < 0 {
			return fmt.Errorf("proxmoxtest: negative auth failure delay %v", d)
		}
		c.authDelay = d
		return nil
	})
}

// WithClock replaces the wall clock the server reads for ticket ages and
// task and uptime timestamps. See [ManualClock].
func WithClock(clk Clock) Option {
	return optionFunc(func(c *config) error {
		if clk == nil {
			return fmt.Errorf("proxmoxtest: nil clock")
		}
		c.clock = clk
		return nil
	})
}

// WithTaskDuration sets how long, in real time, each task stays "running"
// before it does its work and stops. Zero finishes tasks as soon as the
// server's scheduler gets to them (still after the response that returned the
// UPID). Default 2 ms. A demo may prefer seconds; deterministic tests
// should use [WithManualTasks] instead of relying on any duration.
func WithTaskDuration(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < 0 {
			return fmt.Errorf("proxmoxtest: negative task duration %v", d)
		}
		c.taskDuration = d
		return nil
	})
}

// WithManualTasks keeps every task running until the test finishes it with
// [Server.FinishTask] or [Server.FinishTasks]. Nothing then depends on time.
func WithManualTasks() Option {
	return optionFunc(func(c *config) error {
		c.manualTasks = true
		return nil
	})
}

// WithTaskVisibilityDelay makes the first n status or log requests for each
// new task answer as for an unknown task (400 "no such task" for status),
// emulating the short window in which a freshly forked worker has no task
// file yet. The count is per task, so tests stay deterministic. Default 0.
func WithTaskVisibilityDelay(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 0 {
			return fmt.Errorf("proxmoxtest: negative task visibility delay %d", n)
		}
		c.hiddenPolls = n
		return nil
	})
}

var storageIDRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]$`)

// WithStorage adds a storage, present on every node, that disks in
// "storage:size" form can be allocated on. Without this option the
// cluster has "local" ([StorageDir]) and "local-lvm" ([StorageLVMThin]).
func WithStorage(id string, kind StorageKind) Option {
	return optionFunc(func(c *config) error {
		if !storageIDRE.MatchString(id) {
			return fmt.Errorf("proxmoxtest: %q is not a valid storage id", id)
		}
		switch kind {
		case StorageDir, StorageLVMThin, StorageZFS:
		default:
			return fmt.Errorf("proxmoxtest: storage %s: unknown kind %q", id, kind)
		}
		for _, s := range c.storages {
			if s.id == id {
				return fmt.Errorf("proxmoxtest: storage %s added twice", id)
			}
		}
		c.storages = append(c.storages, storageSpec{id: id, kind: kind})
		return nil
	})
}

var macPrefixRE = regexp.MustCompile(`^(?:[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){0,4})?$`)

// WithMACPrefix sets datacenter.cfg's mac_prefix, the leading octets of
// every MAC address the server generates. "" means fully random (locally
// administered). The default follows the emulated version: "BC:24:11" from
// PVE 8.1, "" before.
func WithMACPrefix(prefix string) Option {
	return optionFunc(func(c *config) error {
		if !macPrefixRE.MatchString(prefix) {
			return fmt.Errorf("proxmoxtest: %q is not a MAC prefix of the form XX:XX:XX", prefix)
		}
		if prefix != "" {
			var b byte
			fmt.Sscanf(prefix[:2], "%02x", &b)
			if b&1 != 0 {
				return fmt.Errorf("proxmoxtest: MAC prefix %q has the multicast bit set", prefix)
			}
		}
		c.macPrefix = &prefix
		return nil
	})
}

// WithSeed seeds the generator of MAC addresses and generated UUIDs, so that
// runs which issue the same writes in the same order see the same values.
// Default 1.
func WithSeed(seed uint64) Option {
	return optionFunc(func(c *config) error {
		c.seed = seed
		return nil
	})
}

// WithLogger makes the server log requests and task transitions at debug
// level, and internal HTTP errors at warn level. Secrets (token values,
// tickets, passwords) are never logged. nil (the default) discards.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) error {
		c.logger = l
		return nil
	})
}

// WithRequestLogLimit bounds the request log [Server.Requests] returns to
// n entries; when it is full the older half is discarded, so the most recent
// n/2 entries at least are always there. 0 disables the log. Default 10000.
func WithRequestLogLimit(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 0 {
			return fmt.Errorf("proxmoxtest: negative request log limit %d", n)
		}
		c.logLimit = n
		return nil
	})
}

func containsAny(s, chars string) bool {
	for i := 0; i < len(s); i++ {
		for j := 0; j < len(chars); j++ {
			if s[i] == chars[j] {
				return true
			}
		}
	}
	return false
}
