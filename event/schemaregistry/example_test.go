package schemaregistry_test

import (
	"context"
	"fmt"
	"log"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/avro"
	"github.com/go-integration/patterns/event/protobuf"
	"github.com/go-integration/patterns/event/protobuf/testpb"
	"github.com/go-integration/patterns/event/schemaregistry"
)

// An Avro event type with the Confluent framing: the first publish registers
// the schema under "<topic>-value"; the frame is the magic byte, the schema
// id and the Avro payload. franz-go's srfake stands in for the registry.
func Example() {
	ctx := context.Background()
	registry := srfake.New() // in production: the registry's URL
	defer registry.Close()
	client, err := sr.NewClient(sr.URLs(registry.URL()))
	if err != nil {
		log.Fatal(err)
	}
	inner, err := avro.New()
	if err != nil {
		log.Fatal(err)
	}
	codec, err := schemaregistry.New(client, inner)
	if err != nil {
		log.Fatal(err)
	}

	const schema = `{"type":"record","name":"OrderPlaced","namespace":"com.example",
		"fields":[{"name":"order","type":"string"},{"name":"seq","type":"long"}]}`
	type OrderPlaced struct {
		Order string `avro:"order"`
		Seq   int64  `avro:"seq"`
	}
	reg, err := event.NewRegistry(event.WithSource("/orders"))
	if err != nil {
		log.Fatal(err)
	}
	if err := event.Register[OrderPlaced](reg, "com.example.order.placed", event.WithCodec(codec), event.WithSchema(schema)); err != nil {
		log.Fatal(err)
	}
	rt, err := event.NewRouter(reg)
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	_ = event.Handle(rt, func(_ context.Context, e event.Event[OrderPlaced]) error {
		fmt.Printf("handled %+v, frame % x\n", e.Data, e.Message.Payload)
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

	if err := event.Publish(ctx, reg, b, "orders", "o-1", OrderPlaced{Order: "o-1", Seq: 2}); err != nil {
		log.Fatal(err)
	}
	<-done
	ss, _ := client.SchemaByVersion(ctx, "orders-value", 1)
	fmt.Println("subject orders-value version 1 has id", ss.ID)
	// Output:
	// handled {Order:o-1 Seq:2}, frame 00 00 00 00 01 06 6f 2d 31 04
	// subject orders-value version 1 has id 1
}

// A Protobuf message under the registry: the schema is the .proto source
// (here embedded by the test package), and the frame carries the message's
// index in the file: OrderShipped is the second message, [1], written 02 02.
func Example_protobuf() {
	ctx := context.Background()
	registry := srfake.New()
	defer registry.Close()
	client, err := sr.NewClient(sr.URLs(registry.URL()))
	if err != nil {
		log.Fatal(err)
	}
	inner, err := protobuf.New()
	if err != nil {
		log.Fatal(err)
	}
	codec, err := schemaregistry.New(client, inner)
	if err != nil {
		log.Fatal(err)
	}
	reg, err := event.NewRegistry(event.WithSource("/shipping"))
	if err != nil {
		log.Fatal(err)
	}
	err = event.Register[*testpb.OrderShipped](reg, "com.example.order.shipped",
		event.WithCodec(codec), event.WithSchema(testpb.OrderProto))
	if err != nil {
		log.Fatal(err)
	}
	m, err := event.Encode(ctx, reg, "shipments", "o-1", &testpb.OrderShipped{Seq: 1})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("% x\n", m.Payload)
	subject, _ := codec.Subject(event.TypeInfo{Topic: "shipments"})
	fmt.Println(subject)
	// Output:
	// 00 00 00 00 01 02 02 10 01
	// shipments-value
}
