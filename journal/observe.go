package journal

import (
	"context"
	"time"
)

// AppendInfo describes one call of Append on a journal wrapped by
// [Observe], for metrics and traces.
type AppendInfo struct {
	// State is the state the record carries.
	State State
	// Size is the record's size in the journal's binary format
	// ([Entry.MarshalBinary]), in bytes: exact but for its time, counted
	// at the most a time can take, so at most a few bytes over. Backends
	// add their own framing, and etcd its own encoding.
	Size int
	// Duration is how long Append took: validating, writing and waiting
	// for the record to be durable (with the writes and syncs it shared
	// with concurrent Appends).
	Duration time.Duration
	// Err is what Append returned.
	Err error
}

// Observe returns j with fn called after every Append, with what the record
// was, how long Append took and how it ended: the seam for journal metrics,
// without a metrics library in this package. Every other method goes to j
// unchanged, and the result implements [KeyLookup] and [OpLister] exactly
// when j does, so that a caller that asks for them (the reconcile engine
// requires OpLister, and Apply KeyLookup) sees the same journal. Other
// methods of j (a FileJournal's Compact and Stats, say) are not on the
// result; keep j for them. Unwrap on the result returns j.
//
// fn runs on the goroutine that called Append, after it returned; it must be
// quick and safe for concurrent use. With a nil j or fn, Observe returns j
// itself. Closing the result closes j. The result is safe for concurrent
// use when j is.
func Observe(j Journal, fn func(AppendInfo)) Journal {
	if j == nil || fn == nil {
		return j
	}
	o := &observed{Journal: j, fn: fn}
	kl, isKL := j.(KeyLookup)
	ol, isOL := j.(OpLister)
	switch {
	case isKL && isOL:
		return observedBoth{o, kl, ol}
	case isKL:
		return observedKeys{o, kl}
	case isOL:
		return observedOps{o, ol}
	}
	return o
}

// observed is a journal whose Appends are reported; the types below add
// the optional capabilities the wrapped journal has.
type observed struct {
	Journal
	fn func(AppendInfo)
}

type observedKeys struct {
	*observed
	KeyLookup
}

type observedOps struct {
	*observed
	OpLister
}

type observedBoth struct {
	*observed
	KeyLookup
	OpLister
}

var (
	_ Journal   = (*observed)(nil)
	_ KeyLookup = observedKeys{}
	_ OpLister  = observedOps{}
	_ KeyLookup = observedBoth{}
	_ OpLister  = observedBoth{}
)

// Append appends e to the wrapped journal and reports the call.
func (o *observed) Append(ctx context.Context, e Entry) error {
	size := e.encodedSize()
	for k, v := range e.Params {
		size += paramSize(k, v)
	}
	start := time.Now()
	err := o.Journal.Append(ctx, e)
	o.fn(AppendInfo{State: e.State, Size: size, Duration: time.Since(start), Err: err})
	return err
}

// Unwrap returns the journal given to Observe.
func (o *observed) Unwrap() Journal { return o.Journal }
