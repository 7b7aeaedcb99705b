package journal_test

import (
	"context"
	"flag"
	"path/filepath"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/internal/killtest"
)

var killRounds = flag.Int("kill.rounds", 20, "child processes TestKill starts and SIGKILLs; raise it for a longer run")

func openForKill(path string) (journal.Journal, error) {
	// Small threshold: the child compacts by itself too, so kills land in
	// compactions as well as in appends.
	return journal.OpenFile(path, journal.WithCompactThreshold(64<<10), journal.WithRetention(-1))
}

// TestKill starts a child process that appends from 8 goroutines, SIGKILLs
// it after a random number of acknowledged records (sometimes before the
// first), and checks after each kill that every acknowledged record is in
// the journal. The journal carries over from round to round.
func TestKill(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	path := filepath.Join(t.TempDir(), "ops.journal")
	killtest.Parent(t, path, "TestKillChild", openForKill, killtest.Options{Rounds: *killRounds, MaxAcks: 300, Seed: seed})
}

// TestKillChild is the child process of TestKill; run directly, it skips.
func TestKillChild(t *testing.T) {
	killtest.Child(t, openForKill, func(j journal.Journal) error {
		return j.(*journal.FileJournal).Compact(context.Background())
	})
}
