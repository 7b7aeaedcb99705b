package proxmox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// referenceConfig is how Config.unmarshalData read a config before it
// walked the object in place: through encoding/json into a map of raw
// messages. The walk must agree with it on every valid JSON value.
func referenceConfig(b []byte) (Config, error) {
	var cfg Config
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return cfg, fmt.Errorf("config is not an object: %v", err)
	}
	cfg.Values = make(map[string]string, len(m))
	for k, v := range m {
		switch k {
		case "digest":
			s, _, err := valueText(v)
			if err != nil {
				return cfg, fmt.Errorf("digest: %v", err)
			}
			cfg.Digest = s
			continue
		case "lxc":
			var pairs [][]string
			if json.Unmarshal(v, &pairs) == nil {
				for _, p := range pairs {
					if len(p) == 2 {
						cfg.LXCRaw = append(cfg.LXCRaw, [2]string{p[0], p[1]})
					}
				}
				continue
			}
		}
		s, ok, err := valueText(v)
		if err != nil {
			return cfg, fmt.Errorf("option %q: %v", k, err)
		}
		if ok {
			cfg.Values[k] = s
		}
	}
	return cfg, nil
}

// configSeeds are config objects (the data member), recorded and hostile.
func configSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	var seeds [][]byte
	for _, name := range []string{"v01-qemu-config-pve7.json", "v07-lxc-config-raw-keys.json"} {
		raw, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			tb.Fatal(err)
		}
		var env struct{ Data json.RawMessage }
		if err := json.Unmarshal(raw, &env); err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, env.Data)
	}
	for _, s := range []string{
		`{}`, `null`, ` { } `, `[]`, `"x"`, `1`, `true`,
		`{"cores":1,"cores":2}`,                   // last member counts
		`{"cores":1,"cores":null}`,                // a later null unsets
		`{"Cores":1,"cores":2,"CORES":3}`,         // names match exactly
		`{"digest":"a","digest":null}`,            // digest, last counts
		`{"lxc":[["lxc.a","b"]],"lxc":"x"}`,       // raw lines, then a plain value
		`{"lxc":"x","lxc":[["lxc.a","b"],["c"]]}`, // a plain value, then raw lines
		`{"lxc":[["a",1]]}`,                       // not pairs of strings: a value
		`{"lxc":null}`,
		`{"a\u0062":"\u00fc\n","\ud800":"x","a\"b":"c\\d"}`, // escaped names and values
		"{\"k\xff\":\"v\xfe\"}",                             // invalid UTF-8
		`{"a":{"b":[1,{"c":"}]"}]},"d":[],"e":{}}`,          // nesting, brackets in strings
		"{ \"a\" :\t1e3 ,\n\"b\" : -0.5 , \"c\":\"\" }",     // whitespace, numbers
		`{"description":"line one\nline two\r\n\ttabbed \\ \"quoted\""}`,
		`{"a":true,"b":false,"c":null}`,
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// compareWalk decodes b with walk and with reference, and fails t unless
// both fail or both give the same value.
func compareWalk[T any](t *testing.T, b []byte, reference func([]byte) (T, error), walk func(*T, []byte) error) {
	t.Helper()
	want, wantErr := reference(b)
	var got T
	gotErr := walk(&got, b)
	if (gotErr != nil) != (wantErr != nil) {
		t.Fatalf("%q: error %v, reference %v", b, gotErr, wantErr)
	}
	if gotErr != nil {
		return
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("%q: (-reference +walk):\n%s", b, diff)
	}
}

func compareConfigs(t *testing.T, b []byte) {
	t.Helper()
	compareWalk(t, b, referenceConfig, (*Config).unmarshalData)
}

func TestConfigWalkMatchesReference(t *testing.T) {
	for _, b := range configSeeds(t) {
		compareConfigs(t, b)
	}
}

// FuzzConfigWalk: on every valid JSON value the in-place walk reads the
// same Config as encoding/json did, and on any input it does not panic.
func FuzzConfigWalk(f *testing.F) {
	for _, b := range configSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			var cfg Config
			_ = cfg.unmarshalData(b) // must not panic
			_ = forEachMember(b, func(_, _ []byte) error { return nil })
			return
		}
		compareConfigs(t, b)
	})
}

// TestWalkStopsOnMalformed: the walkers are only given valid JSON, but a
// truncated or garbled one still ends in an error, not a panic or a loop.
func TestWalkStopsOnMalformed(t *testing.T) {
	for _, s := range []string{``, ` `, `{`, `{"a"`, `{"a":`, `{"a":1`, `{"a":1,`, `{"a":"x`, `{"a":[1,`, `{"a\`, `{a:1}`, `{"a" 1}`, `{"a":1 "b":2}`} {
		err := forEachMember([]byte(s), func(_, _ []byte) error { return nil })
		if err == nil {
			t.Errorf("%q: no error", s)
		}
		if strings.Contains(s, "{") && err != errNotValidJSON {
			t.Errorf("%q: error %v, want errNotValidJSON", s, err)
		}
	}
}

// referencePending is how pendingConfigData.unmarshalData read the rows
// before it walked them in place (through encoding/json into maps of raw
// messages), kept verbatim.
func referencePending(b []byte) (pendingConfigData, error) {
	var pc pendingConfigData
	err := referencePendingInto(&pc, b)
	return pc, err
}

func referencePendingInto(pc *pendingConfigData, b []byte) error {
	var rows []map[string]json.RawMessage
	if err := json.Unmarshal(b, &rows); err != nil {
		return fmt.Errorf("pending list: %v", err)
	}
	values := make(map[string]string, len(rows))
	items := make([]PendingItem, 0, len(rows))
	seen := make(map[string]bool, len(rows))
	var digest string
	haveDigest := false
	for i, row := range rows {
		if row == nil {
			return fmt.Errorf("pending row %d is null", i)
		}
		raw, ok := row["key"]
		if !ok {
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
		if v, ok := row["value"]; ok {
			if it.Value, it.HasValue, err = valueText(v); err != nil {
				return fmt.Errorf("pending %s value: %v", quoteValue(key), err)
			}
		}
		if v, ok := row["pending"]; ok {
			if it.Pending, it.HasPending, err = valueText(v); err != nil {
				return fmt.Errorf("pending %s pending value: %v", quoteValue(key), err)
			}
		}
		if v, ok := row["delete"]; ok {
			var d flexInt
			if err := d.UnmarshalJSON(v); err != nil || d < 0 || d > 2 {
				return fmt.Errorf("pending %s delete: not 0, 1 or 2", quoteValue(key))
			}
			it.Delete, it.Force = d != 0, d == 2
		}
		if key == "digest" {
			if !it.HasValue || it.IsPending() || !isDigest(it.Value) {
				return fmt.Errorf("pending digest row is not a 40-digit hex digest")
			}
			digest, haveDigest = it.Value, true
			continue
		}
		items = append(items, it)
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

// pendingSeeds are pending answers' data, recorded shapes and hostile.
func pendingSeeds() [][]byte {
	var seeds [][]byte
	const d = `{"key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"}`
	for _, s := range []string{
		`[` + d + `,{"key":"cores","value":2,"pending":4},{"key":"onboot","value":0,"delete":1},{"key":"tablet","value":1,"delete":2}]`,
		`[` + d + `,{"key":"a","value":1,"value":2}]`,                                  // last member counts
		`[` + d + `,{"key":"a","key":"b","value":1}]`,                                  // the key too
		`[` + d + `,{"key":"a","Key":"b","VALUE":1,"Value":2,"Pending":3,"Delete":1}]`, // names match exactly
		`[{"Key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"}]`,        // no key member
		`[` + d + `,{"key":"a","delete":"2","pending":null}]`,
		`[` + d + `,{"key":"a","value":"x","extra":{"key":"b"}}]`, // a nested key does not count
		`[` + d + `,{"k\u0065y":"a","value":"\u00fc\n"}]`,         // an escaped member name
		`[` + d + `,null]`, `[` + d + `,1]`, `[` + d + `,[]]`, `[` + d + `,"x"]`,
		`[]`, `null`, `{}`, `"x"`, ` [ ` + d + ` ] `,
		"[" + d + ",{\"key\":\"a\xff\",\"value\":\"\xfe\"}]",
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

func comparePending(t *testing.T, b []byte) {
	t.Helper()
	compareWalk(t, b, referencePending, (*pendingConfigData).unmarshalData)
}

func TestPendingWalkMatchesReference(t *testing.T) {
	for _, b := range pendingSeeds() {
		comparePending(t, b)
	}
}

// FuzzPendingWalk: on every valid JSON value the in-place walk of the rows
// reads what encoding/json read, and on any input it does not panic.
func FuzzPendingWalk(f *testing.F) {
	for _, b := range pendingSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			var pc pendingConfigData
			_ = pc.unmarshalData(b) // must not panic
			return
		}
		comparePending(t, b)
	})
}
