package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/proxmox"
)

// unreachable is a cluster the test must not talk to: every method of the
// nil interface it embeds panics.
type unreachable struct{ Proxmox }

func chainEngine(t *testing.T) (*Engine, *journal.MemoryJournal) {
	t.Helper()
	j := journal.NewMemory()
	e, err := NewEngine(Config{Proxmox: unreachable{}, Journal: j, SettleDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	return e, j
}

// journalAttempt records attempt n at key as an operation that ended in
// state, with errText.
func journalAttempt(t *testing.T, j journal.Journal, s OneShot, n int, state journal.State, errText string) string {
	t.Helper()
	ctx := context.Background()
	o := s.op()
	o.id, o.key = fmt.Sprintf("op-%d", n), attemptKey(s.Key, n)
	if err := j.Append(ctx, journal.Entry{OpID: o.id, VMID: o.ref.VMID, Kind: string(o.kind), Params: o.params(),
		State: journal.Started, IdempKey: o.key, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(ctx, journal.Entry{OpID: o.id, State: state, Error: errText}); err != nil {
		t.Fatal(err)
	}
	return o.id
}

var chainShot = OneShot{Key: "k", Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 100}, Kind: ActionStart}

// The journal's retention drops failed operations by age but keeps those
// that succeeded: a key whose first attempts are gone may still be held
// by a later one, which must be found, not run again.
func TestKeyAttemptsAreFoundPastAttemptsDroppedByRetention(t *testing.T) {
	e, j := chainEngine(t)
	id := journalAttempt(t, j, chainShot, 3, journal.Succeeded, "")
	res, err := e.Apply(context.Background(), chainShot)
	if err != nil || !res.Replayed || res.OpID != id || res.Attempt != 3 || res.Key != "k" {
		t.Fatalf("%+v %v", res, err)
	}
	other := chainShot
	other.Kind = ActionStop
	if _, err := e.Apply(context.Background(), other); !errors.Is(err, ErrKeyConflict) {
		t.Fatalf("another request: %v", err)
	}
}

// A key gets MaxKeyAttempts attempts: the last one consumes it.
func TestKeyAttemptsAreBounded(t *testing.T) {
	e, j := chainEngine(t)
	var last string
	for n := 1; n <= MaxKeyAttempts; n++ {
		last = journalAttempt(t, j, chainShot, n, journal.Failed, nothingDoneMark+"proxmox: VM is locked (backup)")
	}
	res, err := e.Apply(context.Background(), chainShot)
	if err != nil || !res.Replayed || res.OpID != last || res.KeyUnused || res.Attempt != MaxKeyAttempts ||
		res.Error != "proxmox: VM is locked (backup)" {
		t.Fatalf("%+v %v", res, err)
	}
}

// An attempt in flight is not run past; an attempt that consumed the key
// ends the walk, whatever comes after.
func TestKeyAttemptsStopAtTheFirstThatDidSomething(t *testing.T) {
	e, j := chainEngine(t)
	journalAttempt(t, j, chainShot, 1, journal.Failed, nothingDoneMark+"locked")
	consumed := journalAttempt(t, j, chainShot, 2, journal.Failed, "start failed")
	res, err := e.Apply(context.Background(), chainShot)
	if err != nil || !res.Replayed || res.OpID != consumed || res.KeyUnused || res.Attempt != 2 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestAttemptKeys(t *testing.T) {
	for _, k := range []string{"k", "ticket/1", "a b"} {
		for n := 1; n <= MaxKeyAttempts; n++ {
			jk := attemptKey(k, n)
			if userKey(jk) != k {
				t.Fatalf("attempt %d at %q: %q", n, k, jk)
			}
			if n > 1 && validateKey(jk) == nil {
				t.Fatalf("the journal key %q of attempt %d is a valid key", jk, n)
			}
		}
	}
	if long := attemptKey(strings.Repeat("k", MaxKeyLen), MaxKeyAttempts); len(long) > journal.MaxIDLen {
		t.Fatalf("the last attempt at the longest key has a journal key of %d bytes", len(long))
	}
	if userKey("plain") != "plain" {
		t.Fatal("userKey changed a first attempt's key")
	}
}
