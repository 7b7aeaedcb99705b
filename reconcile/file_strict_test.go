package reconcile_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/guestward/guestward/reconcile"
)

// at returns the byte offset of the n-th (from 1) occurrence of sub in
// doc, for the positions errors must name.
func at(doc, sub string, n int) int {
	off := 0
	for ; n > 0; n-- {
		i := strings.Index(doc[off:], sub)
		if i < 0 {
			panic(fmt.Sprintf("%q does not hold %q %d times", doc, sub, n))
		}
		off += i
		if n > 1 {
			off += len(sub)
		}
	}
	return off
}

func TestParseDesiredJSONExactMemberNames(t *testing.T) {
	const g = `"node": "pve1", "type": "qemu", "vmid": 100`
	type tc struct {
		name string
		doc  string
		// want lists what the error must say; the position is checked
		// by pos (the offset must be named as "at byte N").
		want []string
		pos  func(doc string) int
		// invalid: refused by validation (ErrInvalidDesired) rather
		// than as malformed.
		invalid bool
	}
	cases := []tc{
		{name: "Power after power, stopping a running guest",
			doc:  `{"guests": [{` + g + `, "power": "running", "Power": "stopped"}]}`,
			want: []string{`"Power"`, `"power"`, "letter case", "guests[0]"},
			pos:  func(d string) int { return at(d, `"Power"`, 1) }},
		{name: "power after Power",
			doc:  `{"guests": [{` + g + `, "Power": "stopped", "power": "running"}]}`,
			want: []string{`"Power"`, "case-sensitive", `write "power"`},
			pos:  func(d string) int { return at(d, `"Power"`, 1) }},
		{name: "VMID after vmid",
			doc:  `{"guests": [{` + g + `, "VMID": 101}]}`,
			want: []string{`"VMID"`, "letter case"},
			pos:  func(d string) int { return at(d, `"VMID"`, 1) }},
		{name: "VMID alone",
			doc:  `{"guests": [{"node": "pve1", "type": "qemu", "VMID": 100}]}`,
			want: []string{`"VMID"`, `write "vmid"`},
			pos:  func(d string) int { return at(d, `"VMID"`, 1) }},
		{name: "Guests after guests",
			doc:  `{"guests": [{` + g + `}], "Guests": []}`,
			want: []string{`"Guests"`, "top-level object", "letter case"},
			pos:  func(d string) int { return at(d, `"Guests"`, 1) }},
		{name: "Guests alone",
			doc:  `{"Guests": [{` + g + `}]}`,
			want: []string{`"Guests"`, `write "guests"`},
			pos:  func(d string) int { return at(d, `"Guests"`, 1) }},
		{name: "GUESTS alone",
			doc:  `{"GUESTS": []}`,
			want: []string{`"GUESTS"`},
			pos:  func(d string) int { return at(d, `"GUESTS"`, 1) }},
		{name: "Config alone",
			doc:  `{"guests": [{` + g + `, "Config": {"memory": 1}}]}`,
			want: []string{`"Config"`, `write "config"`},
			pos:  func(d string) int { return at(d, `"Config"`, 1) }},
		{name: "Delete alone",
			doc:  `{"guests": [{` + g + `, "Delete": ["ide2"]}]}`,
			want: []string{`"Delete"`},
			pos:  func(d string) int { return at(d, `"Delete"`, 1) }},
		{name: "Node and Type",
			doc:  `{"guests": [{"Node": "pve1", "Type": "qemu", "vmid": 100}]}`,
			want: []string{`"Node"`},
			pos:  func(d string) int { return at(d, `"Node"`, 1) }},
		{name: "long s folds to s",
			doc:  `{"gueſts": [{` + g + `}]}`,
			want: []string{`"gueſts"`, `write "guests"`},
			pos:  func(d string) int { return at(d, `"gueſts"`, 1) }},
		{name: "dotted capital I is no i",
			doc:  `{"guests": [{"node": "pve1", "type": "qemu", "vmİd": 100}]}`,
			want: []string{"unknown key", `"vmİd"`},
			pos:  func(d string) int { return at(d, `"vmİd"`, 1) }},
		{name: "escaped capitals",
			doc:  `{"guests": [{"node": "pve1", "type": "qemu", "VM\u0049D": 100}]}`,
			want: []string{`"VMID"`, `write "vmid"`},
			pos:  func(d string) int { return at(d, `"VM\u0049D"`, 1) }},
		{name: "escaped name repeating a plain one",
			doc:  `{"guests": [{` + g + `, "vm\u0069d": 101}]}`,
			want: []string{"duplicate key", `"vmid"`},
			pos:  func(d string) int { return at(d, `"vm\u0069d"`, 1) }},
		{name: "whitespace everywhere",
			doc:  "{ \"guests\" :\n\t[ {\n  \"node\" : \"pve1\" ,\r\n \"type\":\"qemu\", \"vmid\" :100 ,\n\t\"Power\"\t: \"stopped\" } ] }",
			want: []string{`"Power"`},
			pos:  func(d string) int { return at(d, `"Power"`, 1) }},
		{name: "space inside a name",
			doc:  `{"guests": [{` + g + `, " power": "stopped"}]}`,
			want: []string{"unknown key", `" power"`},
			pos:  func(d string) int { return at(d, `" power"`, 1) }},
		{name: "second guest",
			doc:  `{"guests": [{` + g + `}, {"node": "pve1", "type": "qemu", "vmid": 101, "Vmid": 102}]}`,
			want: []string{"guests[1]", `"Vmid"`},
			pos:  func(d string) int { return at(d, `"Vmid"`, 1) }},

		// Option names are not struct members, but two spellings of one
		// must not collapse either.
		{name: "memory and Memory",
			doc:  `{"guests": [{` + g + `, "config": {"memory": 4096, "Memory": 64}}]}`,
			want: []string{`"Memory"`, `"memory"`, "guests[0].config", "letter case"},
			pos:  func(d string) int { return at(d, `"Memory"`, 1) }},
		{name: "Memory before memory",
			doc:  `{"guests": [{` + g + `, "config": {"Memory": 64, "memory": 4096}}]}`,
			want: []string{`"memory"`, `"Memory"`, "letter case"},
			pos:  func(d string) int { return at(d, `"memory"`, 1) }},
		{name: "Kelvin sign folds to k",
			doc:  "{\"guests\": [{" + g + ", \"config\": {\"keyboard\": \"de\", \"\u212Aeyboard\": \"fr\"}}]}",
			want: []string{"letter case"},
			pos:  func(d string) int { return at(d, "\"\u212Aeyboard\"", 1) }},
		{name: "case variants in a nested object",
			doc:  `{"guests": [{` + g + `, "config": {"net0": {"bridge": "vmbr0", "Bridge": "vmbr1"}}}]}`,
			want: []string{`"Bridge"`, "guests[0].config.net0"},
			pos:  func(d string) int { return at(d, `"Bridge"`, 1) }},
		{name: "exact repeat after an escaped backslash",
			doc:  `{"guests": [{` + g + `, "config": {"a\\": 1, "b\"": 2, "a\\": 3}}]}`,
			want: []string{"duplicate key", `"a\\"`, "first at byte " + fmt.Sprint(at(`{"guests": [{`+g+`, "config": {"a\\": 1, "b\"": 2, "a\\": 3}}]}`, `"a\\"`, 1))},
			pos:  func(d string) int { return at(d, `"a\\"`, 2) }},
		{name: "lone Memory",
			doc:     `{"guests": [{` + g + `, "config": {"Memory": 64}}]}`,
			want:    []string{`"Memory"`, "lower-case"},
			invalid: true},

		// Null is not an empty state.
		{name: "null document",
			doc:  `null`,
			want: []string{"document is null", `{"guests": []}`},
			pos:  func(string) int { return 0 }},
		{name: "null document with whitespace",
			doc:  " \n null \n",
			want: []string{"document is null"},
			pos:  func(d string) int { return at(d, "null", 1) }},
		{name: "null guests",
			doc:  `{"guests": null}`,
			want: []string{`"guests" is null`, `{"guests": []}`},
			pos:  func(d string) int { return at(d, "null", 1) }},
		{name: "missing guests",
			doc:  `{}`,
			want: []string{`no "guests" key`}},
		{name: "null guest",
			doc:  `{"guests": [{` + g + `}, null]}`,
			want: []string{"guests[1] is null"},
			pos:  func(d string) int { return at(d, "null", 1) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ds, err := reconcile.ParseDesiredJSON([]byte(c.doc))
			if err == nil {
				t.Fatalf("accepted: %+v", ds)
			}
			want := c.want
			if c.pos != nil {
				want = append(want, fmt.Sprintf("at byte %d", c.pos(c.doc)))
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if got := errors.Is(err, reconcile.ErrInvalidDesired); got != c.invalid {
				t.Errorf("errors.Is(err, ErrInvalidDesired) = %v: %v", got, err)
			}
		})
	}
}

func TestParseDesiredJSONAccepts(t *testing.T) {
	for _, c := range []struct {
		name  string
		doc   string
		check func(t *testing.T, ds []reconcile.Desired)
	}{
		{name: "empty list", doc: `{"guests": []}`, check: func(t *testing.T, ds []reconcile.Desired) {
			if ds == nil || len(ds) != 0 {
				t.Fatalf("%#v", ds)
			}
		}},
		{name: "every member, exactly", doc: `{"guests": [{"node": "pve1", "type": "lxc", "vmid": 200, "power": "stopped", "config": {"memory": 256}, "delete": ["mp0"]}]}`,
			check: func(t *testing.T, ds []reconcile.Desired) {
				if d := ds[0]; d.Ref != lxc(200) || d.Power != reconcile.PowerStopped || d.Config["memory"] != "256" || d.Delete[0] != "mp0" {
					t.Fatalf("%+v", d)
				}
			}},
		{name: "escaped lower-case name", doc: `{"gu\u0065sts": [{"node": "pve1", "type": "qemu", "vm\u0069d": 100, "p\u006fwer": "running"}]}`,
			check: func(t *testing.T, ds []reconcile.Desired) {
				if ds[0].Ref != qemu(100) || ds[0].Power != reconcile.PowerRunning {
					t.Fatalf("%+v", ds)
				}
			}},
		{name: "optional members null", doc: `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "power": null, "config": null, "delete": null}]}`,
			check: func(t *testing.T, ds []reconcile.Desired) {
				if d := ds[0]; d.Power != reconcile.PowerAny || d.Config != nil || d.Delete != nil {
					t.Fatalf("%+v", d)
				}
			}},
		{name: "same name in different objects", doc: `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "config": {"memory": 1}}, {"node": "pve1", "type": "qemu", "vmid": 101, "config": {"memory": 2}}]}`,
			check: func(t *testing.T, ds []reconcile.Desired) {
				if len(ds) != 2 {
					t.Fatalf("%+v", ds)
				}
			}},
		{name: "option names are not folded against member names", doc: `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "config": {"name": "web", "vmstatestorage": "local"}}]}`,
			check: func(t *testing.T, ds []reconcile.Desired) {
				if ds[0].Config["name"] != "web" {
					t.Fatalf("%+v", ds)
				}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ds, err := reconcile.ParseDesiredJSON([]byte(c.doc))
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, ds)
		})
	}
}

// Found by fuzzing: the strict reader built the path of every object it
// entered (guests[0].config.a.b...) as it went, so that a deeply nested
// document with long keys cost the square of its depth: gigabytes for a
// file under a megabyte. The path is now built only for a message.
func TestParseDesiredJSONDeepNestingCostsLinearMemory(t *testing.T) {
	const depth = 9990 // just under encoding/json's limit
	key := `"` + strings.Repeat("k", 64) + `": `
	doc := `{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "config": {"a": ` +
		strings.Repeat("{"+key, depth) + "1" + strings.Repeat("}", depth) + `}}]}`
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := reconcile.ParseDesiredJSON([]byte(doc))
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("an object as an option value was accepted")
	}
	// About 20 times the document today; the square of the depth was
	// thousands of times.
	if n := after.TotalAlloc - before.TotalAlloc; n > 100*uint64(len(doc)) {
		t.Fatalf("parsing %d bytes allocated %d", len(doc), n)
	}
}

// FuzzParseDesiredJSONSaysWhatTheDocumentSays checks that a document the
// parser accepts means what a reader who matches names exactly reads in
// it: no member was merged, renamed or replaced on the way.
func FuzzParseDesiredJSONSaysWhatTheDocumentSays(f *testing.F) {
	for _, s := range []string{
		goodFile,
		`{"guests": []}`,
		`null`,
		`{"guests": null}`,
		`{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "power": "running", "Power": "stopped"}]}`,
		`{"Guests": [{"node": "pve1", "type": "qemu", "VMID": 100}]}`,
		`{"guests": [{"node": "pve1", "type": "qemu", "vm\u0069d": 100, "config": {"memory": 1, "Memory": 2}}]}`,
		`{"guests": [{"node": "pve1", "type": "lxc", "vmid": 200, "config": {"hookscript": "local:snippets/a.sh"}}]}`,
		`{"guests": [{"node": "pve1", "type": "qemu", "vmid": 100, "delete": ["ide2", "IDE2"]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := reconcile.ParseDesiredJSON(data)
		if err != nil {
			return
		}
		var doc struct {
			Guests []map[string]json.RawMessage
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("accepted, but not JSON: %v", err)
		}
		if len(doc.Guests) != len(ds) {
			t.Fatalf("%d guests in the document, %d parsed", len(doc.Guests), len(ds))
		}
		byVMID := make(map[string]reconcile.Desired, len(ds))
		for _, d := range ds {
			byVMID[fmt.Sprint(d.Ref.VMID)] = d
		}
		for _, g := range doc.Guests {
			for k := range g {
				switch k {
				case "node", "type", "vmid", "power", "config", "delete":
				default:
					t.Fatalf("accepted a guest with member %q", k)
				}
			}
			var vmid json.Number
			if err := json.Unmarshal(g["vmid"], &vmid); err != nil {
				t.Fatalf("vmid %s: %v", g["vmid"], err)
			}
			d, ok := byVMID[vmid.String()]
			if !ok {
				t.Fatalf("guest %s of the document is not in the result", vmid)
			}
			var power string
			_ = json.Unmarshal(g["power"], &power)
			if string(d.Power) != power {
				t.Fatalf("guest %s: power %q in the document, %q parsed", vmid, power, d.Power)
			}
			var config map[string]json.RawMessage
			_ = json.Unmarshal(g["config"], &config)
			if len(config) != len(d.Config) {
				t.Fatalf("guest %s: %d options in the document, %d parsed", vmid, len(config), len(d.Config))
			}
			for k := range config {
				if _, ok := d.Config[k]; !ok {
					t.Fatalf("guest %s: option %q of the document is not in the result", vmid, k)
				}
			}
		}
	})
}
