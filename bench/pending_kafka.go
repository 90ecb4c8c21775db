package main

import "context"

// kafkaOurs would measure broker/kafka, which is not on main yet. The code is
// ready in ours_kafka.go, excluded by its "//go:build ignore" line: once the package
// has landed, delete that line and this file.
func kafkaOurs(ctx context.Context, addrs []string, topic string, n int) ([]sample, error) {
	return nil, errNotLanded
}
