package proxmox

import (
	"context"
	"net/http"
	"testing"
)

func TestTaskUser(t *testing.T) {
	s := newSrv(t)
	if got := s.client(t).TaskUser(); got != "" {
		t.Errorf("no credentials: TaskUser = %q, want \"\"", got)
	}
	if got := s.tokenClient(t).TaskUser(); got != testTokenID {
		t.Errorf("token: TaskUser = %q, want the full token id %q", got, testTokenID)
	}
	c, err := New("https://pve:8006", WithAPIToken("ops@pve!deploy-1", "x-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.TaskUser(); got != "ops@pve!deploy-1" {
		t.Errorf("TaskUser = %q", got)
	}
}

// TestTaskUserFollowsLogin: for a realm whose case-sensitive setting is
// off, Proxmox's login answers with the user list's spelling of the name,
// and that spelling is what it writes into UPIDs.
func TestTaskUserFollowsLogin(t *testing.T) {
	s := newSrv(t)
	answer := "jdoe@corp-ad" // the user list's spelling
	s.handle("POST /access/ticket", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"username": answer, "ticket": "PVE:jdoe@corp-ad:4EEC61E2::c2ln",
			"CSRFPreventionToken": "4EEC61E2:Y3NyZg"})
	})
	s.handle("GET /version", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"version": "8.1.4", "release": "8.1", "repoid": "abc"})
	})
	c := s.client(t, WithPassword("JDoe@corp-ad", testPassword))
	if got := c.TaskUser(); got != "JDoe@corp-ad" {
		t.Fatalf("before login: TaskUser = %q, want the configured name", got)
	}
	if _, err := c.Version(context.Background()); err != nil {
		t.Fatal(checkErr(t, err))
	}
	if got := c.TaskUser(); got != "jdoe@corp-ad" {
		t.Fatalf("after login: TaskUser = %q, want Proxmox's spelling", got)
	}

	// A login answer naming someone else entirely is not taken.
	s2 := newSrv(t)
	s2.handle("POST /access/ticket", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"username": "root@pam", "ticket": "PVE:root@pam:4EEC61E2::c2ln",
			"CSRFPreventionToken": "4EEC61E2:Y3NyZg"})
	})
	s2.handle("GET /version", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"version": "8.1.4"})
	})
	c2 := s2.client(t, WithPassword("jdoe@corp-ad", testPassword))
	if _, err := c2.Version(context.Background()); err != nil {
		t.Fatal(checkErr(t, err))
	}
	if got := c2.TaskUser(); got != "jdoe@corp-ad" {
		t.Fatalf("TaskUser = %q after an answer for another user", got)
	}
}

func TestSplitTaskUser(t *testing.T) {
	tests := []struct{ full, user, token string }{
		{"root@pam", "root@pam", ""},
		{"root@pam!guestward", "root@pam", "guestward"},
		{"cicd@pam!cicd_ansible", "cicd@pam", "cicd_ansible"},
		{"a!b@pve", "a!b@pve", ""}, // '!' in the user part is not a token
		{"a!b@pve!t.1", "a!b@pve", "t.1"},
		{"odd@x@pve!t", "odd@x@pve", "t"},
		{"", "", ""},
	}
	for _, tt := range tests {
		if u, tk := splitTaskUser(tt.full); u != tt.user || tk != tt.token {
			t.Errorf("splitTaskUser(%q) = %q, %q; want %q, %q", tt.full, u, tk, tt.user, tt.token)
		}
	}
}

// TestTaskUserOfListedTasks: Proxmox lists a running token task with the
// full id as its user and a finished one split into user and tokenid
// (pve-manager node_tasks applies $convert_token_task to archived tasks
// only); both read alike, and the UPID keeps the full id.
func TestTaskUserOfListedTasks(t *testing.T) {
	s := newSrv(t)
	running := "UPID:pve1:00001111:00002222:6419CAF8:qmstart:100:guestward@pve!ci:"
	finished := "UPID:pve1:00001112:00002223:6419CAF0:qmstop:100:guestward@pve!ci:"
	plain := "UPID:pve1:00001113:00002224:6419CAE0:qmstop:100:root@pam:"
	s.handle("GET /nodes/pve1/tasks", func(w http.ResponseWriter, r *http.Request) {
		replyRaw(w, `{"data":[`+
			`{"upid":"`+running+`","user":"guestward@pve!ci","status":"RUNNING","starttime":1679411960,"type":"qmstart","id":"100","node":"pve1"},`+
			`{"upid":"`+finished+`","user":"guestward@pve","tokenid":"ci","status":"OK","endtime":1679411961,"starttime":1679411952,"type":"qmstop","id":"100","node":"pve1"},`+
			`{"upid":"`+plain+`","user":"root@pam","status":"OK","endtime":1679411941,"starttime":1679411936,"type":"qmstop","id":"100","node":"pve1"}`+
			`],"total":3}`)
	})
	c := s.tokenClient(t)
	got, err := c.Tasks(context.Background(), "pve1", TaskFilter{})
	if err != nil || len(got) != 3 {
		t.Fatalf("Tasks = %v, %v", got, checkErr(t, err))
	}
	for i, want := range [][2]string{{"guestward@pve", "ci"}, {"guestward@pve", "ci"}, {"root@pam", ""}} {
		if got[i].User != want[0] || got[i].TokenID != want[1] {
			t.Errorf("task %d: User, TokenID = %q, %q; want %q, %q", i, got[i].User, got[i].TokenID, want[0], want[1])
		}
	}
	info, _ := got[0].UPID.Parse()
	if info.User != "guestward@pve!ci" {
		t.Errorf("UPID user = %q", info.User)
	}

	// The status endpoint splits the same way, whatever it sends.
	s.handle("GET /nodes/pve1/tasks/"+running+"/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"upid": running, "status": "running", "user": "guestward@pve!ci"})
	})
	st, err := c.TaskStatus(context.Background(), UPID(running))
	if err != nil || st.User != "guestward@pve" || st.TokenID != "ci" {
		t.Fatalf("TaskStatus = %+v, %v", st, err)
	}
}
