package cdc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/broker/memory"
)

// Stream the bookings table to a broker: the rows it has now as op "r",
// then every committed change, as Debezium events on topic
// "cdc.public.bookings". (It needs a database with wal_level = logical, so
// it is compiled but not run by go test.)
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	// Any broker.Publisher: RabbitMQ, Kafka or, here, the memory broker.
	pub := memory.MustNew()
	defer pub.Close()
	go func() {
		_ = pub.Subscribe(ctx, broker.Subscription{Topic: "cdc.public.bookings", Group: "search"},
			func(ctx context.Context, m broker.Message) error {
				var ev struct {
					Op    string          `json:"op"`
					After json.RawMessage `json:"after"`
				}
				if err := json.Unmarshal(m.Payload, &ev); err != nil {
					return broker.Permanent(err)
				}
				fmt.Println(m.ID, ev.Op, string(ev.After))
				return nil
			})
	}()

	src, err := cdc.New(ctx, os.Getenv("DATABASE_URL"), pub,
		cdc.WithSlot("bookings_search"),
		cdc.WithPublication("bookings_search"),
		cdc.WithTables("public.bookings"), // creates the publication when missing
	)
	if err != nil {
		log.Fatal(err) // wal_level, permissions, missing keys... each names its fix
	}
	defer src.Close()
	if err := src.Run(ctx); err != nil && !errors.Is(err, cdc.ErrClosed) {
		log.Fatal(err)
	}
	// A slot nobody reads keeps WAL on the server: drop it when the stream
	// is no longer wanted.
	if err := cdc.Drop(context.Background(), os.Getenv("DATABASE_URL"), "bookings_search", "bookings_search"); err != nil {
		log.Fatal(err)
	}
}

// A change's ID is its transaction's commit LSN and its place in the
// transaction: the same each time the slot replays it, so a consumer can
// drop the changes it already applied.
func ExampleChangeID() {
	fmt.Println(cdc.ChangeID(0x16B3748, 0))
	fmt.Println(cdc.ChangeID(0x16B3748, 12))
	// Output:
	// 00000000016B3748.0
	// 00000000016B3748.12
}

// ParseID reads the commit LSN and ordinal back from an ID.
func ExampleParseID() {
	commit, ordinal, snapshot, err := cdc.ParseID("00000000016B3748.12")
	fmt.Println(commit, ordinal, snapshot, err)
	// Output:
	// 0/16B3748 12 false <nil>
}
