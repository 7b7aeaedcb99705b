package journal_test

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/journaltest"
)

func TestFileConformance(t *testing.T) {
	journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
		j, err := journal.OpenFile(filepath.Join(dir, "ops.journal"))
		if err != nil {
			t.Fatal(err)
		}
		return j
	})
}

// The compaction threshold is tiny here so that the suite runs with the
// journal compacting itself between its appends.
func TestFileConformanceCompacting(t *testing.T) {
	journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
		j, err := journal.OpenFile(filepath.Join(dir, "ops.journal"), journal.WithCompactThreshold(512))
		if err != nil {
			t.Fatal(err)
		}
		return j
	})
}

func TestMemoryConformance(t *testing.T) {
	var mu sync.Mutex
	byDir := map[string]*journal.MemoryJournal{}
	journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
		mu.Lock()
		defer mu.Unlock()
		if m, ok := byDir[dir]; ok {
			m = m.Reopen()
			byDir[dir] = m
			return m
		}
		m := journal.NewMemory()
		byDir[dir] = m
		return m
	})
}
