package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-integration/patterns/broker"
)

// oursPubSub is the "ours" side of a broker scenario, for any adapter: it
// provisions s (so the group keeps what is published), publishes n 1 KiB
// messages over 64 keys from publishers goroutines through pub, then times
// Subscribe with s until n messages were handled.
func oursPubSub(ctx context.Context, pub broker.Publisher, sub broker.Subscriber, s broker.Subscription, n, publishers int) ([]sample, error) {
	if p, ok := sub.(broker.Provisioner); ok {
		if err := p.Provision(ctx, s); err != nil {
			return nil, fmt.Errorf("provision: %w", err)
		}
	}
	p, keys := payload1K(), benchKeys()
	start := time.Now()
	err := publishParallel(ctx, n, publishers, func(ctx context.Context, i int) error {
		return pub.Publish(ctx, s.Topic, broker.Message{Key: keys[i%64], Payload: p})
	})
	pubSample := sample{n: n, elapsed: time.Since(start), allocs: -1}
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}

	t := newConsumeTimer(n)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	subErr := make(chan error, 1)
	go func() {
		subErr <- sub.Subscribe(sctx, s, func(context.Context, broker.Message) error {
			t.inc()
			return nil
		})
	}()
	select {
	case <-t.done:
	case err = <-subErr:
		if err == nil {
			err = errors.New("subscribe returned early")
		}
		return []sample{pubSample}, fmt.Errorf("consume: %w", err)
	case <-ctx.Done():
		err = fmt.Errorf("%d of %d handled: %w", t.count.Load(), n, ctx.Err())
	}
	stop()
	if serr := <-subErr; err == nil && serr != nil {
		err = serr
	}
	if err != nil {
		return []sample{pubSample}, fmt.Errorf("consume: %w", err)
	}
	return []sample{pubSample, t.sample()}, nil
}

// oursAsync times n one-message PublishAsync calls of 1 KiB over 64 keys
// from g goroutines to topic, then Flush: the time until every outcome is
// in. It fails on the first error outcome.
func oursAsync(ctx context.Context, pub broker.AsyncPublisher, topic string, n, g int) (sample, error) {
	var failed firstError
	done := func(_ broker.Message, err error) { failed.set(err) }
	p, keys := payload1K(), benchKeys()
	// Messages outlive the goroutine that published them: give them the
	// round's context, not publishParallel's, which ends when it returns.
	publishCtx := ctx
	start := time.Now()
	err := publishParallel(ctx, n, g, func(_ context.Context, i int) error {
		pub.PublishAsync(publishCtx, topic, broker.Message{Key: keys[i%64], Payload: p}, done)
		return nil
	})
	if err == nil {
		err = pub.Flush(ctx)
	}
	elapsed := time.Since(start)
	if err == nil {
		err = failed.get()
	}
	return sample{n: n, elapsed: elapsed, allocs: -1}, err
}
