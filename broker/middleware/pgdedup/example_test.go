package pgdedup_test

import (
	"context"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/middleware"
	"github.com/go-integration/patterns/broker/middleware/pgdedup"
)

// Every consumer process shares the table: a message ID delivered to several
// of them is handled once. A consumer that dies mid-message blocks its
// redelivery for the in-progress lifetime only (WithInProgressFor).
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgdedup.New(pool)
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil { // advisory-locked: safe from every instance
		log.Fatal(err)
	}
	go func() { // delete expired rows now and then
		for range time.Tick(time.Hour) {
			_, _ = store.Cleanup(ctx)
		}
	}()
	dedup, err := middleware.Dedup(store, middleware.WithHandledFor(24*time.Hour), middleware.WithInProgressFor(30*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	timeout, err := middleware.Timeout(10 * time.Second)
	if err != nil {
		log.Fatal(err)
	}
	handle := func(ctx context.Context, m broker.Message) error { return nil }
	h := broker.Chain(
		middleware.Recover(),
		timeout,
		dedup,
	)(handle)
	_ = h // subscribe with it: b.Subscribe(ctx, sub, h)
}
