package etcdjournal

import (
	"sync"
	"testing"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/journaltest"
)

// TestConformance runs the journal conformance suite: each directory the
// suite uses maps to a prefix of its own on the shared etcd, and each open
// is a new handle.
func TestConformance(t *testing.T) {
	_, cli := sharedEtcd(t)
	var mu sync.Mutex
	prefixes := map[string]string{}
	journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
		mu.Lock()
		p, ok := prefixes[dir]
		if !ok {
			p = newPrefix(t)
			prefixes[dir] = p
		}
		mu.Unlock()
		j, err := Open(t.Context(), cli, p)
		if err != nil {
			t.Fatal(err)
		}
		return j
	})
}
