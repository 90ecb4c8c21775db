package main

import (
	"context"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
)

// kafkaOurs measures broker/kafka with its defaults: Publish (which returns
// once the record is acknowledged) from 16 goroutines, a group subscription
// with Concurrency 16 that commits handled offsets.
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
	return oursPubSub(ctx, pub, sub, s, n, kafkaProducers)
}
