package boltjournal_test

import (
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/boltjournal"
	"github.com/guestward/guestward/journal/journaltest"
)

// A bbolt journal wrapped by journal.Observe (for metrics) is still a
// journal the suite accepts, KeyLookup and OpLister included.
func TestObservedConformance(t *testing.T) {
	var appends atomic.Int64
	journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
		j, err := boltjournal.Open(filepath.Join(dir, "journal.db"))
		if err != nil {
			t.Fatal(err)
		}
		o := journal.Observe(j, func(journal.AppendInfo) { appends.Add(1) })
		if _, ok := o.(journal.KeyLookup); !ok {
			t.Fatal("the observed bbolt journal lost KeyLookup")
		}
		return o
	})
	if appends.Load() == 0 {
		t.Error("no append was reported")
	}
}
