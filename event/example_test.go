package event_test

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/event"
)

// BookingCreated is an event type of the examples.
type BookingCreated struct {
	Booking int    `json:"booking"`
	Guest   string `json:"guest"`
}

// A producer publishes a typed event; a consumer's Router decodes it and
// calls the handler of its type.
func Example() {
	b := memory.MustNew()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	reg, _ := event.NewRegistry(event.WithSource("/bookings"))
	_ = event.Register[BookingCreated](reg, "com.example.booking.created")

	rt, _ := event.NewRouter(reg, event.WithUnknown(event.Skip))
	done := make(chan struct{})
	_ = event.Handle(rt, func(ctx context.Context, e event.Event[BookingCreated]) error {
		fmt.Printf("%s v%d from %s: booking %d for %s\n", e.Type, e.Version, e.Source, e.Data.Booking, e.Data.Guest)
		close(done)
		return nil
	})
	s := broker.Subscription{Topic: "bookings", Group: "mailer", DeadLetterTopic: "bookings.dlq"}
	_ = b.Provision(ctx, s)
	go rt.Subscribe(ctx, b, s)

	if err := event.Publish(ctx, reg, b, "bookings", "bookings.42", BookingCreated{Booking: 42, Guest: "Ada"}); err != nil {
		fmt.Println(err)
	}
	<-done
	// Output:
	// com.example.booking.created v1 from /bookings: booking 42 for Ada
}

// Register a second version of a type with an upcaster from the first:
// events that producers still send as version 1 reach the handler as
// version 2.
func ExampleRegister() {
	type BookingCreatedV2 struct {
		Booking int      `json:"booking"`
		Guests  []string `json:"guests"`
	}
	ctx := context.Background()
	old, _ := event.NewRegistry(event.WithSource("/monolith"))
	_ = event.Register[BookingCreated](old, "com.example.booking.created")

	reg, _ := event.NewRegistry()
	err := event.Register[BookingCreatedV2](reg, "com.example.booking.created",
		event.WithVersion(2),
		event.WithUpcaster(1, event.UpcastJSON(func(v BookingCreated) (BookingCreatedV2, error) {
			return BookingCreatedV2{Booking: v.Booking, Guests: []string{v.Guest}}, nil
		})))
	if err != nil {
		fmt.Println(err)
	}
	rt, _ := event.NewRouter(reg)
	_ = event.Handle(rt, func(ctx context.Context, e event.Event[BookingCreatedV2]) error {
		fmt.Printf("sent as v%d, handled as %+v\n", e.Version, e.Data)
		return nil
	})

	m, _ := event.Encode(ctx, old, "bookings", "bookings.7", BookingCreated{Booking: 7, Guest: "Grace"})
	_ = rt.Handler()(ctx, m) // as a subscription would call it
	// Output:
	// sent as v1, handled as {Booking:7 Guests:[Grace]}
}

// Encode shows what travels: the codec's bytes and the CloudEvents
// attributes in headers (KafkaHeaders by default).
func ExampleEncode() {
	reg, _ := event.NewRegistry(event.WithSource("/bookings"))
	_ = event.Register[BookingCreated](reg, "com.example.booking.created")

	m, _ := event.Encode(context.Background(), reg, "bookings", "bookings.42", BookingCreated{Booking: 42, Guest: "Ada"},
		event.WithID("b42"), event.WithSubject("bookings/42"),
		event.WithTime(time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)))
	names := make([]string, 0, len(m.Header))
	for k := range m.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Printf("%s: %s\n", k, m.Header[k])
	}
	fmt.Printf("key %s, payload %s\n", m.Key, m.Payload)
	// Output:
	// ce_dataversion: 1
	// ce_id: b42
	// ce_source: /bookings
	// ce_specversion: 1.0
	// ce_subject: bookings/42
	// ce_time: 2026-12-01T09:30:00Z
	// ce_type: com.example.booking.created
	// content-type: application/json
	// key bookings.42, payload {"booking":42,"guest":"Ada"}
}

// Publish in structured mode: the whole CloudEvent is JSON in the payload,
// for consumers that only see bodies. The Router reads both modes.
func ExamplePublish() {
	b := memory.MustNew()
	defer b.Close()
	ctx := context.Background()
	reg, _ := event.NewRegistry(event.WithSource("/bookings"))
	_ = event.Register[BookingCreated](reg, "com.example.booking.created")
	s := broker.Subscription{Topic: "bookings", Group: "audit", DeadLetterTopic: "bookings.dlq"}
	_ = b.Provision(ctx, s)

	err := event.Publish(ctx, reg, b, "bookings", "bookings.1", BookingCreated{Booking: 1, Guest: "Ada"},
		event.WithMode(event.Structured), event.WithID("b1"),
		event.WithTime(time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)))
	fmt.Println(err, b.Pending("bookings", "audit"))

	sctx, cancel := context.WithCancel(ctx)
	_ = b.Subscribe(sctx, s, func(_ context.Context, m broker.Message) error {
		fmt.Printf("%s\n%s\n", m.Header["content-type"], m.Payload)
		cancel()
		return nil
	})
	// Output:
	// <nil> 1
	// application/cloudevents+json; charset=UTF-8
	// {"data":{"booking":1,"guest":"Ada"},"datacontenttype":"application/json","dataversion":1,"id":"b1","source":"/bookings","specversion":"1.0","time":"2026-12-01T09:30:00Z","type":"com.example.booking.created"}
}

// Handle one type and hand every other type to a fallback handler, here
// the code that handled the topic before it carried typed events.
func ExampleHandle() {
	ctx := context.Background()
	reg, _ := event.NewRegistry(event.WithSource("/bookings"))
	_ = event.Register[BookingCreated](reg, "com.example.booking.created")
	rt, _ := event.NewRouter(reg, event.WithFallback(func(ctx context.Context, m broker.Message) error {
		fmt.Printf("legacy handler: %s\n", m.Payload)
		return nil
	}))
	_ = event.Handle(rt, func(ctx context.Context, e event.Event[BookingCreated]) error {
		fmt.Printf("typed handler: booking %d\n", e.Data.Booking)
		return nil
	})
	h := rt.Handler()
	m, _ := event.Encode(ctx, reg, "bookings", "bookings.3", BookingCreated{Booking: 3})
	_ = h(ctx, m)
	other, _ := event.NewRegistry(event.WithSource("/rooms"))
	type RoomCleaned struct{ Room int }
	_ = event.Register[RoomCleaned](other, "com.example.room.cleaned")
	m, _ = event.Encode(ctx, other, "rooms", "rooms.12", RoomCleaned{Room: 12})
	_ = h(ctx, m)
	// Output:
	// typed handler: booking 3
	// legacy handler: {"Room":12}
}
