package etcdjournal

import (
	"log/slog"
	"time"

	"github.com/guestward/guestward/journal"
)

// Option configures [Open] and [Campaign]. Options are immutable values,
// safe to share and reuse. Options that only concern leadership (such as
// [WithTTL]) are ignored by Open.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	now             func() time.Time
	logger          *slog.Logger
	retention       time.Duration
	keyRetention    time.Duration
	pageSize        int64
	requestTimeout  time.Duration
	compactInterval time.Duration
	ttl             int64 // seconds
	// pause, set only by this package's tests, stops the leader's lease
	// keep-alive and its loss watch, as if the process were frozen.
	pause chan struct{}
}

// Defaults of the options.
const (
	// DefaultPageSize is how many records one read of a listing fetches.
	DefaultPageSize = 500
	// DefaultRequestTimeout bounds one etcd request; past it the call
	// fails with [ErrUnavailable].
	DefaultRequestTimeout = 5 * time.Second
	// DefaultCompactInterval is how often an open journal drops the
	// terminal operations retention no longer keeps.
	DefaultCompactInterval = time.Hour
	// DefaultTTL is the lease TTL of a [Leader], in seconds: how long
	// after its last keep-alive a silent leader loses leadership.
	DefaultTTL = 10
)

func defaultConfig() config {
	return config{
		now:             time.Now,
		logger:          slog.New(slog.DiscardHandler),
		retention:       journal.DefaultRetention,
		keyRetention:    -1,
		pageSize:        DefaultPageSize,
		requestTimeout:  DefaultRequestTimeout,
		compactInterval: DefaultCompactInterval,
		ttl:             DefaultTTL,
	}
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

// WithLogger sets the logger for the rare events worth telling an operator:
// a compaction that dropped operations, a lost leadership. nil (the default)
// discards them.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		c.logger = l
	})
}

// WithRetention sets how long compaction keeps a terminal operation, counted
// from the At of its last record. Succeeded operations that hold an
// idempotency key follow [WithKeyRetention] instead. Zero drops terminal
// operations at the next compaction; a negative d keeps them forever. The
// default is journal.DefaultRetention, as for the file journal.
//
// Once an operation is dropped, Latest no longer knows it, and its op ID
// (and, for a failed operation, its idempotency key) may be used again.
func WithRetention(d time.Duration) Option {
	return optionFunc(func(c *config) { c.retention = d })
}

// WithKeyRetention sets how long compaction keeps a Succeeded operation that
// holds an idempotency key, counted from the At of its last record. A
// negative d, the default, keeps applied keys forever, which is what makes a
// one-shot operation run at most once ever; any other value limits that
// promise to d.
func WithKeyRetention(d time.Duration) Option {
	return optionFunc(func(c *config) { c.keyRetention = d })
}

// WithPageSize sets how many records one etcd range request of a listing
// (Open's scan, InFlight, Ops, Compact) fetches; the listing reads page by
// page at one revision, so it never asks etcd for everything at once.
// Values below 1 select [DefaultPageSize].
func WithPageSize(n int) Option {
	return optionFunc(func(c *config) {
		if n < 1 {
			n = DefaultPageSize
		}
		c.pageSize = int64(n)
	})
}

// WithRequestTimeout bounds each etcd request the journal makes, so that a
// cluster without quorum gives a prompt [ErrUnavailable] instead of a call
// that waits as long as its context allows. Zero or negative leaves requests
// bounded by the caller's context alone. The default is
// [DefaultRequestTimeout].
func WithRequestTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.requestTimeout = d })
}

// WithCompactInterval sets how often an open journal runs [Journal.Compact]
// in the background; zero or negative turns that off (Open still compacts
// once). The default is [DefaultCompactInterval].
func WithCompactInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.compactInterval = d })
}

// WithTTL sets the TTL of a leader's lease: a leader whose keep-alives stop
// (its process froze, its network broke) loses leadership, and every write
// it still tries fails with [ErrNotLeader], at most this long after its
// last keep-alive, and another candidate takes over then. Shorter means
// faster failover and more keep-alive traffic; etcd rounds a TTL up to its
// minimum (a few seconds). Values below 1 select [DefaultTTL]. Open ignores
// it.
func WithTTL(d time.Duration) Option {
	return optionFunc(func(c *config) {
		s := int64((d + time.Second - 1) / time.Second)
		if s < 1 {
			s = DefaultTTL
		}
		c.ttl = s
	})
}
