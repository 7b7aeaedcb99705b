package boltjournal

import (
	"log/slog"
	"time"

	"github.com/guestward/guestward/internal/failpoint"
	"github.com/guestward/guestward/journal"
)

// Option configures [Open]. Options are immutable values, safe to share and
// reuse.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	noSync        bool
	logger        *slog.Logger
	now           func() time.Time
	retention     time.Duration
	keyRetention  time.Duration
	maxBatchSize  int
	maxBatchDelay time.Duration
	fp            *failpoint.Set
}

// Defaults for batching concurrent appends; see [WithMaxBatchSize].
const (
	DefaultMaxBatchSize  = 64
	DefaultMaxBatchDelay = 2 * time.Millisecond
)

func defaultConfig() config {
	return config{
		logger:        slog.New(slog.DiscardHandler),
		now:           time.Now,
		retention:     journal.DefaultRetention,
		keyRetention:  -1,
		maxBatchSize:  DefaultMaxBatchSize,
		maxBatchDelay: DefaultMaxBatchDelay,
	}
}

// WithNoSync makes commits skip fdatasync, so Append returns before its
// record is on stable storage.
//
// This is unsafe: a machine crash or power loss can lose acknowledged records
// or, as bbolt documents for its NoSync mode, damage the database. Use it only
// for bulk loading and tests.
func WithNoSync() Option {
	return optionFunc(func(c *config) { c.noSync = true })
}

// WithLogger sets the logger for the rare events worth telling an operator
// (a compaction, a repair). nil (the default) discards them.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l != nil {
			c.logger = l
		}
	})
}

// WithClock sets the clock that stamps entries whose At is zero and that
// retention measures age against. The default is [time.Now].
func WithClock(now func() time.Time) Option {
	return optionFunc(func(c *config) {
		if now != nil {
			c.now = now
		}
	})
}

// WithRetention sets how long a terminal operation is kept, counted from the
// At of its last record, as journal.WithRetention does for the file backend:
// zero drops terminal operations as soon as pruning sees them, a negative d
// keeps them forever, and the default is [journal.DefaultRetention].
// Succeeded operations holding an idempotency key follow [WithKeyRetention].
//
// Expired operations are pruned a few at a time by later appends, and all at
// once by Open and [Journal.Compact].
func WithRetention(d time.Duration) Option {
	return optionFunc(func(c *config) { c.retention = d })
}

// WithKeyRetention sets how long a Succeeded operation that holds an
// idempotency key is kept. A negative d, the default, keeps applied keys
// forever.
func WithKeyRetention(d time.Duration) Option {
	return optionFunc(func(c *config) { c.keyRetention = d })
}

// WithMaxBatchSize sets how many concurrent appends bbolt's Batch commits in
// one transaction (bbolt's DB.MaxBatchSize). A batch commits as soon as it
// holds this many appends, or after the batch delay. Set it to the number of
// goroutines that append concurrently for the highest throughput. n <= 0
// keeps the default, [DefaultMaxBatchSize].
//
// An Append that finds no other Append in progress commits at once in its
// own transaction, so a lone writer never waits for the delay.
func WithMaxBatchSize(n int) Option {
	return optionFunc(func(c *config) {
		if n > 0 {
			c.maxBatchSize = n
		}
	})
}

// WithMaxBatchDelay sets how long a batch of concurrent appends waits for
// more appends before it commits (bbolt's DB.MaxBatchDelay). d <= 0 keeps
// the default, [DefaultMaxBatchDelay].
func WithMaxBatchDelay(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.maxBatchDelay = d
		}
	})
}

// withFailpoints lets tests interrupt the journal at its named steps.
func withFailpoints(fp *failpoint.Set) Option {
	return optionFunc(func(c *config) { c.fp = fp })
}
