package queue

// AfterDoEnqueue installs fn, called under the queue's lock once a Do call's
// job is in line (or has started on the caller's goroutine), so that tests
// can order a Do against later submissions without polling. nil removes it.
func AfterDoEnqueue[K comparable](q *Queue[K], fn func()) {
	q.mu.Lock()
	q.afterDoEnqueue = fn
	q.mu.Unlock()
}
