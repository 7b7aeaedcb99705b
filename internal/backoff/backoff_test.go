package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelayStaysInItsWindow(t *testing.T) {
	const min, max = time.Second, 15 * time.Second
	for _, c := range []struct {
		n      int
		lo, hi time.Duration
	}{
		{0, min / 2, min}, // read as the first retry
		{1, min / 2, min},
		{2, min, 2 * min},
		{4, 4 * min, 8 * min},
		{5, max / 2, max}, // 16s is capped
		{62, max / 2, max},
		{1000, max / 2, max}, // no overflow
	} {
		for range 200 {
			if d := Delay(c.n, min, max); d < c.lo || d > c.hi {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", c.n, d, c.lo, c.hi)
			}
		}
	}
	if d := Delay(3, 0, max); d != 0 {
		t.Errorf("Delay with no minimum = %v, want 0", d)
	}
	// A huge minimum does not overflow into a negative wait.
	if d := Delay(40, time.Duration(1)<<62, time.Duration(1)<<62); d <= 0 {
		t.Errorf("Delay with a huge minimum = %v", d)
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); err != context.Canceled {
		t.Fatalf("Sleep on an ended context = %v", err)
	}
	if err := Sleep(context.Background(), 0); err != nil {
		t.Fatalf("Sleep(0) = %v", err)
	}
}
