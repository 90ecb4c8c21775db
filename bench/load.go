package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Load shared by the broker scenarios: payloads, keys, parallel publishing
// and counting handled messages.

// one adapts a single-sample run to side.run.
func one(f func(ctx context.Context, round int) (sample, error)) func(context.Context, int) ([]sample, error) {
	return func(ctx context.Context, round int) ([]sample, error) {
		s, err := f(ctx, round)
		if err != nil {
			return nil, err
		}
		return []sample{s}, nil
	}
}

// payload1K returns a 1 KiB message body.
func payload1K() []byte {
	p := make([]byte, 1024)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}

// benchKeys returns the 64 routing (partition) keys messages cycle through.
func benchKeys() []string {
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = fmt.Sprintf("rentals.france.k%d", i)
	}
	return keys
}

// counter signals done when n operations were counted.
type counter struct {
	n     int64
	count atomic.Int64
	done  chan struct{}
}

func newCounter(n int) *counter { return &counter{n: int64(n), done: make(chan struct{})} }

func (c *counter) inc() {
	if c.count.Add(1) == c.n {
		close(c.done)
	}
}

// wait returns nil when n operations were counted, or ctx's error.
func (c *counter) wait(ctx context.Context) error {
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d of %d handled: %w", c.count.Load(), c.n, ctx.Err())
	}
}

// publishParallel runs publish for i in [0, n) on g goroutines and returns the first error.
func publishParallel(ctx context.Context, n, g int, publish func(ctx context.Context, i int) error) error {
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range g {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := publish(ctx, i); err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

// publishBatches calls publish with index ranges [lo, hi) of at most batch
// messages covering [0, n), from g goroutines, and times it.
func publishBatches(ctx context.Context, n, batch, g int, publish func(ctx context.Context, lo, hi int) error) (sample, error) {
	start := time.Now()
	err := publishParallel(ctx, (n+batch-1)/batch, g, func(ctx context.Context, b int) error {
		return publish(ctx, b*batch, min(b*batch+batch, n))
	})
	return sample{n: n, elapsed: time.Since(start), allocs: -1}, err
}

// consumeTimer counts handled messages and times them from its creation,
// just before the consumer is created (group join and first fetch included),
// to the last one handled.
type consumeTimer struct {
	*counter
	start time.Time
	last  time.Time
}

func newConsumeTimer(n int) *consumeTimer {
	return &consumeTimer{counter: newCounter(n), start: time.Now()}
}

func (t *consumeTimer) inc() {
	if t.counter.count.Add(1) == t.counter.n {
		t.last = time.Now()
		close(t.counter.done)
	}
}

// sample is valid after wait returned nil.
func (t *consumeTimer) sample() sample {
	return sample{n: int(t.counter.n), elapsed: t.last.Sub(t.start), allocs: -1}
}

// firstError keeps the first non-nil error reported to it, from any
// goroutine: asynchronous publishers report outcomes on their own.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	if err == nil {
		return
	}
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
