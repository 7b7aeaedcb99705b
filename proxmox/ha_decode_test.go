package proxmox

import (
	"context"
	"errors"
	"net/http"
	"testing"
)

// TestStatusHADecoding: the "ha" object of status/current as the Proxmox
// versions send it (get_service_status: "group" until PVE 9.1, possibly
// null; numbers and strings interchangeably), and the guest list's
// hastate.
func TestStatusHADecoding(t *testing.T) {
	tests := []struct {
		name    string
		ha      string
		managed bool
		state   string
		bad     bool
	}{
		{"not managed", `{"managed":0}`, false, "", false},
		{"pve 7 and 8", `{"managed":1,"state":"started","group":null}`, true, "started", false},
		{"pve 8 with group", `{"managed":1,"state":"request_stop","group":"prod"}`, true, "request_stop", false},
		{"pve 9.1", `{"managed":1,"state":"stopped"}`, true, "stopped", false},
		{"managed as string", `{"managed":"1","state":"error"}`, true, "error", false},
		{"no state yet", `{"managed":1,"state":null}`, true, "", false},
		{"absent", ``, false, "", false},
		{"null", `null`, false, "", false},
		{"not an object", `"yes"`, false, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSrv(t)
			body := `{"data":{"vmid":100,"status":"stopped","name":"web"}}`
			if tt.ha != "" {
				body = `{"data":{"vmid":100,"status":"stopped","name":"web","ha":` + tt.ha + `}}`
			}
			s.handle("GET /nodes/pve1/qemu/100/status/current", func(w http.ResponseWriter, r *http.Request) { replyRaw(w, body) })
			st, err := s.tokenClient(t).Status(context.Background(), testRef)
			if tt.bad {
				if !errors.Is(err, ErrUnexpectedResponse) {
					t.Fatalf("Status = %+v, %v; want ErrUnexpectedResponse", st, err)
				}
				return
			}
			if err != nil || st.HAManaged != tt.managed || st.HAState != tt.state {
				t.Fatalf("Status = %+v, %v; want managed %v state %q", st, err, tt.managed, tt.state)
			}
		})
	}
}
