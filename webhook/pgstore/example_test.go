package pgstore_test

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/go-integration/patterns/webhook"
	"github.com/go-integration/patterns/webhook/pgstore"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Durable delivery: every process runs a Sender on the same database; a
// webhook is enqueued in the same transaction as the change it announces.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := pgstore.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	store := pgstore.New(pool)
	_ = store.SaveEndpoint(ctx, webhook.Endpoint{
		ID: "acme", URL: "https://hooks.acme.example/patterns",
		Secrets: []string{webhook.NewSecret()}, EventTypes: []string{"invoice.paid"},
	})

	sender, err := webhook.NewSender(store, webhook.WithTracer(disableLog{}))
	if err != nil {
		log.Fatal(err)
	}
	defer sender.Close()
	go func() { _ = sender.Run(ctx) }()

	// In the transaction that marks the invoice paid:
	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// ... update invoices ...
	msg := webhook.Message{ID: webhook.NewID(), Type: "invoice.paid", Payload: []byte(`{"invoice":"in_1"}`), Time: time.Now()}
	if _, err := pgstore.EnqueueTx(ctx, tx, msg, time.Now()); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
}

// disableLog is a webhook.DisableTracer.
type disableLog struct{}

func (disableLog) TraceDisable(_ context.Context, d webhook.TraceDisableData) {
	log.Printf("endpoint %s disabled: %s", d.Endpoint.ID, d.Reason)
}
