package main

import (
	"context"
	"fmt"

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

	async, err := oursAsync(ctx, pub, topic+"-async", n, kafkaProducers)
	if err != nil {
		return smps, fmt.Errorf("async publish: %w", err)
	}
	return append(smps, async), nil
}
