//go:build ignore

package main

import (
	"context"
	"fmt"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
)

// rabbitOurs measures broker/rabbitmq with its defaults: a fresh topic
// exchange and group queue per round, 16 publishing goroutines, and a
// subscription with Concurrency 16.
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
	return oursPubSub(ctx, pub, sub, s, n, rmqPublishers)
}
