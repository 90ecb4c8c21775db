package main

import (
	"context"
	"fmt"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
)

// rabbitOurs measures broker/rabbitmq with its defaults: a fresh topic
// exchange and group queue per round, one message per Publish call from 16
// goroutines, a subscription with Concurrency 16, then Publish calls of
// rmqBatch messages from 16 goroutines into the same queue, then one
// message per PublishAsync call from 16 goroutines and Flush, on a
// publisher with 16 channels of 128 confirms in flight (the queue is
// deleted after).
func rabbitOurs(ctx context.Context, env *rabbitEnv, round, n int) ([]sample, error) {
	pub, err := rabbitmq.NewPublisher(ctx, env.url, rabbitmq.WithConnectionName("bench-ours-pub"))
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	sub, err := rabbitmq.NewSubscriber(ctx, env.url, rabbitmq.WithConnectionName("bench-ours-sub"))
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	s := broker.Subscription{Topic: fmt.Sprintf("ours%d", round), Group: "g", Concurrency: rmqHandlers}
	smps, err := oursPubSub(ctx, pub, sub, s, n, rmqPublishers)
	if err != nil {
		return smps, err
	}
	p, keys := payload1K(), benchKeys()
	batch, err := publishBatches(ctx, n, rmqBatch, rmqPublishers, func(ctx context.Context, lo, hi int) error {
		msgs := make([]broker.Message, hi-lo)
		for i := range msgs {
			msgs[i] = broker.Message{Key: keys[(lo+i)%64], Payload: p}
		}
		return pub.Publish(ctx, s.Topic, msgs...)
	})
	if err != nil {
		return smps, fmt.Errorf("batch publish: %w", err)
	}
	smps = append(smps, batch)

	// PublishAsync with as many confirms in flight as the raw side: 16
	// channels of DefaultMaxInFlight (128) each.
	apub, err := rabbitmq.NewPublisher(ctx, env.url, rabbitmq.WithConnectionName("bench-ours-async"),
		rabbitmq.WithChannels(rmqPublishers), rabbitmq.WithMaxInFlight(rmqWindow))
	if err != nil {
		return smps, err
	}
	defer apub.Close()
	// Start from an empty queue, as the raw side does.
	if err := env.purgeExisting(rabbitmq.DefaultQueueName(s.Topic, s.Group)); err != nil {
		return smps, err
	}
	async, err := oursAsync(ctx, apub, s.Topic, n, rmqPublishers)
	if err != nil {
		return smps, fmt.Errorf("async publish: %w", err)
	}
	if err := env.deleteQueue(rabbitmq.DefaultQueueName(s.Topic, s.Group)); err != nil {
		return smps, err
	}
	return append(smps, async), nil
}
