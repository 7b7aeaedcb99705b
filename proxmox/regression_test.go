package proxmox

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// Found by the bad-input battery (internal/gauntlet): a 2xx answer to a
// write that the client could not use (a malformed UPID, a number, null, a
// truncated body, or the UPID of another guest's or node's task) was
// reported as ErrUnexpectedResponse alone. But Proxmox had accepted the
// write, and may have started a task: the reconcile engine, told the
// request failed, recorded the operation as failed although it ran (and
// with another guest's UPID, waited for a task that was not its own),
// inviting whoever asked for it to ask again. Such an answer is now also
// ErrOutcomeUnknown, which tells the caller to find out what happened
// before anything is sent again.
func TestRegression_UnusableWriteAnswerLooksLikeAFailure(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		route string
		body  string
		call  func(*Client) error
	}{
		{"malformed UPID", "POST /nodes/pve1/qemu/100/status/start", `{"data":"UPID:bogus"}`, start},
		{"number", "POST /nodes/pve1/qemu/100/status/start", `{"data":12345}`, start},
		{"null", "POST /nodes/pve1/qemu/100/status/start", `{"data":null}`, start},
		{"truncated", "POST /nodes/pve1/qemu/100/status/start", `{"data":"UPID:pve1:000`, start},
		{"html", "POST /nodes/pve1/qemu/100/status/start", `<html>OK</html>`, start},
		{"another guest's task", "POST /nodes/pve1/qemu/100/status/start", `{"data":"UPID:pve1:00007323:001036A5:6419CAF8:qmstart:999:guestward@pve!ci:"}`, start},
		{"another node's task", "POST /nodes/pve1/qemu/100/status/start", `{"data":"UPID:pve2:00007323:001036A5:6419CAF8:qmstart:100:guestward@pve!ci:"}`, start},
		{"qemu config answers null", "POST /nodes/pve1/qemu/100/config", `{"data":null}`, func(c *Client) error {
			_, err := c.SetConfig(ctx, testRef, ConfigChange{Set: map[string]string{"memory": "1024"}})
			return err
		}},
		{"lxc config answers an object", "PUT /nodes/pve1/lxc/200/config", `{"data":{"odd":true}}`, func(c *Client) error {
			_, err := c.SetConfig(ctx, testLXCRef, ConfigChange{Set: map[string]string{"memory": "1024"}})
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSrv(t)
			s.handle(c.route, func(w http.ResponseWriter, r *http.Request) { replyRaw(w, c.body) })
			err := c.call(s.tokenClient(t))
			if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrUnexpectedResponse) {
				t.Fatalf("err = %v; want ErrOutcomeUnknown and ErrUnexpectedResponse", checkErr(t, err))
			}
			if errors.Is(err, ErrTransient) {
				t.Fatalf("err = %v is transient: it would invite a retry", err)
			}
		})
	}

	// A read's unusable answer is not about any outcome.
	s := newSrv(t)
	s.handle("GET /nodes/pve1/qemu/100/config", func(w http.ResponseWriter, r *http.Request) { replyRaw(w, `{"data":"x"}`) })
	if _, err := s.tokenClient(t).Config(ctx, testRef); !errors.Is(err, ErrUnexpectedResponse) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("read: %v", checkErr(t, err))
	}
}

func start(c *Client) error {
	_, err := c.Start(context.Background(), testRef)
	return err
}

// Found by the bad-input battery: a task status that was neither "running"
// nor "stopped" read as running, so WaitTask polled for as long as the
// answer stayed wrong; in the reconcile engine one guest's task held its
// pass, and every pass after it, until the context ended. Such a status is
// now ErrUnexpectedResponse.
func TestRegression_UnknownTaskStatusWaitsForever(t *testing.T) {
	s := newSrv(t)
	s.handle("GET /nodes/pve1/tasks/"+string(testUPID)+"/status", func(w http.ResponseWriter, r *http.Request) {
		replyRaw(w, `{"data":{"status":7,"exitstatus":["OK"]}}`)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.tokenClient(t).WaitTask(ctx, testUPID)
	if !errors.Is(err, ErrUnexpectedResponse) || ctx.Err() != nil {
		t.Fatalf("WaitTask = %v (context: %v)", checkErr(t, err), ctx.Err())
	}
}
