package broker_test

import (
	"context"
	"fmt"
	"log"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
)

func ExampleMatch() {
	for _, key := range []string{"rentals.france.nevache", "rentals.france", "rentals", "bookings.france.nevache"} {
		fmt.Printf("%-24s rentals.france.*=%-5v rentals.#=%v\n", key,
			broker.Match("rentals.france.*", key), broker.Match("rentals.#", key))
	}
	// Output:
	// rentals.france.nevache   rentals.france.*=true  rentals.#=true
	// rentals.france           rentals.france.*=false rentals.#=true
	// rentals                  rentals.france.*=false rentals.#=true
	// bookings.france.nevache  rentals.france.*=false rentals.#=false
}

func ExampleCompilePattern() {
	_, err := broker.CompilePattern("rentals.fr*")
	fmt.Println(err)
	// Output:
	// broker: invalid routing-key pattern: "rentals.fr*": word 2 "fr*" mixes a wildcard with other characters; use a whole word "*" or "#"
}

// A Publisher and a Subscriber: a service publishes booking events, and the
// billing group handles those of France. The code is the same for every
// adapter; only the constructor changes (memory.MustNew here, rabbitmq or kafka
// in production).
func Example() {
	b := memory.MustNew()
	defer b.Close()
	var (
		pub broker.Publisher  = b
		sub broker.Subscriber = b
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	s := broker.Subscription{Topic: "bookings", Group: "billing", Keys: []string{"rentals.france.*"}}
	// Create the group's queue and bindings first, so that nothing published
	// before Subscribe starts is lost.
	if p, ok := sub.(broker.Provisioner); ok {
		if err := p.Provision(ctx, s); err != nil {
			log.Fatal(err)
		}
	}

	got := make(chan broker.Message)
	stopped := make(chan error)
	go func() { // Subscribe blocks until ctx is done or sub is closed.
		stopped <- sub.Subscribe(ctx, s, func(ctx context.Context, m broker.Message) error {
			got <- m
			return nil // acknowledge; an error would redeliver the message
		})
	}()

	err := pub.Publish(ctx, "bookings",
		broker.Message{Key: "rentals.france.nevache", Payload: []byte(`{"booking":1}`)},
		broker.Message{Key: "rentals.italy.cortina", Payload: []byte(`{"booking":2}`)},
		broker.Message{Key: "rentals.france.briancon", Payload: []byte(`{"booking":3}`)},
	)
	if err != nil {
		log.Fatal(err)
	}
	for range 2 {
		m := <-got
		fmt.Println(m.Topic, m.Key, string(m.Payload), "attempt", m.Attempt)
	}

	cancel()
	fmt.Println("Subscribe returned", <-stopped)
	// Output:
	// bookings rentals.france.nevache {"booking":1} attempt 1
	// bookings rentals.france.briancon {"booking":3} attempt 1
	// Subscribe returned <nil>
}
