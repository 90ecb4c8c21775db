// Command cdc streams the changes of a table that an application writes
// without knowing about events (a monolith you cannot change) to a broker,
// through PostgreSQL logical replication: first the rows already there (a
// snapshot, op "r"), then every committed insert, update and delete, as
// Debezium-compatible JSON events, in commit order per row. The broker is
// the memory broker here; RabbitMQ or Kafka in a service.
//
// It needs PostgreSQL with wal_level = logical (scripts/services sets it)
// at DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test), and
// works in a schema, replication slot and publication of its own, dropped
// at the end.
//
//	go run ./examples/cdc
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
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

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/broker/memory"
)

func main() {
	// Ctrl-C or SIGTERM cancels ctx, so run still cleans up after itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cdc:", err)
		os.Exit(1)
	}
}

// event is the part of a Debezium change event the warehouse reads.
type event struct {
	Op     string          `json:"op"`
	Before json.RawMessage `json:"before"`
	After  json.RawMessage `json:"after"`
	Source struct {
		Table string `json:"table"`
		LSN   int64  `json:"lsn"`
	} `json:"source"`
}

func run(ctx context.Context, w io.Writer) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/test"
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("needs PostgreSQL at %s: start it with scripts/services (%w)", hostOf(url), err)
	}
	name := "example_cdc_" + strings.ToLower(rand.Text()[:8])
	if _, err := conn.Exec(ctx, "create schema "+name); err != nil {
		conn.Close(ctx)
		return err
	}
	fmt.Fprintf(w, "schema %s\n", name)
	defer func() {
		// The slot first: a slot left behind keeps WAL on the server forever.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		err = errors.Join(err, cdc.DropWithState(ctx, url, name, name, name+".cdc_state"))
		_, derr := conn.Exec(ctx, "drop schema "+name+" cascade")
		err = errors.Join(err, derr)
		conn.Close(ctx)
	}()

	// The legacy application's table, with two orders already placed.
	table := name + ".orders"
	if _, err := conn.Exec(ctx, `create table `+table+` (id text primary key, status text not null, total_cents bigint not null);
		insert into `+table+` values ('o-1', 'new', 4200), ('o-2', 'new', 990)`); err != nil {
		return err
	}
	fmt.Fprintf(w, "the legacy application has 2 orders before capture starts\n")

	// The warehouse consumes the table's topic: prefix.schema.table.
	b := memory.MustNew()
	defer b.Close()
	sub := broker.Subscription{Topic: "shop." + table, Group: "warehouse"}
	if err := b.Provision(ctx, sub); err != nil {
		return err
	}
	received := make(chan broker.Message, 16)
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	defer func() { stop(); running.Wait() }()
	running.Go(func() {
		_ = b.Subscribe(runCtx, sub, func(ctx context.Context, m broker.Message) error { received <- m; return nil })
	})

	// The source: New checks the server (wal_level, permission, the
	// table's primary key) and creates the publication; Run creates the
	// slot, publishes the snapshot, then streams.
	src, err := cdc.New(ctx, url, b,
		cdc.WithSlot(name), cdc.WithPublication(name), cdc.WithTables(table),
		cdc.WithStateTable(name+".cdc_state"), cdc.WithTopicPrefix("shop"),
		cdc.WithStatusInterval(200*time.Millisecond))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "capturing %s through slot and publication %s to topic %s\n", table, name, sub.Topic)
	runDone := make(chan error, 1)
	running.Go(func() { runDone <- src.Run(runCtx) })
	defer func() { err = errors.Join(err, ignoreClosed(src.Close())) }()

	print := func(n int) error {
		for range n {
			select {
			case m := <-received:
				var e event
				if err := json.Unmarshal(m.Payload, &e); err != nil {
					return err
				}
				fmt.Fprintf(w, "warehouse got op %s of %s: before %s, after %s\n", e.Op, e.Source.Table, compact(e.Before), compact(e.After))
			case err := <-runDone:
				return fmt.Errorf("source stopped: %w", err)
			case <-ctx.Done():
				return fmt.Errorf("waiting for changes: %w", ctx.Err())
			}
		}
		return nil
	}
	if err := print(2); err != nil { // the snapshot
		return err
	}

	// The legacy application goes on, unchanged: one transaction pays o-1
	// and adds o-3, another cancels o-2.
	if _, err := conn.Exec(ctx, `begin;
		update `+table+` set status = 'paid' where id = 'o-1';
		insert into `+table+` values ('o-3', 'new', 15000);
		commit;
		delete from `+table+` where id = 'o-2'`); err != nil {
		return err
	}
	fmt.Fprintf(w, "the legacy application paid o-1, added o-3 and deleted o-2\n")
	if err := print(3); err != nil {
		return err
	}

	// Everything the warehouse got was confirmed to the server: the slot
	// holds nothing more for it.
	for {
		lag, err := src.Lag(ctx)
		if err != nil {
			return err
		}
		if lag.Time == 0 {
			st := src.Stats()
			fmt.Fprintf(w, "source: %d snapshot rows and %d changes published and confirmed\n", st.SnapshotRows, st.Changes)
			return nil
		}
		select {
		case <-time.After(50 * time.Millisecond): // confirmations go out every status interval
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// compact is a JSON value on one line, "null" for none.
func compact(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "null"
	}
	return string(raw)
}

func ignoreClosed(err error) error {
	if errors.Is(err, cdc.ErrClosed) {
		return nil
	}
	return err
}

// hostOf names the server of a PostgreSQL URL for an error message.
func hostOf(url string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return url
	}
	return fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
}
