package boltjournal_test

import (
	"context"
	"flag"
	"path/filepath"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/boltjournal"
	"github.com/guestward/guestward/journal/internal/killtest"
)

var killRounds = flag.Int("kill.rounds", 12, "child processes TestKill starts and SIGKILLs; raise it for a longer run")

func openForKill(path string) (journal.Journal, error) {
	return boltjournal.Open(path, boltjournal.WithMaxBatchSize(8))
}

// TestKill is the bbolt counterpart of the file journal's kill test; the
// child also reclaims space with Compact now and then, so kills land in the
// file swap too.
func TestKill(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	path := filepath.Join(t.TempDir(), "journal.db")
	killtest.Parent(t, path, "TestKillChild", openForKill, killtest.Options{Rounds: *killRounds, MaxAcks: 200, Seed: seed})
}

// TestKillChild is the child process of TestKill; run directly, it skips.
func TestKillChild(t *testing.T) {
	killtest.Child(t, openForKill, func(j journal.Journal) error {
		return j.(*boltjournal.Journal).Compact(context.Background())
	})
}
