package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
)

// booking is the event payload every step uses.
type booking struct {
	ID      string `json:"id"`
	Rental  string `json:"rental"`
	Country string `json:"country"`
	Town    string `json:"town"`
	Nights  int    `json:"nights"`
	// BookedAt is when the guest booked: the day of the daily export.
	BookedAt time.Time `json:"booked_at"`
}

func (b booking) key() string { return "rentals." + b.Country + "." + b.Town }

var sampleBookings = []booking{
	{ID: "b-1001", Rental: "chalet-17", Country: "france", Town: "nevache", Nights: 7, BookedAt: at("2026-07-01T09:12:00Z")},
	{ID: "b-1002", Rental: "flat-3", Country: "france", Town: "paris", Nights: 2, BookedAt: at("2026-07-01T17:40:00Z")},
	{ID: "b-1003", Rental: "villa-9", Country: "italy", Town: "cortina", Nights: 5, BookedAt: at("2026-07-02T08:05:00Z")},
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// routedEvents publishes booking_created events with routing keys like
// rentals.france.nevache; one service binds rentals.france.*, another rentals.#.
func routedEvents(ctx context.Context, t *tour) error {
	t.printf("   Each event carries a routing key, rentals.<country>.<town>. Services bind the keys\n")
	t.printf("   they care about: * matches one word, # any number of words (RabbitMQ's topic exchange).\n")
	b := memory.MustNew(memory.WithTracer(t.tel.Broker()))
	defer b.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var mu sync.Mutex
	received := map[string][]string{}
	arrived := make(chan struct{}, 16) // one token per delivery; never blocks a handler
	services := []struct {
		name string
		keys []string
		want []string // the keys it must get, sorted
	}{
		{"french-concierge", []string{"rentals.france.*"}, []string{"rentals.france.nevache", "rentals.france.paris"}},
		{"analytics", []string{"rentals.#"}, []string{"rentals.france.nevache", "rentals.france.paris", "rentals.italy.cortina"}},
	}
	var subs sync.WaitGroup
	defer func() {
		cancel()
		subs.Wait() // every Subscribe has returned
	}()
	total := 0
	for _, svc := range services {
		s := broker.Subscription{Topic: "booking_created", Group: svc.name, Keys: svc.keys, Concurrency: 4}
		if err := b.Provision(ctx, s); err != nil {
			return err
		}
		total += len(svc.want)
		subs.Go(func() {
			_ = b.Subscribe(ctx, s, func(ctx context.Context, m broker.Message) error {
				var bk booking
				if err := json.Unmarshal(m.Payload, &bk); err != nil {
					return broker.Permanent(err)
				}
				mu.Lock()
				received[svc.name] = append(received[svc.name], m.Key)
				mu.Unlock()
				t.printf("   %-17s got %s (%s, %d nights)\n", svc.name, m.Key, bk.ID, bk.Nights)
				arrived <- struct{}{}
				return nil
			})
		})
		t.printf("   %s subscribes with %v\n", svc.name, svc.keys)
	}
	for _, bk := range sampleBookings {
		payload, err := json.Marshal(bk)
		if err != nil {
			return err
		}
		if err := b.Publish(ctx, "booking_created", broker.Message{Key: bk.key(), Payload: payload}); err != nil {
			return err
		}
		t.printf("   published booking_created %s with key %s\n", bk.ID, bk.key())
	}
	wait, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	for range total {
		select {
		case <-arrived:
		case <-wait.Done():
			return errors.New("events not delivered within 5 s")
		}
	}
	// Nothing more may come: a queue gets one copy of a matching message.
	select {
	case <-arrived:
	case <-time.After(50 * time.Millisecond):
	}
	mu.Lock()
	defer mu.Unlock()
	for _, svc := range services {
		keys := received[svc.name]
		sort.Strings(keys)
		if !slices.Equal(keys, svc.want) {
			return fmt.Errorf("%s received %v, want %v", svc.name, keys, svc.want)
		}
	}
	t.printf("   french-concierge got the 2 French bookings, analytics got all 3\n")
	return nil
}
