package rabbitmq_test

import (
	"context"
	"log"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
)

// Publish and consume on a 3-node cluster: each side connects to its first
// URL and fails over to the others, and the group's queue is a quorum queue,
// replicated on every node, so it survives the loss of one. (No Output: it
// needs a running cluster, such as scripts/rabbitmq-cluster's.)
func ExampleWithNodes() {
	ctx := context.Background()
	nodes := []string{
		"amqp://guest:guest@127.0.0.1:5681/",
		"amqp://guest:guest@127.0.0.1:5682/",
		"amqp://guest:guest@127.0.0.1:5683/",
	}
	pub, err := rabbitmq.NewPublisher(ctx, nodes[0], rabbitmq.WithNodes(nodes[1:]...))
	if err != nil {
		log.Fatal(err) // no node answered: the error names each one's failure
	}
	defer pub.Close()
	// Another first node for the subscriber spreads the connections.
	sub, err := rabbitmq.NewSubscriber(ctx, nodes[1], rabbitmq.WithNodes(nodes[2], nodes[0]),
		rabbitmq.WithQueueType(rabbitmq.Quorum))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	s := broker.Subscription{Topic: "bookings", Group: "billing"}
	if err := sub.Provision(ctx, s); err != nil {
		log.Fatal(err)
	}
	if err := pub.Publish(ctx, "bookings", broker.Message{Key: "rentals.france.nevache"}); err != nil {
		log.Fatal(err) // confirmed means written by a majority of the nodes
	}
}
