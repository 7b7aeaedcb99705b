package queue

// AfterDoEnqueue installs fn, called under the key's shard lock once a Do
// call's job is in line (or has started on the caller's goroutine), so that
// tests can order a Do against later submissions of the same key without
// polling. nil removes it.
func AfterDoEnqueue[K comparable](q *Queue[K], fn func()) {
	if fn == nil {
		q.afterDoEnqueue.Store(nil)
		return
	}
	q.afterDoEnqueue.Store(&fn)
}
