package reconcile

import (
	"testing"
	"time"
)

// BenchmarkPassTick measures what following one guest costs a pass (an
// op is a guest): the status update every guest makes, and the coalesced
// OnProgress call.
func BenchmarkPassTick(b *testing.B) {
	for _, tc := range []struct {
		name string
		on   func(Progress)
	}{{"no-callback", nil}, {"callback", func(Progress) {}}} {
		b.Run(tc.name, func(b *testing.B) {
			// No request is made: an interface with no implementation will do.
			e, err := NewEngine(Config{Proxmox: struct{ Proxmox }{}, DryRun: true, OnProgress: tc.on})
			if err != nil {
				b.Fatal(err)
			}
			tr := e.beginPass(false, time.Now())
			b.ReportAllocs()
			const total = 5000
			tr.phase(PhaseObserve, total)
			n := 0
			for b.Loop() {
				if n == total {
					tr.phase(PhaseObserve, total)
					n = 0
				}
				tr.tick()
				n++
			}
		})
	}
}
