package outbox_test

import (
	"context"
	"log"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/broker/kafka"
	"github.com/go-integration/patterns/broker/outbox"
)

// A relay that publishes to Kafka exactly once for read_committed consumers:
// give it a kafka.TxPublisher. Each relay instance has its own stable
// transactional ID; the checkpoint topic is one per database. (It needs a
// database and a cluster, so it is compiled but not run by go test.)
func Example_kafkaExactlyOnce() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	brokers := strings.Split(os.Getenv("KAFKA_BROKERS"), ",")
	instance := os.Getenv("HOSTNAME") // stable per instance, e.g. a StatefulSet pod name
	pub, err := kafka.NewTxPublisher(brokers, "orders-relay-"+instance, "orders.outbox.checkpoints")
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	relay, err := outbox.NewRelay(pool, pub) // a TxPublisher: exactly-once mode
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Close()
	if err := relay.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
