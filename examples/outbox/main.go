// Command outbox writes an order and its event in one PostgreSQL transaction
// with the transactional outbox, rolls back a second order (whose event is
// therefore never published), and runs the relay that publishes committed
// events to a broker (the memory broker here; RabbitMQ or Kafka in a service).
//
// It needs PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test)
// and works in a schema of its own, dropped at the end.
//
//	go run ./examples/outbox
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/outbox"
)

func main() {
	// Ctrl-C or SIGTERM cancels ctx, so run still cleans up after itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "outbox:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, drop, err := connect(ctx, w)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, drop()) }()
	if _, err := pool.Exec(ctx, `create table orders (id text primary key, total_cents bigint not null)`); err != nil {
		return err
	}
	if err := outbox.Migrate(ctx, pool); err != nil { // or run outbox.NewTable("outbox").Schema() in your migrations
		return err
	}

	// The business write and its event commit, or roll back, together.
	placeOrder := func(id string, total int64, commit bool) (broker.Message, error) {
		msgs := []broker.Message{{Key: "orders.fr." + id, Payload: fmt.Appendf(nil, `{"id":%q,"total_cents":%d}`, id, total)}}
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `insert into orders (id, total_cents) values ($1, $2)`, id, total); err != nil {
				return err
			}
			if err := outbox.Add(ctx, tx, "orders", msgs...); err != nil { // fills msgs[0].ID, kept when published
				return err
			}
			if !commit {
				return errors.New("payment declined")
			}
			return nil
		})
		return msgs[0], err
	}
	placed, err := placeOrder("o-1", 4200, true)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "committed order o-1 with event %s\n", placed.Key)
	_, err = placeOrder("o-2", 990, false)
	fmt.Fprintf(w, "rolled back order o-2: %v\n", err)

	// A consumer, and the relay that publishes committed events to the broker.
	b := memory.MustNew()
	defer b.Close()
	sub := broker.Subscription{Topic: "orders", Group: "billing"}
	if err := b.Provision(ctx, sub); err != nil {
		return err
	}
	received := make(chan broker.Message, 2)
	batches := make(batchTracer, 4)
	relay, err := outbox.NewRelay(pool, b, outbox.WithTracer(batches))
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	// Before the pool closes: Close lets the relay's batch in flight finish
	// (Run then returns outbox.ErrClosed), stop ends the subscriber.
	defer func() { _ = relay.Close(); stop(); running.Wait() }()
	running.Go(func() {
		_ = b.Subscribe(runCtx, sub, func(ctx context.Context, m broker.Message) error { received <- m; return nil })
	})
	relayDone := make(chan error, 1)
	running.Go(func() { relayDone <- relay.Run(runCtx) }) // for the life of the service

	select {
	case m := <-received:
		fmt.Fprintf(w, "billing received %s %s, same ID as written: %t\n", m.Key, m.Payload, m.ID == placed.ID)
	case err := <-relayDone:
		return fmt.Errorf("relay stopped: %w", err)
	case <-ctx.Done():
		return fmt.Errorf("waiting for the event: %w", ctx.Err())
	}
	for published := false; !published; {
		select {
		case b := <-batches: // the relay marked the row published
			published = b.Published > 0
		case <-ctx.Done():
			return fmt.Errorf("waiting for the relay's batch: %w", ctx.Err())
		}
	}
	st := relay.Stats()                // this relay's counters, no I/O
	backlog, err := relay.Backlog(ctx) // what waits in the table (one query)
	if err != nil {
		return err
	}
	var rows, orders int
	if err := pool.QueryRow(ctx, `select (select count(*) from outbox), (select count(*) from orders)`).Scan(&rows, &orders); err != nil {
		return err
	}
	fmt.Fprintf(w, "relay: published %d, pending %d; tables: %d order, %d outbox row\n", st.Published, backlog.Pending, orders, rows)
	return nil
}

// batchTracer receives the outcome of the relay's batches (an
// outbox.BatchTracer; an OpenTelemetry adapter would start a span in
// TraceBatchStart and end it in TraceBatchEnd).
type batchTracer chan outbox.TraceBatchEndData

func (batchTracer) TraceBatchStart(ctx context.Context, _ outbox.TraceBatchStartData) context.Context {
	return ctx
}

func (o batchTracer) TraceBatchEnd(_ context.Context, b outbox.TraceBatchEndData) {
	select {
	case o <- b:
	default: // a tracer must not block the relay
	}
}

// connect opens a pool whose connections work in a schema of its own, and
// returns a function that drops the schema and closes the pool.
func connect(ctx context.Context, w io.Writer) (*pgxpool.Pool, func() error, error) {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/test"
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	schema := "example_outbox_" + strings.ToLower(rand.Text()[:8])
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("needs PostgreSQL at %s:%d: start it with scripts/services (%w)", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	if _, err := pool.Exec(ctx, "create schema "+schema); err != nil {
		pool.Close()
		return nil, nil, err
	}
	fmt.Fprintf(w, "schema %s\n", schema)
	return pool, func() error {
		defer pool.Close()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "drop schema "+schema+" cascade"); err != nil {
			return fmt.Errorf("drop schema %s: %w", schema, err)
		}
		return nil
	}, nil
}
