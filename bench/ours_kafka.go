package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
)

// kafkaOurs measures broker/kafka with its defaults: Publish (which returns
// once the record is acknowledged) from 16 goroutines, a group subscription
// with Concurrency 16 that commits handled offsets, then PublishAsync from 16
// goroutines and Flush into topic+"-async".
func kafkaOurs(ctx context.Context, addrs []string, topic string, n int) ([]sample, error) {
	pub, err := kafka.NewPublisher(addrs)
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	sub, err := kafka.NewSubscriber(addrs)
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	s := broker.Subscription{Topic: topic, Group: topic + "-group", Concurrency: kafkaHandlers}
	smps, err := oursPubSub(ctx, pub, sub, s, n, kafkaProducers)
	if err != nil {
		return smps, err
	}

	var (
		mu       sync.Mutex
		firstErr error
	)
	done := func(_ broker.Message, err error) {
		if err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}
	}
	p, keys := payload1K(), benchKeys()
	// Records outlive the goroutine that published them: give them the
	// round's context, not publishParallel's, which ends when it returns.
	publishCtx := ctx
	start := time.Now()
	err = publishParallel(ctx, n, kafkaProducers, func(_ context.Context, i int) error {
		pub.PublishAsync(publishCtx, topic+"-async", broker.Message{Key: keys[i%64], Payload: p}, done)
		return nil
	})
	if err == nil {
		err = pub.Flush(ctx)
	}
	elapsed := time.Since(start)
	mu.Lock()
	if err == nil {
		err = firstErr
	}
	mu.Unlock()
	if err != nil {
		return smps, fmt.Errorf("async publish: %w", err)
	}
	return append(smps, sample{n: n, elapsed: elapsed, allocs: -1}), nil
}
