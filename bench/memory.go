package main

import (
	"context"
	"sync"
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

func memoryOurs(ctx context.Context, n int) (sample, error) {
	br := memory.MustNew()
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
