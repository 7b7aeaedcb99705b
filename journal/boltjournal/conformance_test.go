package boltjournal_test

import (
	"path/filepath"
	"testing"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/boltjournal"
	"github.com/guestward/guestward/journal/journaltest"
)

func TestConformance(t *testing.T) {
	journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
		j, err := boltjournal.Open(filepath.Join(dir, "journal.db"))
		if err != nil {
			t.Fatal(err)
		}
		return j
	})
}
