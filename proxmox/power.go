package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// ErrInvalidArgument is returned, wrapped, for an argument that is not a
// [Ref] or a [ConfigChange] and that Proxmox would refuse (a negative
// timeout, a bad node name in a task query). Nothing is sent.
var ErrInvalidArgument = errors.New("proxmox: invalid argument")

// Start starts a guest: POST /nodes/{node}/{type}/{vmid}/status/start. It
// returns the UPID of the start task (type "qmstart" or "vzstart"); wait
// for it with [Client.WaitTask]. An HA-managed guest is different; see
// below.
//
// Where Proxmox reports failures differs by type: an LXC container that is
// already running fails here, synchronously, with [ErrAlreadyRunning];
// a QEMU VM that is already running, is locked ([ErrLocked]) or does not
// exist ([ErrNotFound]) yields a UPID whose task fails. Match the class on
// either error, not the place.
//
// For a guest managed by Proxmox's HA stack ([GuestStatus.HAManaged],
// [Guest.HAState] not empty), Start, [Client.Stop] and [Client.Shutdown]
// do not act on the guest. The task they return, of type "hastart" or
// "hastop", only hands the request to the HA manager, and succeeds once it
// has. The HA manager then changes the service state
// ([GuestStatus.HAState]: "started", or "request_stop" and then
// "stopped") and starts or stops the guest in a task of its own, which
// runs as root@pam rather than as [Client.TaskUser]: "qmstart" or
// "vzstart"; "qmstop" or "vzstop" for a stop; "qmshutdown" or
// "vzshutdown" for a shutdown. Waiting for the returned task therefore
// does not mean the guest changed state: watch [Client.Status], or that
// task in [Client.Tasks]. [Client.Reboot] is not routed through HA.
func (c *Client) Start(ctx context.Context, ref Ref) (UPID, error) {
	return c.power(ctx, ref, "start", nil)
}

// Stop stops a guest immediately, like pulling the plug: POST
// .../status/stop. It returns the task's UPID ("qmstop", "vzstop", or
// "hastop" for an HA-managed guest: see [Client.Start]). Stopping a
// stopped QEMU VM is a successful no-op task; stopping a stopped LXC
// container fails synchronously with [ErrNotRunning].
func (c *Client) Stop(ctx context.Context, ref Ref) (UPID, error) {
	return c.power(ctx, ref, "stop", nil)
}

// MaxShutdownTimeout is the longest timeout [Client.Shutdown] accepts,
// 2³¹−1 seconds (about 68 years). Proxmox takes the timeout as a whole
// number of seconds with no upper bound of its own, but hands it to
// lxc-stop for a container, which reads it into a 32-bit integer and
// fails above this.
const MaxShutdownTimeout = (1<<31 - 1) * time.Second

// Shutdown asks the guest's operating system to shut down: POST
// .../status/shutdown, with timeout (rounded up to whole seconds) as the
// time Proxmox waits for it; 0 leaves Proxmox's default (60 s unless the
// guest's startup order sets one). A negative timeout, or one longer than
// [MaxShutdownTimeout], is refused with [ErrInvalidArgument] before
// anything is sent, not shortened. It returns the task's UPID
// ("qmshutdown", "vzshutdown", or "hastop" for an HA-managed guest: see
// [Client.Start]). If the guest does not stop in
// time the task fails; Proxmox is not asked to force a stop, so decide
// yourself whether to follow with [Client.Stop]. A stopped QEMU VM is a
// successful no-op; a stopped LXC container fails synchronously with
// [ErrNotRunning].
func (c *Client) Shutdown(ctx context.Context, ref Ref, timeout time.Duration) (UPID, error) {
	if timeout < 0 {
		return "", fmt.Errorf("%w: shutdown timeout %s is negative", ErrInvalidArgument, timeout)
	}
	if timeout > MaxShutdownTimeout {
		// Checked before rounding up, which would overflow near the
		// largest Duration and send a negative number.
		return "", fmt.Errorf("%w: shutdown timeout %s is longer than %s", ErrInvalidArgument, timeout, MaxShutdownTimeout)
	}
	var form url.Values
	if timeout > 0 {
		secs := (timeout + time.Second - 1) / time.Second
		form = url.Values{"timeout": {strconv.FormatInt(int64(secs), 10)}}
	}
	return c.power(ctx, ref, "shutdown", form)
}

// Reboot restarts a running guest: POST .../status/reboot (a shutdown
// followed by a start, which also applies pending config changes). It
// returns the task's UPID ("qmreboot" or "vzreboot"). A guest that is not
// running fails synchronously with [ErrNotRunning].
func (c *Client) Reboot(ctx context.Context, ref Ref) (UPID, error) {
	return c.power(ctx, ref, "reboot", nil)
}

func (c *Client) power(ctx context.Context, ref Ref, action string, form url.Values) (UPID, error) {
	if err := ref.Validate(); err != nil {
		return "", err
	}
	var u upidData
	r := &request{method: http.MethodPost, path: guestPath(ref, "/status/"+action), form: form}
	if err := c.call(ctx, r, &u); err != nil {
		return "", err
	}
	if u == "" {
		return "", c.answerErr(r.method, r.path, fmt.Errorf("%w: no UPID in the answer", ErrUnexpectedResponse))
	}
	if err := checkTaskOf(UPID(u), ref); err != nil {
		return "", c.answerErr(r.method, r.path, err)
	}
	return UPID(u), nil
}

// checkTaskOf checks that a UPID answering a request about ref names a
// task of that guest on that node, as every task Proxmox starts for a
// guest does; any other is not the task the request started.
func checkTaskOf(upid UPID, ref Ref) error {
	info, err := ParseUPID(string(upid))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnexpectedResponse, err)
	}
	if info.Node != ref.Node || info.ID != strconv.Itoa(ref.VMID) {
		return fmt.Errorf("%w: the answer names task %s, not a task of %s", ErrUnexpectedResponse, upid, ref)
	}
	return nil
}
