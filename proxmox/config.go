package proxmox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"unicode/utf8"
)

// Config is a guest's configuration as Proxmox reports it.
//
// Values holds every option as a string, whatever JSON type Proxmox used:
// strings as they are, numbers in the exact digits sent ("2048", "0.4"),
// JSON booleans as "1"/"0". The digest is not among the Values. A key that
// is absent is unset (Proxmox's default applies).
//
// Each call returns a new Config that the client does not keep: the caller
// owns it, and it is safe for concurrent reads.
type Config struct {
	Values map[string]string
	// Digest is the SHA-1 (40 hex digits) of the guest's config file,
	// pending section included. Send it back in [ConfigChange.Digest] to
	// make a write fail with [ErrDigestMismatch] if someone else changed
	// the config in between.
	Digest string
	// LXCRaw holds an LXC container's raw "lxc.*" lines as [key, value]
	// pairs, in file order; nil for QEMU and for containers without them.
	// They are not in Values.
	LXCRaw [][2]string
}

// unmarshalData reads the config object that decodeData has checked is
// valid JSON, walking its members in place (see forEachMember) rather
// than through a map of copied raw messages. It gives the result
// encoding/json into map[string]json.RawMessage would: member names match
// exactly, and of a name given twice the last member counts, so each
// member first undoes what an earlier one of its name did.
func (cfg *Config) unmarshalData(b []byte) error {
	cfg.Values = make(map[string]string, min(len(b)/32, 256))
	var optErr error
	err := forEachMember(b, func(name, v []byte) error {
		k := string(name)
		switch k {
		case "digest":
			s, _, err := valueText(v)
			if err != nil {
				optErr = fmt.Errorf("digest: %v", err)
				return optErr
			}
			cfg.Digest = s
			return nil
		case "lxc":
			cfg.LXCRaw = nil
			delete(cfg.Values, k)
			var pairs [][]string
			if json.Unmarshal(v, &pairs) == nil {
				for _, p := range pairs {
					if len(p) == 2 {
						cfg.LXCRaw = append(cfg.LXCRaw, [2]string{p[0], p[1]})
					}
				}
				return nil
			}
		}
		s, ok, err := valueText(v)
		if err != nil {
			optErr = fmt.Errorf("option %q: %v", k, err)
			return optErr
		}
		if ok {
			cfg.Values[k] = s
		} else {
			delete(cfg.Values, k)
		}
		return nil
	})
	if err != nil && err != optErr {
		return fmt.Errorf("config is not an object: %v", err)
	}
	return err
}

// Config reads a guest's configuration with GET
// /nodes/{node}/{type}/{vmid}/config, which returns the configuration with
// pending changes applied: a value changed while the guest runs, that takes
// effect at its next restart, shows as its new value here, and a pending
// deletion shows as absent. This is what the guest will run with after its
// next restart, and what a write builds on; compare desired state against
// it, so a change already made is never sent twice. [Client.Pending] tells
// which of these values are not in effect yet, and [Client.CurrentConfig]
// returns the values in effect now.
//
// A guest that does not exist on ref.Node yields an error matching
// [ErrNotFound]. An invalid ref is refused before any request with
// [ErrInvalidRef].
func (c *Client) Config(ctx context.Context, ref Ref) (Config, error) {
	return c.config(ctx, ref, false)
}

// CurrentConfig is [Client.Config] with current=1: the values in effect
// now, without pending changes. Its Digest is the same as Config's.
func (c *Client) CurrentConfig(ctx context.Context, ref Ref) (Config, error) {
	return c.config(ctx, ref, true)
}

func (c *Client) config(ctx context.Context, ref Ref, current bool) (Config, error) {
	if err := ref.Validate(); err != nil {
		return Config{}, err
	}
	r := &request{method: http.MethodGet, path: guestPath(ref, "/config")}
	if current {
		r.query = url.Values{"current": {"1"}}
	}
	var cfg Config
	if err := c.call(ctx, r, &cfg); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// PendingItem is one option of a guest's configuration with its pending
// state, from [Client.Pending]. It is a plain value, safe for concurrent
// use.
type PendingItem struct {
	Key string
	// Value is the value in effect now; HasValue is false when the option
	// is not set now (it only exists as a pending addition).
	Value    string
	HasValue bool
	// Pending is the value that takes effect at the next restart;
	// HasPending is false when there is no pending value.
	Pending    string
	HasPending bool
	// Delete is true when the option is pending deletion; Force when that
	// deletion was forced (Proxmox's delete: 2).
	Delete bool
	Force  bool
}

// IsPending reports whether the option has a change that is not in effect
// yet.
func (p PendingItem) IsPending() bool { return p.HasPending || p.Delete }

type pendingEntry struct {
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
	Pending json.RawMessage `json:"pending"`
	Delete  flexInt         `json:"delete"`
}

type pendingList []PendingItem

func (pl *pendingList) unmarshalData(b []byte) error {
	var entries []pendingEntry
	if err := json.Unmarshal(b, &entries); err != nil {
		return fmt.Errorf("pending list: %v", err)
	}
	out := make([]PendingItem, 0, len(entries))
	for _, e := range entries {
		if e.Key == "" || e.Key == "digest" {
			continue
		}
		it := PendingItem{Key: e.Key, Delete: e.Delete != 0, Force: e.Delete == 2}
		var err error
		if len(e.Value) > 0 {
			if it.Value, it.HasValue, err = valueText(e.Value); err != nil {
				return fmt.Errorf("pending %q value: %v", e.Key, err)
			}
		}
		if len(e.Pending) > 0 {
			if it.Pending, it.HasPending, err = valueText(e.Pending); err != nil {
				return fmt.Errorf("pending %q pending value: %v", e.Key, err)
			}
		}
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	*pl = out
	return nil
}

// Pending lists every option of a guest's configuration with its current
// value and any pending change, from GET
// /nodes/{node}/{type}/{vmid}/pending, sorted by key. The digest row that
// Proxmox includes is left out (read it from [Client.Config]). Changes
// become pending when they cannot be applied to a running guest (for
// example QEMU cores); a restart applies them.
func (c *Client) Pending(ctx context.Context, ref Ref) ([]PendingItem, error) {
	if err := ref.Validate(); err != nil {
		return nil, err
	}
	var pl pendingList
	if err := c.call(ctx, &request{method: http.MethodGet, path: guestPath(ref, "/pending")}, &pl); err != nil {
		return nil, err
	}
	return pl, nil
}

// ConfigChange is one update of a guest's configuration. [Client.SetConfig]
// and [ConfigChange.Validate] only read it and keep no reference, so one
// change may be used by concurrent calls as long as nobody modifies it.
type ConfigChange struct {
	// Set maps option names to new values, as Proxmox's API takes them:
	// booleans as "1"/"0", property strings as "key=value,...", tag lists
	// separated by ';'. Values are sent as given; the client does not
	// rewrite them.
	Set map[string]string
	// Delete lists options to remove (reset to their default).
	Delete []string
	// Digest, when not empty, is the [Config.Digest] the change was
	// planned against; Proxmox then refuses the change with
	// [ErrDigestMismatch] if the config changed since.
	Digest string
}

// ErrInvalidConfig is returned, wrapped, by [ConfigChange.Validate] and
// [Client.SetConfig] for a change Proxmox would refuse or that would
// corrupt the guest's config file. Nothing is sent.
var ErrInvalidConfig = errors.New("proxmox: invalid config change")

// Limits Proxmox enforces: the description's maxLength in the qemu-server
// and pve-container schemas, and pve-api-daemon's request body limit.
const (
	// MaxDescription is the longest description Proxmox accepts, in
	// characters.
	MaxDescription = 8192
	// maxBody is the largest POST/PUT body every supported Proxmox
	// version accepts (64 KiB before PVE 8.4).
	maxBody = 64 << 10
)

// controlParam reports why k, a parameter of the config endpoints that is
// not an option, cannot be used as one; "" for an option name.
func controlParam(k string) string {
	switch strings.ToLower(k) {
	case "digest":
		return "use ConfigChange.Digest"
	case "delete":
		return "use ConfigChange.Delete"
	case "revert":
		return "reverting pending changes is not supported"
	case "skiplock":
		return "skipping the lock is not supported"
	case "force":
		return "forced deletion is not supported"
	case "background_delay":
		return "waiting inside Proxmox is not supported; use WaitTask"
	case "node", "vmid":
		return "it is part of the Ref"
	case "import-working-storage":
		return "importing is not supported"
	}
	return ""
}

// Validate checks the change against Proxmox's rules that do not depend on
// the guest: it is not empty; option names are valid (pve-configid) and
// not control parameters; no option is both set and deleted; values are
// valid UTF-8 without NUL; only "description" may contain line breaks
// (elsewhere they would corrupt the line-based config file); the
// description has at most [MaxDescription] characters; the digest is 40
// hex digits; and the encoded request fits Proxmox's 64 KiB body limit.
// Everything else (value formats, ranges, option names that do not exist)
// is Proxmox's to judge. The error wraps [ErrInvalidConfig].
func (ch ConfigChange) Validate() error {
	_, _, err := ch.check()
	return err
}

// check validates ch, and returns the options to delete in their first
// order without repeats, and the size of the encoded request. It builds
// nothing: it measures the request as form would build it, name=value
// pairs joined by '&'.
func (ch ConfigChange) check() (del []string, size int, err error) {
	if len(ch.Set) == 0 && len(ch.Delete) == 0 {
		return nil, 0, fmt.Errorf("%w: nothing to set or delete", ErrInvalidConfig)
	}
	param := func(k, v string) {
		size += queryLen(k) + 1 + queryLen(v)
	}
	for k, v := range ch.Set {
		if err := checkKey(k); err != nil {
			return nil, 0, err
		}
		if !utf8.ValidString(v) {
			return nil, 0, fmt.Errorf("%w: value of %q is not valid UTF-8", ErrInvalidConfig, k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, 0, fmt.Errorf("%w: value of %q contains a NUL byte", ErrInvalidConfig, k)
		}
		if k == "description" {
			if n := utf8.RuneCountInString(v); n > MaxDescription {
				return nil, 0, fmt.Errorf("%w: description has %d characters; Proxmox accepts at most %d", ErrInvalidConfig, n, MaxDescription)
			}
		} else if strings.ContainsAny(v, "\r\n") {
			return nil, 0, fmt.Errorf("%w: value of %q contains a line break; only description may", ErrInvalidConfig, k)
		}
		param(k, v)
	}
	params := len(ch.Set)
	if len(ch.Delete) > 0 {
		del = make([]string, 0, len(ch.Delete))
		seen := make(map[string]bool, len(ch.Delete))
		joined := -1 // the separating commas, each encoded as %2C
		for _, k := range ch.Delete {
			if err := checkKey(k); err != nil {
				return nil, 0, err
			}
			if _, ok := ch.Set[k]; ok {
				return nil, 0, fmt.Errorf("%w: option %q is both set and deleted", ErrInvalidConfig, k)
			}
			if !seen[k] {
				seen[k] = true
				del = append(del, k)
				joined += 3 + queryLen(k)
			}
		}
		size += len("delete=") + joined - 2
		params++
	}
	if ch.Digest != "" {
		if !isDigest(ch.Digest) {
			return nil, 0, fmt.Errorf("%w: digest %.50q is not 40 hex digits", ErrInvalidConfig, ch.Digest)
		}
		size += len("digest=") + len(ch.Digest)
		params++
	}
	if size += params - 1; size > maxBody {
		return nil, 0, fmt.Errorf("%w: encoded change is %d bytes; Proxmox accepts at most %d", ErrInvalidConfig, size, maxBody)
	}
	return del, size, nil
}

// form validates ch and returns the request that makes it.
func (ch ConfigChange) form() (url.Values, error) {
	del, _, err := ch.check()
	if err != nil {
		return nil, err
	}
	form := make(url.Values, len(ch.Set)+2)
	for k, v := range ch.Set {
		form[k] = []string{v}
	}
	if len(del) > 0 {
		form["delete"] = []string{strings.Join(del, ",")}
	}
	if ch.Digest != "" {
		form["digest"] = []string{ch.Digest}
	}
	return form, nil
}

// queryLen is len(url.QueryEscape(s)), counted: the bytes it leaves as
// they are (ASCII letters, digits and "-_.~") and the space (a '+') take
// one byte each, every other byte three (%XX).
func queryLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		if c := s[i]; !queryPlain(c) && c != ' ' {
			n += 2
		}
	}
	return n
}

func queryPlain(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '~'
}

// checkKey refuses what is not an option name: Proxmox's pve-configid, an
// ASCII letter and then at least one ASCII letter, digit, '_' or '-' (in
// either case; Proxmox's own names are lower-case), or a control
// parameter of the config endpoints.
func checkKey(k string) error {
	if !isConfigKey(k) {
		return fmt.Errorf("%w: %.80q is not a valid option name", ErrInvalidConfig, k)
	}
	if why := controlParam(k); why != "" {
		return fmt.Errorf("%w: %q is not an option: %s", ErrInvalidConfig, k, why)
	}
	return nil
}

func isConfigKey(k string) bool {
	if len(k) < 2 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i] | 0x20 // ASCII lower case for letters
		switch {
		case 'a' <= c && c <= 'z':
		case i > 0 && ('0' <= k[i] && k[i] <= '9' || k[i] == '_' || k[i] == '-'):
		default:
			return false
		}
	}
	return true
}

// isDigest reports whether s is a config digest: SHA-1 in hex, 40 digits.
func isDigest(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// SetConfig changes a guest's configuration. The two guest types differ,
// and callers must handle both:
//
//   - QEMU: POST /nodes/{node}/qemu/{vmid}/config. Proxmox checks the
//     digest and the lock synchronously (failing with [ErrDigestMismatch]
//     or [ErrLocked]) and then applies the change in a task, whose UPID is
//     returned: the change is done only when [Client.WaitTask] says so,
//     and hot-plug failures surface there.
//   - LXC: PUT /nodes/{node}/lxc/{vmid}/config. The change is applied
//     before the call returns, and the UPID is "".
//
// On a running guest, options that cannot be changed live become pending
// (see [Client.Pending]) instead of failing.
//
// The change is validated first ([ConfigChange.Validate]); an invalid
// change or ref is refused before any request. Like every write, the
// request is never re-sent once it may have reached Proxmox; an error
// matching [ErrOutcomeUnknown] means the change may or may not have been
// made.
func (c *Client) SetConfig(ctx context.Context, ref Ref, ch ConfigChange) (UPID, error) {
	if err := ref.Validate(); err != nil {
		return "", err
	}
	form, err := ch.form()
	if err != nil {
		return "", fmt.Errorf("proxmox: set config of %s: %w", ref, err)
	}
	method := http.MethodPost
	if ref.Type == LXC {
		method = http.MethodPut
	}
	var u upidData
	r := &request{method: method, path: guestPath(ref, "/config"), form: form}
	if err := c.call(ctx, r, &u); err != nil {
		return "", err
	}
	switch {
	case u == "" && ref.Type == QEMU:
		// Only background_delay, which is never sent, makes the POST
		// answer null: the change's task is unknown.
		return "", c.answerErr(r.method, r.path, fmt.Errorf("%w: no UPID in the answer", ErrUnexpectedResponse))
	case u != "":
		if err := checkTaskOf(UPID(u), ref); err != nil {
			return "", c.answerErr(r.method, r.path, err)
		}
	}
	return UPID(u), nil
}

// upidData is the data of a call that may start a task: a UPID, or null
// when the call completed synchronously.
type upidData UPID

func (*upidData) acceptsNull() {}

func (u *upidData) unmarshalData(b []byte) error {
	s, ok, err := valueText(b)
	if err != nil {
		return err
	}
	if !ok {
		*u = ""
		return nil
	}
	if _, err := ParseUPID(s); err != nil {
		return fmt.Errorf("expected a UPID or null: %v", err)
	}
	*u = upidData(s)
	return nil
}
