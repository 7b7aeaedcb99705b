package journal

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/guestward/guestward/internal/fsx/fsxtest"
)

// fileMachine drives a FileJournal on a simulated disk with random appends
// (valid and not), clock moves, compactions, reopens and power losses, and
// compares it with a model after every step. Each step completes before the
// next, so every record is acknowledged when a power loss comes: whatever
// the disk keeps of unsynced state, the journal must come back exactly as
// the model.
type fileMachine struct {
	disk      *fsxtest.FS
	j         *FileJournal
	now       time.Time
	ret       retention
	threshold int64
	model     *index
	seq       uint64
	seen      int // compactions of the current handle already applied to the model
}

func (m *fileMachine) opts() []FileOption {
	return []FileOption{
		withFSSmall(m.disk),
		WithClock(func() time.Time { return m.now }),
		WithRetention(m.ret.ops),
		WithKeyRetention(m.ret.keys),
		WithCompactThreshold(m.threshold),
	}
}

func (m *fileMachine) open(t *rapid.T) {
	j, err := OpenFile(crashPath, m.opts()...)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	m.j, m.seen = j, 0
}

// syncCompactions applies to the model the compactions the journal ran by
// itself since the last check; they ran with the current clock.
func (m *fileMachine) syncCompactions() {
	m.j.waitIdle()
	for n := m.j.Stats().Compactions; m.seen < n; m.seen++ {
		m.compactModel()
	}
}

func (m *fileMachine) compactModel() {
	for id, st := range m.model.ops {
		if !m.ret.keep(&st.e, m.now) {
			m.model.remove(id)
		}
	}
}

func (m *fileMachine) check(t *rapid.T) {
	m.syncCompactions()
	if got, want := dumpJournal(m.j), dumpIndex(m.model); got != want {
		t.Fatalf("journal and model differ.\njournal:\n%s\nmodel:\n%s", got, want)
	}
}

var errClass = []error{ErrInvalidEntry, ErrInvalidTransition, ErrTerminal, ErrKeyConflict}

func sameClass(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	for _, c := range errClass {
		if errors.Is(a, c) != errors.Is(b, c) {
			return false
		}
	}
	return true
}

func (m *fileMachine) append(t *rapid.T) {
	e := Entry{
		OpID:  rapid.SampledFrom([]string{"a", "b", "c", "d", "e", "f"}).Draw(t, "op"),
		State: rapid.SampledFrom([]State{Started, Started, TaskRunning, Succeeded, Failed}).Draw(t, "state"),
		At:    m.now,
	}
	if e.State == Started || rapid.IntRange(0, 4).Draw(t, "identity") == 0 {
		e.VMID = rapid.IntRange(100, 101).Draw(t, "vmid")
		e.Kind = rapid.SampledFrom([]string{"start", "stop"}).Draw(t, "kind")
		e.IdempKey = rapid.SampledFrom([]string{"", "", "k1", "k2"}).Draw(t, "key")
		if rapid.Bool().Draw(t, "params") {
			e.Params = map[string]string{"memory": rapid.SampledFrom([]string{"512", "1024"}).Draw(t, "memory")}
		}
	}
	if e.State == TaskRunning || rapid.IntRange(0, 3).Draw(t, "upid") == 0 {
		e.UPID = fmt.Sprint("UPID:", rapid.IntRange(0, 9).Draw(t, "task"))
	}
	if rapid.Bool().Draw(t, "error") {
		e.Error = "boom"
	}
	// The model's verdict, from the rules as Merge states them.
	var prev *Entry
	if pe, ok := m.model.latest(e.OpID); ok {
		prev = &pe
	}
	_, want := Merge(prev, e)
	if want == nil && prev == nil {
		want = m.model.checkKey(e.OpID, e.IdempKey)
	}
	got := m.j.Append(context.Background(), e)
	if !sameClass(got, want) {
		t.Fatalf("Append(%+v) = %v, model says %v", e, got, want)
	}
	if want == nil {
		m.seq++
		if err := m.model.replay(&e, encodeParams(e.Params), false, m.seq); err != nil {
			t.Fatalf("model: %v", err)
		}
	}
}

func (m *fileMachine) advance(t *rapid.T) {
	m.now = m.now.Add(time.Duration(rapid.IntRange(0, 120).Draw(t, "minutes")) * time.Minute)
}

func (m *fileMachine) compact(t *rapid.T) {
	m.syncCompactions()
	if err := m.j.Compact(context.Background()); err != nil {
		t.Fatalf("Compact: %v", err)
	}
	m.compactModel()
	m.seen++
}

func (m *fileMachine) reopen(t *rapid.T) {
	m.syncCompactions()
	if err := m.j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	m.open(t)
}

func (m *fileMachine) powerLoss(t *rapid.T) {
	m.syncCompactions()
	variants := crashVariants()
	v := variants[rapid.IntRange(0, len(variants)-1).Draw(t, "boot")]
	m.j.Close()
	m.disk = m.disk.Recover(v.c)
	m.open(t)
}

func TestFileJournalStateMachine(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := &fileMachine{
			disk:      fsxtest.New(),
			now:       time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC),
			ret:       retention{ops: rapid.SampledFrom([]time.Duration{-1, 0, time.Hour}).Draw(t, "retention"), keys: rapid.SampledFrom([]time.Duration{-1, 90 * time.Minute}).Draw(t, "keyRetention")},
			threshold: rapid.SampledFrom([]int64{0, 300, 2000}).Draw(t, "threshold"),
			model:     newIndex(),
		}
		m.open(t)
		defer func() { m.j.Close() }()
		t.Repeat(map[string]func(*rapid.T){
			"append":    m.append,
			"advance":   m.advance,
			"compact":   m.compact,
			"reopen":    m.reopen,
			"powerLoss": m.powerLoss,
			"":          m.check,
		})
	})
}
