package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/outbox"
)

// A service writes an order and its event in one transaction; a relay
// publishes the event once the transaction committed. (It needs a database,
// so it is compiled but not run by go test.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := outbox.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}

	// The business write and the event commit or roll back together.
	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `insert into orders (id, total) values ($1, $2)`, "o-1", 4200); err != nil {
		log.Fatal(err)
	}
	err = outbox.Add(ctx, tx, "orders", broker.Message{Key: "orders.fr.o-1", Payload: []byte(`{"id":"o-1","total":4200}`)})
	if err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}

	// The relay, usually in its own goroutine for the life of the service;
	// any broker.Publisher works (RabbitMQ, Kafka, memory).
	pub := memory.MustNew()
	defer pub.Close()
	relay, err := outbox.NewRelay(pool, pub, outbox.WithLogger(slog.Default()))
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		if err := relay.Run(ctx); err != nil && !errors.Is(err, outbox.ErrClosed) {
			log.Print(err)
		}
	}()
	// At shutdown: the batch in flight is published and marked (for at
	// most the drain timeout), then Run returns ErrClosed.
	defer relay.Close()
}

// Every key has one ordering bucket; the relay keeps order within a bucket.
func ExampleBucket() {
	for _, key := range []string{"orders.fr.o-1", "orders.fr.o-2", "orders.fr.o-1"} {
		fmt.Println(key, outbox.Bucket(key))
	}
	// Output:
	// orders.fr.o-1 11
	// orders.fr.o-2 30
	// orders.fr.o-1 11
}
