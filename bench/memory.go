package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
)

// In-process scenario: publish → handler with 1 KiB payloads, 64 keys,
// 16 publishing goroutines and 16 handlers. At most memWindow messages are
// in flight (published, not yet handled), as in a steady state; without the
// bound publishers outrun handlers and the run measures a growing backlog.
const (
	memPublishers = 16
	memHandlers   = 16
	memWindow     = 4096
)

func memoryScenario(ctx context.Context, cfg config) []*row {
	n := cfg.scaled(100_000)
	r := &row{scenario: "memory: publish→handler, 1 KiB, 64 keys, 16 publishers, concurrency 16", unit: msgPerSec, n: n}
	r.ours.label = "broker/memory"
	r.raw.label = "buffered Go channel + 16 goroutines (floor)"
	r.peer.label = "watermill v1.5.1 pubsub/gochannel"
	runRounds(ctx, cfg.rounds, cfg.perRun,
		side{[]*outcome{&r.ours}, one(func(ctx context.Context, _ int) (sample, error) { return memoryOurs(ctx, n) })},
		side{[]*outcome{&r.raw}, one(func(ctx context.Context, _ int) (sample, error) { return memoryRaw(ctx, n) })},
		side{[]*outcome{&r.peer}, one(func(ctx context.Context, _ int) (sample, error) { return memoryWatermill(ctx, n) })},
	)
	return []*row{r}
}

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

func payload1K() []byte {
	p := make([]byte, 1024)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}

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

func memoryOurs(ctx context.Context, n int) (sample, error) {
	br := memory.New()
	defer br.Close()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	s := broker.Subscription{Topic: "bench", Group: "g", Concurrency: memHandlers}
	if err := br.Provision(ctx, s); err != nil {
		return sample{}, err
	}
	slots := make(chan struct{}, memWindow)
	c := newCounter(n)
	subErr := make(chan error, 1)
	go func() {
		subErr <- br.Subscribe(sctx, s, func(context.Context, broker.Message) error {
			<-slots
			c.inc()
			return nil
		})
	}()
	p, keys := payload1K(), benchKeys()
	start := time.Now()
	err := publishParallel(ctx, n, memPublishers, func(ctx context.Context, i int) error {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		return br.Publish(ctx, "bench", broker.Message{Key: keys[i%64], Payload: p})
	})
	if err == nil {
		err = c.wait(ctx)
	}
	elapsed := time.Since(start)
	stop()
	if serr := <-subErr; err == nil && serr != nil {
		err = serr
	}
	return sample{n: n, elapsed: elapsed, allocs: -1}, err
}

// memoryRaw is the floor: a buffered channel of payloads read by 16 goroutines.
func memoryRaw(ctx context.Context, n int) (sample, error) {
	type msg struct {
		key     string
		payload []byte
	}
	ch := make(chan msg, memWindow)
	c := newCounter(n)
	var wg sync.WaitGroup
	for range memHandlers {
		wg.Go(func() {
			for range ch {
				c.inc()
			}
		})
	}
	p, keys := payload1K(), benchKeys()
	start := time.Now()
	err := publishParallel(ctx, n, memPublishers, func(ctx context.Context, i int) error {
		select {
		case ch <- msg{key: keys[i%64], payload: p}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err == nil {
		err = c.wait(ctx)
	}
	elapsed := time.Since(start)
	close(ch)
	wg.Wait()
	return sample{n: n, elapsed: elapsed, allocs: -1}, err
}

// memoryWatermill reads one gochannel subscription with 16 goroutines that
// ack each message (Watermill's way to handle messages concurrently).
func memoryWatermill(ctx context.Context, n int) (sample, error) {
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer ps.Close()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	msgs, err := ps.Subscribe(sctx, "bench")
	if err != nil {
		return sample{}, err
	}
	slots := make(chan struct{}, memWindow)
	c := newCounter(n)
	var wg sync.WaitGroup
	for range memHandlers {
		wg.Go(func() {
			for m := range msgs {
				<-slots
				c.inc()
				m.Ack()
			}
		})
	}
	p, keys := payload1K(), benchKeys()
	start := time.Now()
	err = publishParallel(ctx, n, memPublishers, func(ctx context.Context, i int) error {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		m := message.NewMessage(watermill.NewUUID(), p)
		m.Metadata.Set("key", keys[i%64])
		return ps.Publish("bench", m)
	})
	if err == nil {
		err = c.wait(ctx)
	}
	elapsed := time.Since(start)
	stop()
	wg.Wait()
	return sample{n: n, elapsed: elapsed, allocs: -1}, err
}
