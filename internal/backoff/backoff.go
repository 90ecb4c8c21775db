// Package backoff is the one backoff of this module: exponential growth
// capped at a maximum, with full jitter (a uniformly random wait between
// zero and the cap), so that many clients failing together spread out.
package backoff

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff with full jitter. The zero value is not
// usable: check it with Validate.
type Policy struct {
	Min time.Duration // cap of the first wait
	Max time.Duration // largest cap
}

// Validate reports a policy whose Min is not positive or above Max.
func (p Policy) Validate() error {
	if p.Min <= 0 {
		return fmt.Errorf("backoff: minimum %v is not positive", p.Min)
	}
	if p.Max < p.Min {
		return fmt.Errorf("backoff: maximum %v is below the minimum %v", p.Max, p.Min)
	}
	return nil
}

// Cap returns the ceiling of the wait after n failures (n >= 1): Min
// doubled n-1 times, at most Max.
func (p Policy) Cap(n int) time.Duration {
	c := p.Min
	for i := 1; i < n && c < p.Max; i++ {
		c *= 2
	}
	return min(c, p.Max)
}

// Wait returns a random wait in [0, Cap(n)] after n failures.
func (p Policy) Wait(n int) time.Duration {
	c := p.Cap(n)
	if c <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(c) + 1))
}

// Sleep waits Wait(n), or less when ctx ends or stop is closed first; it
// reports whether the whole wait passed.
func (p Policy) Sleep(ctx context.Context, stop <-chan struct{}, n int) bool {
	t := time.NewTimer(p.Wait(n))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}
