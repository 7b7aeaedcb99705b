// Package backoff holds the waiting between retries that the Proxmox client
// and the reconcile engine share: capped exponential delays with jitter,
// and a sleep that ends with its context. It is not part of guestward's API.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay returns the wait before retry number n (1 for the first retry):
// min doubled n-1 times, capped at max, then drawn at random from its upper
// half [d/2, d], so that clients that failed together do not retry
// together. A min or max of zero or less gives 0.
func Delay(n int, min, max time.Duration) time.Duration {
	if min <= 0 || max <= 0 {
		return 0
	}
	d := max
	if n < 1 {
		n = 1
	}
	if n <= 62 {
		if s := min << (n - 1); s > 0 && s>>(n-1) == min && s < max {
			d = s
		}
	}
	return d/2 + rand.N(d-d/2+1)
}

// Sleep waits for d, or until ctx ends, and then returns ctx.Err().
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
