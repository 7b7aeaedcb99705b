package proxmox

import (
	"context"
	"fmt"
	"net/http"
	"sort"
)

// PendingConfig is a guest's configuration read in one request by
// [Client.PendingConfig]: the configuration with pending changes applied,
// its digest, and every option's current and pending state.
//
// Each call returns a new PendingConfig that the client does not keep: the
// caller owns it, and it is safe for concurrent reads.
type PendingConfig struct {
	// Config holds the values [Client.Config] returns (pending values
	// applied, pending deletions removed, the digest apart), built the
	// way Proxmox builds that answer. Its LXCRaw is always nil: Proxmox
	// leaves a container's raw "lxc.*" lines out of this endpoint.
	Config Config
	// Items lists every option with its current value and pending change,
	// sorted by key, as [Client.Pending] returns them.
	Items []PendingItem
}

// Lock returns the guest's config lock ("backup", "migrate", ...), "" if
// none. The lock is an option of the config file, so it is as current as
// the rest of the configuration.
func (p PendingConfig) Lock() string { return p.Config.Values["lock"] }

// Template reports whether the guest is a template ("template: 1" in its
// config file).
func (p PendingConfig) Template() bool {
	v, ok := parseBool(p.Config.Values["template"])
	return ok && v
}

// Changes returns the items that have a change not in effect yet.
func (p PendingConfig) Changes() []PendingItem {
	var out []PendingItem
	for _, it := range p.Items {
		if it.IsPending() {
			out = append(out, it)
		}
	}
	return out
}

// PendingConfig reads a guest's configuration, its digest, its lock and its
// pending changes with the single request GET
// /nodes/{node}/{type}/{vmid}/pending, where [Client.Config] and
// [Client.Pending] take two.
//
// Proxmox answers it (qemu-server's and pve-container's vm_pending, both
// through pve-guest-common's PVE::GuestHelpers::config_with_pending_array)
// from the config file as loaded for GET config: one row per option of
// the file, with "value" the value in effect and "pending" and "delete"
// for a pending change, then rows for options that exist only as pending
// values or pending deletions. Every top-level key of the parsed file is
// a row, so the digest (the SHA-1 that parse_vm_config and
// parse_pct_config add as "digest") and the lock ("lock" is a config
// option) are in it, read under the same file version as the values:
// writing with that digest is as safe as with [Client.Config]'s. Raw
// "lxc.*" lines, being arrays, are not rows.
//
// The merged Config follows PVE::AbstractConfig::load_current_config,
// which GET config uses: pending values replace current ones, and a pending
// deletion removes an option only when its current value is true to Perl
// (neither empty nor "0"), so a pending deletion of "onboot: 0" still
// shows "0" there and here. A QEMU "cipassword" is masked, as in both
// answers.
//
// An answer without a digest row, with a digest that is not 40 hex
// digits, with a row without a key, or with the same key twice is refused
// with [ErrUnexpectedResponse]: the digest guards every write against a
// concurrent change and is never guessed. A guest that does not exist on
// ref.Node yields an error matching [ErrNotFound]; an invalid ref is
// refused before any request with [ErrInvalidRef].
func (c *Client) PendingConfig(ctx context.Context, ref Ref) (PendingConfig, error) {
	if err := ref.Validate(); err != nil {
		return PendingConfig{}, err
	}
	var pc pendingConfigData
	if err := c.call(ctx, &request{method: http.MethodGet, path: guestPath(ref, "/pending")}, &pc); err != nil {
		return PendingConfig{}, err
	}
	if _, ok := pc.Config.Values["cipassword"]; ok && ref.Type == QEMU {
		// vm_pending masks a pending cloud-init password as "**********
		// " (a trailing space tells it from the current one); GET config
		// masks whichever applies as "**********".
		pc.Config.Values["cipassword"] = "**********"
	}
	return PendingConfig(pc), nil
}

type pendingConfigData PendingConfig

// unmarshalData parses config_with_pending_array's rows. Members are
// matched by their exact names ("key", "value", "pending", "delete"), as
// Perl writes them; a row whose key member is spelled otherwise has no key
// and is refused.
func (pc *pendingConfigData) unmarshalData(b []byte) error {
	// Rows are walked in place (see forEachMember), as encoding/json into
	// []map[string]json.RawMessage would read them: exact member names,
	// the last of a name given twice.
	n := 0
	if err := forEachElement(b, func(int, []byte) error { n++; return nil }); err != nil {
		return fmt.Errorf("pending list: %v", err)
	}
	values := make(map[string]string, n)
	items := make([]PendingItem, 0, n)
	seen := make(map[string]bool, n)
	var digest string
	haveDigest := false
	err := forEachElement(b, func(i int, elem []byte) error {
		if elem[0] == 'n' {
			return fmt.Errorf("pending row %d is null", i)
		}
		var raw, value, pending, del []byte
		err := forEachMember(elem, func(name, v []byte) error {
			// string(name) == constant allocates nothing.
			switch {
			case string(name) == "key":
				raw = v
			case string(name) == "value":
				value = v
			case string(name) == "pending":
				pending = v
			case string(name) == "delete":
				del = v
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("pending list: row %d: %v", i, err)
		}
		if raw == nil {
			return fmt.Errorf("pending row %d has no key", i)
		}
		key, ok, err := valueText(raw)
		if err != nil || !ok || key == "" {
			return fmt.Errorf("pending row %d: key is not a name", i)
		}
		if seen[key] {
			return fmt.Errorf("pending row %d: key %s appears twice", i, quoteValue(key))
		}
		seen[key] = true
		it := PendingItem{Key: key}
		if value != nil {
			if it.Value, it.HasValue, err = valueText(value); err != nil {
				return fmt.Errorf("pending %s value: %v", quoteValue(key), err)
			}
		}
		if pending != nil {
			if it.Pending, it.HasPending, err = valueText(pending); err != nil {
				return fmt.Errorf("pending %s pending value: %v", quoteValue(key), err)
			}
		}
		if del != nil {
			var d flexInt
			if err := d.UnmarshalJSON(del); err != nil || d < 0 || d > 2 {
				return fmt.Errorf("pending %s delete: not 0, 1 or 2", quoteValue(key))
			}
			it.Delete, it.Force = d != 0, d == 2
		}
		if key == "digest" {
			if !it.HasValue || it.IsPending() || !isDigest(it.Value) {
				return fmt.Errorf("pending digest row is not a 40-digit hex digest")
			}
			digest, haveDigest = it.Value, true
			return nil
		}
		items = append(items, it)
		return nil
	})
	if err != nil {
		return err
	}
	if !haveDigest {
		return fmt.Errorf("pending list has no digest row")
	}
	// load_current_config: current values, then pending values over
	// them, then pending deletions of true values.
	for _, it := range items {
		if it.HasValue {
			values[it.Key] = it.Value
		}
	}
	for _, it := range items {
		if it.HasPending {
			values[it.Key] = it.Pending
		}
	}
	for _, it := range items {
		if it.Delete {
			if v, ok := values[it.Key]; ok && perlTrue(v) {
				delete(values, it.Key)
			}
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Key < items[j].Key })
	*pc = pendingConfigData{Config: Config{Values: values, Digest: digest}, Items: items}
	return nil
}

// perlTrue is Perl's truth of a scalar string: anything but "" and "0".
func perlTrue(s string) bool { return s != "" && s != "0" }
