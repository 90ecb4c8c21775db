// Command event publishes typed events (CloudEvents with the type and
// version in headers) on the memory broker: a producer still on version 1
// of a contract, a consumer on version 2 that upcasts, and a payload that
// breaks the contract, dead-lettered with the reason instead of retried.
//
//	go run ./examples/event
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/event"
)

// OrderPlacedV1 is what the old checkout still sends.
type OrderPlacedV1 struct {
	Order string  `json:"order"`
	Total float64 `json:"total"` // euros
}

// OrderPlacedV2 is the current contract: minor units and a currency.
type OrderPlacedV2 struct {
	Order       string `json:"order"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
}

const orderPlaced = "com.example.order.placed"

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "event:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b := memory.MustNew(memory.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer b.Close()

	// The producer's registry: version 1 (the default).
	checkout, err := event.NewRegistry(event.WithSource("/checkout"))
	if err != nil {
		return err
	}
	if err := event.Register[OrderPlacedV1](checkout, orderPlaced); err != nil {
		return err
	}

	// The consumer's registry: version 2, and how to read version 1.
	billing, err := event.NewRegistry()
	if err != nil {
		return err
	}
	err = event.Register[OrderPlacedV2](billing, orderPlaced, event.WithVersion(2),
		event.WithUpcaster(1, event.UpcastJSON(func(v OrderPlacedV1) (OrderPlacedV2, error) {
			return OrderPlacedV2{Order: v.Order, AmountCents: int64(v.Total*100 + 0.5), Currency: "EUR"}, nil
		})))
	if err != nil {
		return err
	}
	rt, err := event.NewRouter(billing) // unknown types are dead-lettered by default
	if err != nil {
		return err
	}
	var mu sync.Mutex
	got := make(chan struct{}, 4)
	err = event.Handle(rt, func(_ context.Context, e event.Event[OrderPlacedV2]) error {
		mu.Lock()
		fmt.Fprintf(w, "billing got %s from %s, sent as v%d: %d %s cents\n", e.Data.Order, e.Source, e.Version, e.Data.AmountCents, e.Data.Currency)
		mu.Unlock()
		got <- struct{}{}
		return nil
	})
	if err != nil {
		return err
	}

	// A Router needs a dead-letter topic: bad input goes there, once.
	sub := broker.Subscription{Topic: "orders", Group: "billing", DeadLetterTopic: "orders.dlq"}
	dlq := broker.Subscription{Topic: "orders.dlq", Group: "ops"}
	for _, s := range []broker.Subscription{sub, dlq} {
		if err := b.Provision(ctx, s); err != nil {
			return err
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	defer func() { stop(); running.Wait() }()
	running.Go(func() { _ = rt.Subscribe(runCtx, b, sub) })
	running.Go(func() {
		_ = b.Subscribe(runCtx, dlq, func(_ context.Context, m broker.Message) error {
			mu.Lock()
			fmt.Fprintf(w, "dead letter %s after %s attempt(s): %s\n", m.Header["ce_type"], m.Header[broker.HeaderAttempts], m.Header[broker.HeaderError])
			mu.Unlock()
			got <- struct{}{}
			return nil
		})
	})

	if err := event.Publish(ctx, checkout, b, "orders", "orders.o-1", OrderPlacedV1{Order: "o-1", Total: 42.5}); err != nil {
		return err
	}
	bad, err := event.Encode(ctx, checkout, "orders", "orders.o-2", OrderPlacedV1{Order: "o-2"})
	if err != nil {
		return err
	}
	bad.Payload = []byte(`{"order": "o-2", "total": "a lot"}`) // not the contract
	if err := b.Publish(ctx, "orders", bad); err != nil {
		return err
	}
	for range 2 {
		select {
		case <-got:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	st := rt.Stats()
	fmt.Fprintf(w, "billing: %d handled, %d dead-lettered\n", st.Handled, st.Rejected)
	return nil
}
