package main

import "context"

// rabbitOurs measures broker/rabbitmq: it publishes n messages from 16
// goroutines and consumes them with Subscription.Concurrency 16. The package
// is not on main yet; see the report.
func rabbitOurs(ctx context.Context, env *rabbitEnv, n int) ([]sample, error) {
	return nil, errNotLanded
}
