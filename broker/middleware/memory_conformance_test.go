package middleware_test

import (
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker/middleware"
	"github.com/go-integration/patterns/broker/middleware/deduptest"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestMemoryDedupStoreConformance(t *testing.T) {
	deduptest.Run(t, deduptest.Harness{
		New: func(t *testing.T) (middleware.DedupStore, func(time.Duration)) {
			clock := newFakeClock()
			return middleware.NewMemoryDedupStoreWithClock(clock.Now), clock.Advance
		},
	})
}
