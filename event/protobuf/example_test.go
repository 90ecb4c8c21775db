package protobuf_test

import (
	"context"
	"fmt"
	"log"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/protobuf"
	"github.com/go-integration/patterns/event/protobuf/testpb"
)

// A Protobuf event type is registered as its message pointer; the handler
// gets the decoded message.
func Example() {
	ctx := context.Background()
	codec, err := protobuf.New()
	if err != nil {
		log.Fatal(err)
	}
	reg, err := event.NewRegistry(event.WithSource("/orders"))
	if err != nil {
		log.Fatal(err)
	}
	if err := event.Register[*testpb.OrderPlaced](reg, "com.example.order.placed", event.WithCodec(codec)); err != nil {
		log.Fatal(err)
	}
	rt, err := event.NewRouter(reg)
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	_ = event.Handle(rt, func(_ context.Context, e event.Event[*testpb.OrderPlaced]) error {
		fmt.Println(e.ContentType, e.Data.GetOrder(), e.Data.GetItems())
		close(done)
		return nil
	})

	b, err := memory.New()
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	s := broker.Subscription{Topic: "orders", Group: "billing", DeadLetterTopic: "orders.dlq"}
	if err := b.Provision(ctx, s); err != nil {
		log.Fatal(err)
	}
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = rt.Subscribe(subCtx, b, s) }()

	err = event.Publish(ctx, reg, b, "orders", "o-1", &testpb.OrderPlaced{Order: "o-1", Items: []string{"tent"}})
	if err != nil {
		log.Fatal(err)
	}
	<-done
	// Output: application/protobuf o-1 [tent]
}
