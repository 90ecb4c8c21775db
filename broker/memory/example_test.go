package memory_test

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
)

// Two services bound with wildcard patterns, as on a RabbitMQ topic exchange.
func Example() {
	b := memory.MustNew()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())

	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	wg.Add(3) // france gets 1, all gets 2
	subscribe := func(group string, keys ...string) {
		s := broker.Subscription{Topic: "bookings", Group: group, Keys: keys}
		_ = b.Provision(ctx, s)
		go b.Subscribe(ctx, s, func(ctx context.Context, m broker.Message) error {
			mu.Lock()
			got = append(got, group+" <- "+m.Key)
			mu.Unlock()
			wg.Done()
			return nil
		})
	}
	subscribe("france", "rentals.france.*")
	subscribe("all", "rentals.#")

	_ = b.Publish(ctx, "bookings",
		broker.Message{Key: "rentals.france.nevache", Payload: []byte(`{"id":1}`)},
		broker.Message{Key: "rentals.italy.cortina", Payload: []byte(`{"id":2}`)},
	)
	wg.Wait()
	cancel()
	sort.Strings(got)
	for _, g := range got {
		fmt.Println(g)
	}
	// Output:
	// all <- rentals.france.nevache
	// all <- rentals.italy.cortina
	// france <- rentals.france.nevache
}
