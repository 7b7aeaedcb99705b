package journaltest_test

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/journaltest"
)

// The suite's own test: it runs against the in-memory journal, whose
// reopening hands out a new handle on the same records.
func TestRunMemory(t *testing.T) {
	var mu sync.Mutex
	byDir := map[string]*journal.MemoryJournal{}
	journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
		mu.Lock()
		defer mu.Unlock()
		m, ok := byDir[dir]
		if ok {
			m = m.Reopen()
		} else {
			m = journal.NewMemory()
		}
		byDir[dir] = m
		return m
	})
}

// Run needs a *testing.T, so this example is compiled but not run. A
// backend's test file calls Run with a function that opens the journal kept
// in the directory it is given.
func ExampleRun() {
	_ = func(t *testing.T) {
		journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
			j, err := journal.OpenFile(filepath.Join(dir, "ops.journal"))
			if err != nil {
				t.Fatal(err)
			}
			return j
		})
	}
}
