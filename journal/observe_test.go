package journal_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/journaltest"
)

// The wrapper is a journal like any other: it passes the suite over both
// built-in backends, and reports the suite's appends.
func TestObservedConformance(t *testing.T) {
	var appends atomic.Int64
	count := func(journal.AppendInfo) { appends.Add(1) }
	t.Run("File", func(t *testing.T) {
		journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
			j, err := journal.OpenFile(filepath.Join(dir, "ops.journal"))
			if err != nil {
				t.Fatal(err)
			}
			return journal.Observe(j, count)
		})
	})
	t.Run("Memory", func(t *testing.T) {
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
			return journal.Observe(m, count)
		})
	})
	if appends.Load() == 0 {
		t.Error("the suite's appends were not reported")
	}
}

// bare hides every method of a journal but the Journal interface's, and
// adds back the capabilities asked for.
type bare struct{ journal.Journal }

type bareKeys struct {
	journal.Journal
	journal.KeyLookup
}

type bareOps struct {
	journal.Journal
	journal.OpLister
}

func TestObserveKeepsCapabilities(t *testing.T) {
	m := journal.NewMemory()
	defer m.Close()
	tests := []struct {
		name      string
		j         journal.Journal
		keys, ops bool
		why       string
	}{
		{"both", m, true, true, "every journal of this module has both, and the engine needs OpLister"},
		{"neither", bare{m}, false, false, "the wrapper must not claim what the journal cannot do"},
		{"keys only", bareKeys{m, m}, true, false, "Apply tells a journal without KeyLookup by its absence"},
		{"ops only", bareOps{m, m}, false, true, "NewEngine refuses a journal without OpLister"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := journal.Observe(tt.j, func(journal.AppendInfo) {})
			_, keys := o.(journal.KeyLookup)
			_, ops := o.(journal.OpLister)
			if keys != tt.keys || ops != tt.ops {
				t.Errorf("observed journal: KeyLookup %v, OpLister %v; want %v, %v (%s)", keys, ops, tt.keys, tt.ops, tt.why)
			}
			u, ok := o.(interface{ Unwrap() journal.Journal })
			if !ok || u.Unwrap() != tt.j {
				t.Errorf("Unwrap does not return the wrapped journal")
			}
		})
	}
	if got := journal.Observe(m, nil); got != journal.Journal(m) {
		t.Errorf("Observe with a nil func wrapped the journal: %T", got)
	}
	if got := journal.Observe(nil, func(journal.AppendInfo) {}); got != nil {
		t.Errorf("Observe(nil) = %T, want nil", got)
	}
}

func TestObserveReportsAppends(t *testing.T) {
	ctx := context.Background()
	m := journal.NewMemory()
	defer m.Close()
	var infos []journal.AppendInfo
	j := journal.Observe(m, func(ai journal.AppendInfo) { infos = append(infos, ai) })

	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	intent := journal.Entry{OpID: "op-1", VMID: 100, Kind: "set_config", Params: map[string]string{"set.memory": "4096", "digest": "abc"}, State: journal.Started, At: at}
	if err := j.Append(ctx, intent); err != nil {
		t.Fatal(err)
	}
	// After a terminal record nothing may follow: the refusal is reported
	// with its error.
	if err := j.Append(ctx, journal.Entry{OpID: "op-1", State: journal.Succeeded, At: at}); err != nil {
		t.Fatal(err)
	}
	err := j.Append(ctx, journal.Entry{OpID: "op-1", State: journal.Failed, At: at})
	if !errors.Is(err, journal.ErrTerminal) {
		t.Fatalf("append after a terminal record: %v", err)
	}
	if len(infos) != 3 {
		t.Fatalf("got %d reports for 3 appends", len(infos))
	}
	enc, err := intent.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if s := infos[0].Size; s < len(enc) || s > len(enc)+10 {
		t.Errorf("intent reported as %d bytes, its encoding is %d", s, len(enc))
	}
	if infos[0].State != journal.Started || infos[0].Err != nil || infos[0].Duration < 0 {
		t.Errorf("intent reported as %+v", infos[0])
	}
	if infos[1].State != journal.Succeeded || infos[1].Err != nil || infos[1].Size >= infos[0].Size {
		t.Errorf("outcome reported as %+v (intent %d bytes)", infos[1], infos[0].Size)
	}
	if !errors.Is(infos[2].Err, journal.ErrTerminal) {
		t.Errorf("refused append reported with error %v", infos[2].Err)
	}
}

// Appends timed and sized as they happen, for a metrics library to count.
func ExampleObserve() {
	ctx := context.Background()
	m := journal.NewMemory()
	var records, bytes int
	j := journal.Observe(m, func(ai journal.AppendInfo) {
		if ai.Err == nil {
			records++
			bytes += ai.Size
		}
	})
	defer j.Close()

	j.Append(ctx, journal.Entry{OpID: "op-1", VMID: 101, Kind: "start", State: journal.Started})
	j.Append(ctx, journal.Entry{OpID: "op-1", State: journal.Succeeded})

	_, lists := j.(journal.OpLister)
	fmt.Println(records, bytes > 0, lists)
	// Output:
	// 2 true true
}
