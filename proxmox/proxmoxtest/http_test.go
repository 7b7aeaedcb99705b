package proxmoxtest

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestEnvelopeAndHeaders(t *testing.T) {
	s := Start(t)
	rp := do(t, s, "GET", "/version", nil)
	if rp.Code != 200 || rp.Status != "OK" {
		t.Fatalf("status %d %q", rp.Code, rp.Status)
	}
	if got := rp.Header.Get("Content-Type"); got != "application/json;charset=UTF-8" {
		t.Errorf("Content-Type %q", got)
	}
	if got := rp.Header.Get("Server"); got != "pve-api-daemon/3.0" {
		t.Errorf("Server %q", got)
	}
	d := rp.dataMap(t)
	if d["version"] != DefaultVersion || d["release"] != "8.4" {
		t.Errorf("version data %v", d)
	}
	if id, _ := d["repoid"].(string); len(id) < 8 {
		t.Errorf("repoid %q", id)
	}
}

func TestNotImplementedAndHTTPLayer(t *testing.T) {
	s := Start(t, WithVersion(PVE82)) // before 8.3: HTTP-layer errors have no body
	for _, tc := range []struct {
		name, method, path string
		body               any
		code               int
		reason             string
		emptyBody          bool
	}{
		{"unknown path", "GET", "/nodes/pve/foo", nil, 501, "Method 'GET /nodes/pve/foo' not implemented", false},
		{"wrong method", "DELETE", "/version", nil, 501, "Method 'DELETE /version' not implemented", false},
		{"lxc has no POST config", "POST", "/nodes/pve/lxc/200/config", form("cores", "2"), 501, "Method 'POST /nodes/pve/lxc/200/config' not implemented", false},
		{"body on GET", "GET", "/version", rawBody("a=1"), 501, "Unexpected content for method 'GET'", true},
		{"PATCH", "PATCH", "/version", nil, 501, "method 'PATCH' not available", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp := do(t, s, tc.method, tc.path, tc.body)
			if rp.Code != tc.code || rp.Status != tc.reason {
				t.Fatalf("got %d %q, want %d %q", rp.Code, rp.Status, tc.code, tc.reason)
			}
			if tc.emptyBody != (len(rp.Raw) == 0) {
				t.Fatalf("body %q, want empty=%v", rp.Raw, tc.emptyBody)
			}
			if !tc.emptyBody && string(rp.Raw) != `{"data":null}` {
				t.Fatalf("body %s", rp.Raw)
			}
			if !rp.Close {
				t.Errorf("connection not closed after %d", rp.Code)
			}
		})
	}
}

func TestHEADNotAvailable(t *testing.T) {
	s := Start(t)
	req, _ := http.NewRequest("HEAD", s.URL+APIPath+"/version", nil)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Status != "501 method 'HEAD' not available" {
		t.Fatalf("status %q", resp.Status)
	}
}

func TestFormatsAndURIs(t *testing.T) {
	s := Start(t)
	for path, want := range map[string]string{
		"/api2/extjs/version": "501 no formatter for uri /api2/extjs/version",
		"/api2/":              "501 no such uri",
		"/foo":                "501 no such uri",
	} {
		resp, err := s.Client().Get(s.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Status != want {
			t.Errorf("%s: %q, want %q", path, resp.Status, want)
		}
	}
}

// rawRequest writes a request by hand (for chunked bodies) and returns the
// status line.
func rawRequest(t *testing.T, s *Server, req string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(s.URL, "https://"), &tls.Config{RootCAs: s.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimRight(line, "\r\n")
}

func TestChunkedBodyRejected(t *testing.T) {
	s := Start(t)
	id, secret := s.APIToken()
	line := rawRequest(t, s, "PUT /api2/json/nodes/pve/qemu/100/config HTTP/1.1\r\nHost: x\r\n"+
		"Authorization: PVEAPIToken="+id+"="+secret+"\r\nContent-Type: application/x-www-form-urlencoded\r\n"+
		"Transfer-Encoding: chunked\r\n\r\n7\r\ncores=4\r\n0\r\n\r\n")
	if line != "HTTP/1.1 501 chunked transfer encoding not supported" {
		t.Fatalf("got %q", line)
	}
}

func TestBodyLimitByVersion(t *testing.T) {
	for _, tc := range []struct {
		version string
		size    int
		ok      bool
	}{
		{PVE83, 64*1024 + 1, false},
		{PVE84, 64*1024 + 1, true},
		{PVE84, 512*1024 + 1, false},
	} {
		s := Start(t, WithVersion(tc.version))
		mustAdd(t, s, vm100(""))
		body := rawBody("description=" + strings.Repeat("x", tc.size-len("description=")))
		rp := do(t, s, "PUT", "/nodes/pve/qemu/100/config", body)
		tooLarge := rp.Code == 501 && rp.Status == "for data too large"
		if tooLarge == tc.ok {
			t.Errorf("%s, %d bytes: got %d %q", tc.version, tc.size, rp.Code, rp.Status)
		}
	}
}

func TestParameterVerification(t *testing.T) {
	s := Start(t)
	mustAdd(t, s, vm100(""))
	for _, tc := range []struct {
		name, method, path string
		body               any
		errs               map[string]string
	}{
		{"unknown option", "PUT", "/nodes/pve/qemu/100/config", form("bogus", "1"),
			map[string]string{"bogus": undefinedProp}},
		{"boolean true", "PUT", "/nodes/pve/qemu/100/config", form("onboot", "true"),
			map[string]string{"onboot": "type check ('boolean') failed - got 'true'"}},
		{"integer", "PUT", "/nodes/pve/qemu/100/config", form("cores", "four"),
			map[string]string{"cores": "type check ('integer') failed - got 'four'"}},
		{"minimum", "PUT", "/nodes/pve/qemu/100/config", form("cores", "0"),
			map[string]string{"cores": "value must have a minimum value of 1"}},
		{"enum", "PUT", "/nodes/pve/qemu/100/config", form("ostype", "beos"),
			map[string]string{"ostype": "value 'beos' does not have a value in the enumeration 'other, wxp, w2k, w2k3, w2k8, wvista, win7, win8, win10, win11, l24, l26, solaris'"}},
		{"dns name", "PUT", "/nodes/pve/qemu/100/config", form("name", "web_01"),
			map[string]string{"name": "invalid format - value does not look like a valid DNS name\n"}},
		{"description too long", "PUT", "/nodes/pve/qemu/100/config", form("description", strings.Repeat("d", 8193)),
			map[string]string{"description": "value may only be 8192 characters long"}},
		{"digest too long", "PUT", "/nodes/pve/qemu/100/config", form("cores", "2", "digest", strings.Repeat("a", 41)),
			map[string]string{"digest": "value may only be 40 characters long"}},
		{"tag characters", "PUT", "/nodes/pve/qemu/100/config", form("tags", "ok;not/ok"),
			map[string]string{"tags": "invalid format - invalid characters in tag\n"}},
		{"bad net", "PUT", "/nodes/pve/qemu/100/config", form("net1", "bridge=vmbr0,colour=blue"),
			map[string]string{"net1": "invalid format - invalid key in comma-separated list property: colour\n"}},
		{"bad delete list", "PUT", "/nodes/pve/qemu/100/config", form("delete", "net0,9x"),
			map[string]string{"delete": "invalid format - invalid configuration ID '9x'\n"}},
		{"vmid not a number", "GET", "/nodes/pve/qemu/abc/config", nil,
			map[string]string{"vmid": "type check ('integer') failed - got 'abc'"}},
		{"vmid too small", "GET", "/nodes/pve/qemu/99/config", nil,
			map[string]string{"vmid": "invalid format - value does not look like a valid VM ID\n"}},
		{"path parameter conflict", "PUT", "/nodes/pve/qemu/100/config", form("vmid", "101", "cores", "2"),
			map[string]string{"vmid": "duplicate parameter (already defined in URI) with conflicting values!"}},
		{"lxc has no skiplock", "PUT", "/nodes/pve/lxc/200/config", form("skiplock", "1"),
			map[string]string{"skiplock": undefinedProp}},
		{"force requires delete", "PUT", "/nodes/pve/qemu/100/config", form("force", "1", "cores", "2"),
			map[string]string{"delete": "missing property - 'force' requires this property"}},
		{"skiplock is root only", "POST", "/nodes/pve/qemu/100/status/start", form("skiplock", "1"),
			map[string]string{"skiplock": "Only root may use this option."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp := do(t, s, tc.method, tc.path, tc.body)
			if rp.Code != 400 || rp.Status != "Parameter verification failed." {
				t.Fatalf("got %d %q %s", rp.Code, rp.Status, rp.Raw)
			}
			got := rp.errorsMap()
			if len(got) != len(tc.errs) {
				t.Fatalf("errors %v, want %v", got, tc.errs)
			}
			for k, v := range tc.errs {
				if got[k] != v {
					t.Errorf("errors[%s] = %q, want %q", k, got[k], v)
				}
			}
			if rp.Body["message"] != "Parameter verification failed.\n" {
				t.Errorf("message %q", rp.Body["message"])
			}
		})
	}
}

func TestPathParameterSameValueAccepted(t *testing.T) {
	s := Start(t)
	mustAdd(t, s, vm100(""))
	rp := do(t, s, "PUT", "/nodes/pve/qemu/100/config", form("vmid", "100", "node", "pve", "cores", "3"))
	if rp.Code != 200 {
		t.Fatalf("got %d %q %s", rp.Code, rp.Status, rp.Raw)
	}
}

func TestFormDecodingQuirks(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	cfg := func() map[string]any { return do(t, s, "GET", guestPath(r)+"/config", nil).dataMap(t) }

	// ';' separates pairs like '&': "tags=a;b" sets tags to "a" and a key "b"
	// without value, which is ignored.
	if rp := do(t, s, "PUT", guestPath(r)+"/config", rawBody("tags=a;b&cores=3")); rp.Code != 200 {
		t.Fatalf("%d %q %s", rp.Code, rp.Status, rp.Raw)
	}
	if c := cfg(); c["tags"] != "a" || c["cores"] != float64(3) {
		t.Fatalf("tags %v cores %v", c["tags"], c["cores"])
	}
	// An escaped ';' survives and is a tag separator only for the tag parser.
	do(t, s, "PUT", guestPath(r)+"/config", rawBody("tags=x%3By"))
	if c := cfg(); c["tags"] != "x;y" {
		t.Fatalf("tags %v", c["tags"])
	}
	// An unescaped '=' inside a value truncates it: "name=a=b" sets "a".
	do(t, s, "PUT", guestPath(r)+"/config", rawBody("name=alpha=beta"))
	if c := cfg(); c["name"] != "alpha" {
		t.Fatalf("name %v", c["name"])
	}
	// '+' is a space.
	do(t, s, "PUT", guestPath(r)+"/config", rawBody("description=two+words"))
	if c := cfg(); c["description"] != "two words" {
		t.Fatalf("description %q", c["description"])
	}
	// Repeated keys are joined with NUL, which split_list treats as the
	// separator: two delete= pairs delete both options.
	do(t, s, "PUT", guestPath(r)+"/config", rawBody("onboot=1&protection=0"))
	if rp := do(t, s, "PUT", guestPath(r)+"/config", rawBody("delete=onboot&delete=protection")); rp.Code != 200 {
		t.Fatalf("%d %q %s", rp.Code, rp.Status, rp.Raw)
	}
	if c := cfg(); c["onboot"] != nil || c["protection"] != nil {
		t.Fatalf("not deleted: %v", c)
	}
	// Query parameters override body keys.
	do(t, s, "PUT", guestPath(r)+"/config?cores=6", form("cores", "5"))
	if c := cfg(); c["cores"] != float64(6) {
		t.Fatalf("cores %v", c["cores"])
	}
}

func TestJSONBody(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	rp := do(t, s, "PUT", guestPath(r)+"/config", map[string]any{"cores": 4, "onboot": true, "name": "json"})
	if rp.Code != 200 {
		t.Fatalf("%d %q %s", rp.Code, rp.Status, rp.Raw)
	}
	st := mustGuest(t, s, r)
	if st.Config["cores"] != "4" || st.Config["onboot"] != "1" || st.Config["name"] != "json" {
		t.Fatalf("config %v", st.Config)
	}
	rp = do(t, s, "PUT", guestPath(r)+"/config", map[string]any{"delete": []string{"onboot"}})
	if rp.Code != 400 || rp.errorsMap()["delete"] != "type check ('string') failed - got ARRAY" {
		t.Fatalf("%d %s", rp.Code, rp.Raw)
	}
}

func TestReasonWithCarriageReturn(t *testing.T) {
	s := Start(t)
	s.Inject(Fault{Path: "/version", Status: 500, Message: "bad\rline"})
	rp := do(t, s, "GET", "/version", nil)
	if rp.Code != 400 || rp.Status != "Bad Request" || len(rp.Raw) != 0 {
		t.Fatalf("got %d %q %q", rp.Code, rp.Status, rp.Raw)
	}
}

func TestErrorBodyMessageByVersion(t *testing.T) {
	for _, tc := range []struct {
		version string
		body    string
	}{
		{PVE74, `{"data":null}`},
		{PVE82, `{"data":null}`},
		{PVE83, `{"data":null,"message":"Configuration file 'nodes/pve/qemu-server/100.conf' does not exist\n"}`},
	} {
		s := Start(t, WithVersion(tc.version))
		rp := do(t, s, "GET", "/nodes/pve/qemu/100/config", nil)
		if rp.Code != 500 || rp.Status != "Configuration file 'nodes/pve/qemu-server/100.conf' does not exist" {
			t.Errorf("%s: %d %q", tc.version, rp.Code, rp.Status)
		}
		if string(rp.Raw) != tc.body {
			t.Errorf("%s: body %s, want %s", tc.version, rp.Raw, tc.body)
		}
	}
}

func TestUnknownNode(t *testing.T) {
	s := Start(t, WithNodes("pve1"))
	rp := do(t, s, "GET", "/nodes/nowhere/qemu", nil)
	want := "hostname lookup 'nowhere' failed - failed to get address info for: nowhere: Name or service not known"
	if rp.Code != 500 || rp.Status != want {
		t.Fatalf("%d %q", rp.Code, rp.Status)
	}
	rp = do(t, s, "GET", "/nodes/localhost/qemu", nil)
	if rp.Code != 200 {
		t.Fatalf("localhost: %d %q", rp.Code, rp.Status)
	}
	rp = do(t, s, "GET", "/nodes/bad_name/qemu", nil)
	if rp.Code != 400 || rp.errorsMap()["node"] != "invalid format - value does not look like a valid node name\n" {
		t.Fatalf("bad name: %d %s", rp.Code, rp.Raw)
	}
}

func TestIndexes(t *testing.T) {
	s := Start(t)
	r := mustAdd(t, s, vm100(""))
	for _, p := range []string{"", "/nodes/pve", guestPath(r), guestPath(r) + "/status"} {
		rp := do(t, s, "GET", p, nil)
		if rp.Code != 200 || len(rp.dataList(t)) == 0 {
			t.Errorf("%q: %d %s", p, rp.Code, rp.Raw)
		}
	}
	if rp := do(t, s, "GET", "/nodes/pve/qemu/101", nil); rp.Code != 500 {
		t.Errorf("index of a missing guest: %d", rp.Code)
	}
	rp := do(t, s, "GET", "/nodes", nil)
	nodes := rp.dataList(t)
	if len(nodes) != 1 || nodes[0]["node"] != "pve" || nodes[0]["ssl_fingerprint"] != s.Fingerprint() {
		t.Errorf("nodes %v", nodes)
	}
}

func TestFingerprintMatchesCertificate(t *testing.T) {
	s := Start(t)
	fp := s.Fingerprint()
	if len(fp) != 32*3-1 || strings.ToUpper(fp) != fp {
		t.Fatalf("fingerprint %q", fp)
	}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(s.URL, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if !leaf.Equal(s.Certificate()) {
		t.Fatal("served certificate differs from Certificate()")
	}
	sum := sha256.Sum256(leaf.Raw)
	if got := strings.ReplaceAll(fp, ":", ""); got != fmt.Sprintf("%X", sum[:]) {
		t.Fatalf("fingerprint %s does not hash the served certificate", fp)
	}
}

func TestDefaultHTTPClientRejectsCertificate(t *testing.T) {
	s := Start(t)
	c := &http.Client{Transport: &http.Transport{}}
	_, err := c.Get(s.URL + APIPath + "/version")
	if err == nil {
		t.Fatal("an untrusting client accepted the self-signed certificate")
	}
}
