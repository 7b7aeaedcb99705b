package proxmox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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

func compareConfigs(t *testing.T, b []byte) {
	t.Helper()
	want, wantErr := referenceConfig(b)
	var got Config
	gotErr := got.unmarshalData(b)
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
			_ = forEachMember(b, func(string, []byte) error { return nil })
			return
		}
		compareConfigs(t, b)
	})
}

// TestWalkStopsOnMalformed: the walkers are only given valid JSON, but a
// truncated or garbled one still ends in an error, not a panic or a loop.
func TestWalkStopsOnMalformed(t *testing.T) {
	for _, s := range []string{``, ` `, `{`, `{"a"`, `{"a":`, `{"a":1`, `{"a":1,`, `{"a":"x`, `{"a":[1,`, `{"a\`, `{a:1}`, `{"a" 1}`, `{"a":1 "b":2}`} {
		err := forEachMember([]byte(s), func(string, []byte) error { return nil })
		if err == nil {
			t.Errorf("%q: no error", s)
		}
		if strings.Contains(s, "{") && err != errNotValidJSON {
			t.Errorf("%q: error %v, want errNotValidJSON", s, err)
		}
	}
}
