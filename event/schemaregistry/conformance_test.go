package schemaregistry_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/eventtest"
	"github.com/go-integration/patterns/event/protobuf/testpb"
	"github.com/go-integration/patterns/internal/testenv"
)

// TestConformance runs the codec suite on the framing around each format.
func TestConformance(t *testing.T) {
	protoEqual := func(got, want any) bool { return proto.Equal(got.(proto.Message), want.(proto.Message)) }
	t.Run("avro", func(t *testing.T) {
		eventtest.Run(t, eventtest.Harness{
			Codec: func(t *testing.T) event.Codec { return newAvro(t, newFake(t)) },
			Cases: []eventtest.Case{
				{Name: "v1", Type: typeOf[OrderV1](typeOrder, "orders", orderSchemaV1), Value: OrderV1{Order: "o-1", Seq: 3}},
				{Name: "v2", Type: typeOf[Order](typeOrder+".v2", "orders2", orderSchemaV2), Value: Order{Order: "o-2", Seq: 4, Channel: "shop"}},
			},
		})
	})
	t.Run("protobuf", func(t *testing.T) {
		eventtest.Run(t, eventtest.Harness{
			Codec: func(t *testing.T) event.Codec { return newProto(t, newFake(t)) },
			Cases: []eventtest.Case{
				{Name: "placed", Type: typeOf[*testpb.OrderPlaced](typePlaced, "orders", testpb.OrderProto), Equal: protoEqual,
					Value: &testpb.OrderPlaced{Order: "o-1", Seq: 3, Items: []string{"tent"}}},
				{Name: "parcel", Type: typeOf[*testpb.OrderShipped_Parcel]("parcel", "parcels", testpb.OrderProto), Equal: protoEqual,
					Value: &testpb.OrderShipped_Parcel{Id: "p-1", Grams: 12}},
			},
			// The frame detects a short header, not a cut Protobuf payload.
			Features: eventtest.Features{TruncationUndetected: true},
		})
	})
}

// TestVersions: a producer on version 1 of an Avro type and a consumer on
// version 2 (a field added with a default) interoperate through the
// registry: the consumer fetches the writer's schema by the frame's id and
// resolves it, with an identity upcaster to accept dataversion 1.
func TestVersions(t *testing.T) {
	t.Parallel()
	p := brokers[0].Make(t)
	f := newFake(t)
	ctx := context.Background()
	topic := testenv.Name(t, "sr-versions")

	v1, err := event.NewRegistry(event.WithSource("/tests/v1"))
	must(t, err)
	must(t, event.Register[OrderV1](v1, typeOrder, event.WithCodec(newAvro(t, f)), event.WithSchema(orderSchemaV1)))

	v2, err := event.NewRegistry(event.WithSource("/tests/v2"))
	must(t, err)
	must(t, event.Register[Order](v2, typeOrder, event.WithVersion(2), event.WithCodec(newAvro(t, f)), event.WithSchema(orderSchemaV2),
		event.WithUpcaster(1, func(_ context.Context, b []byte) ([]byte, error) { return b, nil })))
	rt, err := event.NewRouter(v2)
	must(t, err)
	got := make(chan event.Event[Order], 2)
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[Order]) error { got <- e; return nil }))
	run(t, p, broker.Subscription{Topic: topic, Group: "g", DeadLetterTopic: topic + ".dlq"}, rt.Handler())

	must(t, event.Publish(ctx, v1, p.Pub, topic, "k", OrderV1{Order: "old", Seq: 1}))
	must(t, event.Publish(ctx, v2, p.Pub, topic, "k", Order{Order: "new", Seq: 2, Channel: "shop"}))
	for _, want := range []struct {
		v       Order
		version int
	}{{Order{Order: "old", Seq: 1, Channel: "web"}, 1}, {Order{Order: "new", Seq: 2, Channel: "shop"}, 2}} {
		select {
		case e := <-got:
			if e.Data != want.v || e.Version != want.version {
				t.Errorf("got %+v version %d, want %+v version %d", e.Data, e.Version, want.v, want.version)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not handled")
		}
	}
	if s, ok := f.GetSchema(topic+"-value", 2); !ok || s.Schema.Schema != orderSchemaV2 {
		t.Errorf("version 2 of the subject: %+v %v", s, ok)
	}
}
