package proxmox

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// A pending answer as qemu-server's vm_pending writes it for a running VM
// with a pending cores change, a pending deletion of a true value and of a
// false one, an option only in pending, a lock, and the digest row.
const pendingAnswer = `{"data":[
 {"key":"cores","value":2,"pending":4},
 {"key":"onboot","value":0,"delete":1},
 {"key":"tablet","value":1,"delete":2},
 {"key":"name","value":"web"},
 {"key":"lock","value":"backup"},
 {"key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"},
 {"key":"balloon","pending":512},
 {"key":"cipassword","value":"**********","pending":"********** "},
 {"key":"args","delete":1}
]}`

func TestPendingConfig(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /nodes/pve1/qemu/100/pending", func(w http.ResponseWriter, r *http.Request) { replyRaw(w, pendingAnswer) })
	pc, err := s.tokenClient(t).PendingConfig(context.Background(), Ref{"pve1", QEMU, 100})
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	want := Config{
		Digest: "aa9ce37c4df320889d4ab5382a2947efa4c1d815",
		Values: map[string]string{
			"cores": "4", "name": "web", "lock": "backup", "balloon": "512",
			// load_current_config drops a pending deletion's value only
			// when it is true to Perl: "0" stays, "1" goes.
			"onboot":     "0",
			"cipassword": "**********",
		},
	}
	if diff := cmp.Diff(want, pc.Config); diff != "" {
		t.Fatalf("config (-want +got):\n%s", diff)
	}
	if pc.Lock() != "backup" || pc.Template() {
		t.Errorf("Lock() = %q, Template() = %v", pc.Lock(), pc.Template())
	}
	var keys []string
	for _, it := range pc.Changes() {
		keys = append(keys, it.Key)
	}
	if diff := cmp.Diff([]string{"args", "balloon", "cipassword", "cores", "onboot", "tablet"}, keys); diff != "" {
		t.Errorf("pending keys (-want +got):\n%s", diff)
	}
	if n := s.count("GET /nodes/pve1/qemu/100/pending"); n != 1 || len(s.requests()) != 1 {
		t.Errorf("%d requests, %d to pending; want one", len(s.requests()), n)
	}
}

func TestPendingConfigRefusesBadAnswers(t *testing.T) {
	for _, tc := range []struct{ name, body, why string }{
		{"no digest", `{"data":[{"key":"cores","value":2}]}`, "a write without the digest could overwrite a concurrent change"},
		{"short digest", `{"data":[{"key":"digest","value":"abc"}]}`, "a digest is 40 hex digits"},
		{"pending digest", `{"data":[{"key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815","pending":"x"}]}`, "the digest is never pending"},
		{"twice", `{"data":[{"key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"},{"key":"cores","value":1},{"key":"cores","value":2}]}`, "which value holds would be a guess"},
		{"case-variant key member", `{"data":[{"Key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"}]}`, "Perl writes \"key\"; another spelling is not Proxmox"},
		{"no key", `{"data":[{"value":1},{"key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"}]}`, "a row must name its option"},
		{"null row", `{"data":[null]}`, "rows are objects"},
		{"bad delete", `{"data":[{"key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"},{"key":"a","delete":3}]}`, "delete is 0, 1 or 2"},
		{"object", `{"data":{"digest":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"}}`, "the endpoint answers an array"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSrv(t)
			s.handle("GET /nodes/pve1/lxc/100/pending", func(w http.ResponseWriter, r *http.Request) { replyRaw(w, tc.body) })
			_, err := s.tokenClient(t).PendingConfig(context.Background(), Ref{"pve1", LXC, 100})
			wantErr(t, err, ErrUnexpectedResponse)
			if err == nil {
				t.Log(tc.why)
			}
		})
	}
}

func TestPendingConfigNotFound(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /nodes/pve1/qemu/100/pending", func(w http.ResponseWriter, r *http.Request) {
		rawReply(w, 500, "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist", `{"data":null}`)
	})
	_, err := s.tokenClient(t).PendingConfig(context.Background(), Ref{"pve1", QEMU, 100})
	wantErr(t, err, ErrNotFound)
	_, err = s.tokenClient(t).PendingConfig(context.Background(), Ref{"pve1", QEMU, 1})
	wantErr(t, err, ErrInvalidRef)
}

// FuzzPendingConfig: whatever the answer, decoding never panics, and an
// accepted answer has a 40-digit digest, sorted unique items, and values
// that are all current or pending values of those items.
func FuzzPendingConfig(f *testing.F) {
	f.Add([]byte(`[{"key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"},{"key":"cores","value":2,"pending":"4"}]`))
	f.Add([]byte(`[{"key":"digest","value":"aa9ce37c4df320889d4ab5382a2947efa4c1d815"},{"key":"a","delete":"2"},{"key":"a"}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var pc pendingConfigData
		if pc.unmarshalData(b) != nil {
			return
		}
		if !isDigest(pc.Config.Digest) {
			t.Fatalf("digest %q accepted", pc.Config.Digest)
		}
		for i, it := range pc.Items {
			if i > 0 && pc.Items[i-1].Key >= it.Key {
				t.Fatalf("items not sorted and unique: %q then %q", pc.Items[i-1].Key, it.Key)
			}
			if v, ok := pc.Config.Values[it.Key]; ok && !(it.HasPending && v == it.Pending) && !(it.HasValue && v == it.Value) {
				t.Fatalf("value %q of %q is neither current nor pending", v, it.Key)
			}
		}
		if len(pc.Config.Values) > len(pc.Items) {
			t.Fatalf("%d values from %d items", len(pc.Config.Values), len(pc.Items))
		}
	})
}
