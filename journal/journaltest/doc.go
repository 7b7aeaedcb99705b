// Package journaltest checks that a [journal.Journal] keeps the journal's
// promises. Every backend in this module runs it, and so should any backend
// written elsewhere:
//
//	func TestConformance(t *testing.T) {
//		journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
//			j, err := mybackend.Open(filepath.Join(dir, "journal"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			return j
//		})
//	}
//
// # What it checks
//
//   - the lifecycle (started, task_running, succeeded or failed), the merged
//     view Latest returns, and that the latest record wins;
//   - InFlight: exactly the operations not yet terminal, in start order;
//   - [journal.OpLister], which the reconcile engine requires: every
//     operation's latest state, in start order;
//   - AlreadyApplied (and [journal.KeyLookup] when implemented);
//   - rejection of bad input with the documented sentinel errors, leaving
//     the journal unchanged, also after reopening;
//   - durability across reopening: open, append, close, open again on the
//     same directory, and everything acknowledged is there;
//   - concurrent appenders and readers (run it under -race), including
//     racing appends of which exactly one may win;
//   - context cancellation and use after Close;
//   - a randomized sequence of appends and reopens against a simple model
//     of the rules, with fixed seeds so failures reproduce.
//
// # What the open function must do
//
// open is called with a directory, possibly several times with the same one:
// each call must return a new open handle on the journal stored there, seeing
// everything acknowledged by handles closed before. The suite closes every
// handle it opens before opening the next one on the same directory, and
// closes handles twice (the second Close must not fail). The journal must use
// the real clock and keep terminal operations for at least an hour.
//
// # Limits
//
// The suite does not crash the machine: durability across power loss needs a
// backend-specific test (the file backend has one that simulates it, and one
// that kills a real process). Timing and throughput are not checked.
package journaltest
