package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/event"
)

// bookingConfirmedType is the event type's name, the same for every version.
const bookingConfirmedType = "com.rentals.booking.confirmed"

// bookingConfirmedV1 is version 1 of the contract: what the monolith
// still publishes. Prices were plain euros.
type bookingConfirmedV1 struct {
	Booking  string  `json:"booking"`
	Rental   string  `json:"rental"`
	Nights   int     `json:"nights"`
	PriceEUR float64 `json:"price_eur"`
}

// bookingConfirmedV2 is version 2: prices in minor units with a currency,
// since the platform sells outside the euro zone.
type bookingConfirmedV2 struct {
	Booking string `json:"booking"`
	Rental  string `json:"rental"`
	Nights  int    `json:"nights"`
	Price   money  `json:"price"`
}

type money struct {
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
}

// upcastConfirmed turns a version 1 event into version 2.
func upcastConfirmed(v bookingConfirmedV1) (bookingConfirmedV2, error) {
	return bookingConfirmedV2{Booking: v.Booking, Rental: v.Rental, Nights: v.Nights,
		Price: money{AmountCents: int64(v.PriceEUR*100 + 0.5), Currency: "EUR"}}, nil
}

// typedEvents: the monolith publishes a typed event (a CloudEvent with its
// type and version in headers) at version 1; the invoicing service has moved
// to version 2 and upcasts, the loyalty service still reads version 1. An
// event whose payload does not decode is dead-lettered with the reason,
// never retried.
func typedEvents(ctx context.Context, t *tour) error {
	t.printf("   The monolith publishes %s as a typed event: a CloudEvent whose type and\n", bookingConfirmedType)
	t.printf("   version travel in headers. Invoicing moved to version 2 (prices with a currency);\n")
	t.printf("   loyalty still reads version 1.\n")
	b := memory.MustNew(memory.WithTracer(t.tel.Broker()), memory.WithLogger(t.logger()))
	defer b.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	monolith, err := event.NewRegistry(event.WithSource("/monolith"))
	if err != nil {
		return err
	}
	if err := event.Register[bookingConfirmedV1](monolith, bookingConfirmedType); err != nil {
		return err
	}

	var mu sync.Mutex
	handled := make(chan struct{}, 8)
	report := func(format string, args ...any) {
		mu.Lock()
		t.printf(format, args...)
		mu.Unlock()
		handled <- struct{}{}
	}

	// Invoicing: version 2, with an upcaster from version 1.
	invoicing, err := event.NewRegistry()
	if err != nil {
		return err
	}
	if err := event.Register[bookingConfirmedV2](invoicing, bookingConfirmedType,
		event.WithVersion(2), event.WithUpcaster(1, event.UpcastJSON(upcastConfirmed))); err != nil {
		return err
	}
	invoicingRouter, err := event.NewRouter(invoicing)
	if err != nil {
		return err
	}
	if err := event.Handle(invoicingRouter, func(_ context.Context, e event.Event[bookingConfirmedV2]) error {
		report("   invoicing (v2) got %s sent as v%d: %d nights, %d %s cents\n", e.Data.Booking, e.Version, e.Data.Nights, e.Data.Price.AmountCents, e.Data.Price.Currency)
		return nil
	}); err != nil {
		return err
	}

	// Loyalty: still version 1.
	loyalty, err := event.NewRegistry()
	if err != nil {
		return err
	}
	if err := event.Register[bookingConfirmedV1](loyalty, bookingConfirmedType); err != nil {
		return err
	}
	loyaltyRouter, err := event.NewRouter(loyalty)
	if err != nil {
		return err
	}
	if err := event.Handle(loyaltyRouter, func(_ context.Context, e event.Event[bookingConfirmedV1]) error {
		report("   loyalty (v1) got %s: %d nights, %.2f EUR, %d points\n", e.Data.Booking, e.Data.Nights, e.Data.PriceEUR, int(e.Data.PriceEUR/10))
		return nil
	}); err != nil {
		return err
	}

	// Both subscribe with a dead-letter topic: bad input goes there, with the reason.
	const topic, dlq = "bookings.confirmed", "bookings.confirmed.dlq"
	subs := []struct {
		rt *event.Router
		s  broker.Subscription
	}{
		{invoicingRouter, broker.Subscription{Topic: topic, Group: "invoicing", DeadLetterTopic: dlq}},
		{loyaltyRouter, broker.Subscription{Topic: topic, Group: "loyalty", DeadLetterTopic: dlq}},
	}
	dead := broker.Subscription{Topic: dlq, Group: "operators"}
	for _, s := range append([]broker.Subscription{dead}, subs[0].s, subs[1].s) {
		if err := b.Provision(ctx, s); err != nil {
			return err
		}
	}
	var running sync.WaitGroup
	defer running.Wait()
	defer cancel()
	for _, s := range subs {
		running.Go(func() { _ = s.rt.Subscribe(ctx, b, s.s) })
	}
	running.Go(func() {
		_ = b.Subscribe(ctx, dead, func(_ context.Context, m broker.Message) error {
			report("   dead letter from %s: %s\n", m.Header[broker.HeaderOriginGroup], m.Header[broker.HeaderError])
			return nil
		})
	})

	for _, v := range []bookingConfirmedV1{
		{Booking: "b-1001", Rental: "chalet-17", Nights: 7, PriceEUR: 840},
		{Booking: "b-1002", Rental: "flat-3", Nights: 2, PriceEUR: 259.9},
	} {
		if err := event.Publish(ctx, monolith, b, topic, "rentals."+v.Rental, v); err != nil {
			return err
		}
	}
	// A buggy producer sends the right type with a payload that is not the contract.
	bad, err := event.Encode(ctx, monolith, topic, "rentals.flat-3", bookingConfirmedV1{Booking: "b-1099"})
	if err != nil {
		return err
	}
	bad.Payload = []byte(`{"booking": 1099, "nights": "two"}`)
	if err := b.Publish(ctx, topic, bad); err != nil {
		return err
	}
	t.printf("   published 2 events at version 1, and one whose payload breaks the contract\n")

	const want = 2*2 + 2 // each service handles 2 and dead-letters 1
	for range want {
		select {
		case <-handled:
		case <-ctx.Done():
			return errors.New("not every event was handled or dead-lettered")
		}
	}
	is, ls := invoicingRouter.Stats(), loyaltyRouter.Stats()
	t.printf("   invoicing: %s; loyalty: %s\n", routerStats(is), routerStats(ls))
	return nil
}

func routerStats(s event.Stats) string {
	return fmt.Sprintf("%d handled, %d dead-lettered", s.Handled, s.Rejected)
}
