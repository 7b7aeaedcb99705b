package proxmox

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestFlexTypes(t *testing.T) {
	type rec struct {
		I flexInt    `json:"i"`
		F flexFloat  `json:"f"`
		B flexBool   `json:"b"`
		S flexString `json:"s"`
	}
	tests := []struct {
		name string
		in   string
		want rec
	}{
		{"numbers", `{"i":2048,"f":0.4,"b":1,"s":"x"}`, rec{2048, 0.4, true, "x"}},
		{"strings (Perl scalars)", `{"i":"2048","f":"0.4","b":"1","s":5}`, rec{2048, 0.4, true, "5"}},
		{"json booleans", `{"i":true,"b":false,"s":true}`, rec{1, 0, false, "1"}},
		{"nulls and empty", `{"i":null,"f":"","b":"","s":null}`, rec{}},
		{"bool spellings", `{"b":"yes"}`, rec{B: true}},
		{"bool off", `{"b":"off"}`, rec{}},
		{"integral float", `{"i":3.0}`, rec{I: 3}},
		{"padded", `{"i":" 7 "}`, rec{I: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got rec
			if err := json.Unmarshal([]byte(tt.in), &got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	for _, bad := range []string{`{"i":"abc"}`, `{"i":1.5}`, `{"b":"maybe"}`, `{"f":"x"}`, `{"i":[1]}`} {
		var r rec
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestValueText(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		present bool
	}{
		{`"virtio=BC:24:11:2E:C5:4A,bridge=vmbr0"`, "virtio=BC:24:11:2E:C5:4A,bridge=vmbr0", true},
		{`2048`, "2048", true},
		{`"2048"`, "2048", true},
		{`0.0249060195469461`, "0.0249060195469461", true},
		{`1e3`, "1e3", true},
		{`true`, "1", true},
		{`false`, "0", true},
		{`null`, "", false},
		{`""`, "", true},
		{`"line1\nline2 \u00fc"`, "line1\nline2 ü", true},
		{`[["lxc.a", "b"]]`, `[["lxc.a","b"]]`, true},
		{`{"a": 1}`, `{"a":1}`, true},
	}
	for _, tt := range tests {
		got, present, err := valueText([]byte(tt.in))
		if err != nil || got != tt.want || present != tt.present {
			t.Errorf("valueText(%s) = %q, %v, %v; want %q, %v", tt.in, got, present, err, tt.want, tt.present)
		}
	}
}

func TestDecodeDataErrors(t *testing.T) {
	var cfg Config
	for _, body := range []string{``, `<html>`, `{"data":"x"}`, `{"nodata":1}`, `{"data":{"cores":[}}`} {
		_, err := decodeData([]byte(body), &cfg)
		if !errors.Is(err, ErrUnexpectedResponse) {
			t.Errorf("decodeData(%q) = %v, want ErrUnexpectedResponse", body, err)
		}
	}
	total, err := decodeData([]byte(`{"data":[],"total":"12"}`), new([]json.RawMessage))
	if err != nil || total != 12 {
		t.Fatalf("total = %d, %v", total, err)
	}
}

// FuzzDecodeData decodes arbitrary bodies as the config, pending and task
// answers: it must never panic, and a config it accepts must hold only
// valid keys and no digest among the values.
func FuzzDecodeData(f *testing.F) {
	f.Add([]byte(`{"data":{"cores":2,"memory":"2048","onboot":true,"digest":"aa9ce37c4df320889d4ab5382a2947efa4c1d815","lxc":[["a","b"]]}}`))
	f.Add([]byte(`{"data":[{"key":"cores","value":2,"pending":4},{"key":"net1","delete":1},{"key":"digest","value":"ab"}]}`))
	f.Add([]byte(`{"data":"UPID:pve1:00007323:001036A5:6419CAF8:qmstart:100:root@pam:"}`))
	f.Add([]byte(`{"data":null}`))
	f.Add([]byte(`{"data":{"status":"stopped","exitstatus":"OK","pid":"12"},"total":3}`))
	f.Add([]byte(`{"data":{"a":"\ud800","b":1e999}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var cfg Config
		if _, err := decodeData(body, &cfg); err == nil {
			if _, ok := cfg.Values["digest"]; ok {
				t.Fatalf("digest among values: %q", body)
			}
			for k, v := range cfg.Values {
				if k == "lxc" && len(cfg.LXCRaw) > 0 {
					t.Fatalf("lxc both raw and value")
				}
				_ = v
			}
		} else if !errors.Is(err, ErrUnexpectedResponse) {
			t.Fatalf("config error not classified: %v", err)
		}
		var pl pendingList
		if _, err := decodeData(body, &pl); err == nil {
			for _, it := range pl {
				if it.Key == "" || it.Key == "digest" {
					t.Fatalf("bad pending key in %q", body)
				}
				if it.Force && !it.Delete {
					t.Fatalf("force without delete")
				}
			}
		}
		var u upidData
		if _, err := decodeData(body, &u); err == nil && u != "" {
			if _, err := ParseUPID(string(u)); err != nil {
				t.Fatalf("accepted invalid UPID %q", u)
			}
		}
		var ts taskStatusEntry
		_, _ = decodeData(body, &ts)
		e := decodeAPIError("GET", "/", 500, "500 x", body)
		if !utf8.ValidString(e.Message) {
			t.Fatalf("invalid message")
		}
	})
}

func TestSplitTags(t *testing.T) {
	tests := map[string][]string{
		"":               nil,
		"a":              {"a"},
		"tag1;tag2":      {"tag1", "tag2"},
		"b,a; c  d;;":    {"b", "a", "c", "d"},
		" ; , ":          nil,
		"Prod;prod;PROD": {"Prod", "prod", "PROD"},
	}
	for in, want := range tests {
		if got := SplitTags(in); !cmp.Equal(got, want) {
			t.Errorf("SplitTags(%q) = %q, want %q", in, got, want)
		}
	}
	if strings.Join(SplitTags("x\ty\nz"), "|") != "x|y|z" {
		t.Error("whitespace separators")
	}
}
