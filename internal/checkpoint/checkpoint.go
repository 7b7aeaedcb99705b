// Package checkpoint names the points between the steps of a reconcile
// operation at which a test can stop the engine, as a crash there would
// stop it, and carries the failpoints armed at those points on a context.
//
// It is a test hook, not API: guestward's crash tests (in package
// reconcile, its sibling packages, the examples and the etcd journal's
// module) import it, while a program built on guestward cannot, so no
// production engine can be told to abandon an operation half-way.
//
// # Model
//
// The engine journals an operation's intent before it sends anything to
// Proxmox, its task once Proxmox has answered, and its outcome once the
// task has ended. Between those steps it calls [Reach] with the context
// the operation runs under. Reach finds the [failpoint.Set] a test put on
// that context with [With], if any, and evaluates the named point there.
// A non-nil result aborts the operation right at that point: nothing more
// is journaled or sent, its error wraps [ErrInterrupted] and the
// failpoint's own error, and the operation stays in flight for Recover
// to resolve, exactly as after a crash at that step.
//
// A test arms a point with a function that decides what happens there:
//
//	fp := new(failpoint.Set)
//	fp.Enable(checkpoint.AfterCall, func() error { return errCrash })
//	rep, err := engine.ReconcileOnce(checkpoint.With(ctx, fp))
//
// The Set rides on the context rather than on the engine, so it reaches
// every operation a call starts (a pass, a one-shot, a revert, the
// recovery and passes of Run) and nothing else: a second call on the same
// engine with a plain context runs unharmed. A context without a Set
// costs one context lookup per point.
package checkpoint

import (
	"context"
	"errors"
	"fmt"

	"github.com/guestward/guestward/internal/failpoint"
)

// The points, in the order an operation reaches them. An operation
// without a task (an LXC configuration change) skips the two task points;
// an attempt that Proxmox refused because the guest was locked goes
// round from AfterWait to AfterCall again.
const (
	BeforeIntent    = "op/before-intent"     // nothing journaled, nothing sent
	AfterIntent     = "op/after-intent"      // intent journaled, nothing sent
	AfterCall       = "op/after-call"        // sent; the answer (a UPID) not journaled
	AfterTaskRecord = "op/after-task-record" // the task journaled, not awaited
	AfterWait       = "op/after-wait"        // the task ended; its outcome not journaled
	AfterOutcome    = "op/after-outcome"     // the outcome journaled
)

// Names returns the names of the points, in the order an operation
// reaches them. The slice is new on every call.
func Names() []string {
	return []string{BeforeIntent, AfterIntent, AfterCall, AfterTaskRecord, AfterWait, AfterOutcome}
}

// ErrInterrupted is wrapped by the error of an operation that a failpoint
// stopped at one of the points.
var ErrInterrupted = errors.New("reconcile: operation interrupted")

// key is the context key of the Set; its type is unexported so that no
// other package can read or replace the value.
type key struct{}

// With returns a copy of ctx that carries fp: operations run under it, or
// under a context derived from it, evaluate fp at each point. A nil fp
// removes the Set ctx carried.
func With(ctx context.Context, fp *failpoint.Set) context.Context {
	return context.WithValue(ctx, key{}, fp)
}

// Reach evaluates the point called name in the Set ctx carries, and
// returns nil when it carries none or nothing is enabled there. A non-nil
// error from the failpoint is returned wrapped so that errors.Is matches
// both [ErrInterrupted] and that error, and its text names the point.
func Reach(ctx context.Context, name string) error {
	fp, _ := ctx.Value(key{}).(*failpoint.Set)
	if err := fp.Eval(name); err != nil {
		return &interruptedError{point: name, err: err}
	}
	return nil
}

type interruptedError struct {
	point string
	err   error
}

func (e *interruptedError) Error() string {
	return fmt.Sprintf("reconcile: operation interrupted at %s: %v", e.point, e.err)
}

func (e *interruptedError) Unwrap() []error { return []error{ErrInterrupted, e.err} }
