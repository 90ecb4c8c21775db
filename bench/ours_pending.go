package main

import "context"

// rabbitOurs measures broker/rabbitmq: it publishes n messages from 16
// goroutines and consumes them with Subscription.Concurrency 16. The package
// is not on main yet; see the report.
func rabbitOurs(ctx context.Context, env *rabbitEnv, n int) ([]sample, error) {
	return nil, errNotLanded
}

// kafkaOurs measures broker/kafka: it publishes n records from 16 goroutines
// into topic and consumes them with Subscription.Concurrency 16. The package
// is not on main yet; see the report.
func kafkaOurs(ctx context.Context, addrs []string, topic string, n int) ([]sample, error) {
	return nil, errNotLanded
}

// oursWebhook returns sign and verify built on the webhook package for a
// Standard Webhooks secret. The package is not on main yet; see the report.
func oursWebhook(secret string) (webhookOps, error) {
	return webhookOps{}, errNotLanded
}
