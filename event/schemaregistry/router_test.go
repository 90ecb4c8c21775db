package schemaregistry_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/internal/eventbrokers"
	"github.com/go-integration/patterns/event/protobuf/testpb"
	"github.com/go-integration/patterns/event/schemaregistry"
	"github.com/go-integration/patterns/internal/testenv"
)

const (
	typeOrder   = "com.example.order"
	typePlaced  = "com.example.order.placed"
	typeShipped = "com.example.order.shipped"
)

// service is one side (producer or consumer) with its own codecs and
// registry clients, as a separate process would have.
type service struct {
	reg      *event.Registry
	avro     *schemaregistry.Codec
	protobuf *schemaregistry.Codec
}

func newService(t *testing.T, f *fake, source string, opts ...schemaregistry.Option) service {
	t.Helper()
	s := service{avro: newAvro(t, f, opts...), protobuf: newProto(t, f, opts...)}
	var err error
	s.reg, err = event.NewRegistry(event.WithSource(source))
	must(t, err)
	must(t, event.Register[OrderV1](s.reg, typeOrder, event.WithCodec(s.avro), event.WithSchema(orderSchemaV1)))
	must(t, event.Register[*testpb.OrderPlaced](s.reg, typePlaced, event.WithCodec(s.protobuf), event.WithSchema(testpb.OrderProto)))
	must(t, event.Register[*testpb.OrderShipped](s.reg, typeShipped, event.WithCodec(s.protobuf), event.WithSchema(testpb.OrderProto)))
	return s
}

// eachBroker runs test on every broker in parallel, each run with a fake
// registry of its own and a producer and a consumer service using it.
func eachBroker(t *testing.T, test func(t *testing.T, p eventbrokers.Pair, f *fake, prod, cons service)) {
	for _, bc := range brokers {
		t.Run(bc.Name, func(t *testing.T) {
			t.Parallel()
			p := bc.Make(t)
			f := newFake(t)
			test(t, p, f, newService(t, f, "/tests/producer"), newService(t, f, "/tests/consumer"))
		})
	}
}

// TestRouterRoundTrip publishes Avro and Protobuf events through the
// registry codec to a Router on the memory broker, RabbitMQ and kfake,
// producer and consumer with codecs and clients of their own, and counts
// registry requests: each side asks only for the first message of each
// schema.
func TestRouterRoundTrip(t *testing.T) {
	t.Parallel()
	eachBroker(t, func(t *testing.T, p eventbrokers.Pair, f *fake, prod, cons service) {
		ctx := context.Background()
		avroTopic, pbTopic := testenv.Name(t, "sr-avro"), testenv.Name(t, "sr-pb")

		rt, err := event.NewRouter(cons.reg)
		must(t, err)
		var mu sync.Mutex
		got := map[string][]string{} // key -> what arrived, in order
		n := 0
		arrived := make(chan struct{}, 100)
		note := func(key, what string) {
			mu.Lock()
			got[key] = append(got[key], what)
			n++
			mu.Unlock()
			arrived <- struct{}{}
		}
		must(t, event.Handle(rt, func(_ context.Context, e event.Event[OrderV1]) error {
			note(e.Message.Key, fmt.Sprintf("avro %s/%d", e.Data.Order, e.Data.Seq))
			return nil
		}))
		must(t, event.Handle(rt, func(_ context.Context, e event.Event[*testpb.OrderPlaced]) error {
			note(e.Message.Key, fmt.Sprintf("placed %s/%d %v", e.Data.Order, e.Data.Seq, e.Data.Items))
			return nil
		}))
		must(t, event.Handle(rt, func(_ context.Context, e event.Event[*testpb.OrderShipped]) error {
			note(e.Message.Key, fmt.Sprintf("shipped %s/%d %s", e.Data.Order, e.Data.Seq, e.Data.Parcels[0].GetId()))
			return nil
		}))
		for _, topic := range []string{avroTopic, pbTopic} {
			run(t, p, broker.Subscription{Topic: topic, Group: "g", MaxAttempts: 3, DeadLetterTopic: topic + ".dlq"}, rt.Handler())
		}

		publish := func(seq int) {
			key := fmt.Sprintf("k%d", seq%2)
			must(t, event.Publish(ctx, prod.reg, p.Pub, avroTopic, key, OrderV1{Order: key, Seq: int64(seq)}))
			if seq%2 == 0 {
				must(t, event.Publish(ctx, prod.reg, p.Pub, pbTopic, key, &testpb.OrderPlaced{Order: key, Seq: int64(seq), Items: []string{"tent"}}))
			} else {
				must(t, event.Publish(ctx, prod.reg, p.Pub, pbTopic, key, &testpb.OrderShipped{Order: key, Seq: int64(seq),
					Parcels: []*testpb.OrderShipped_Parcel{{Id: fmt.Sprint("p", seq), Grams: 900}}}))
			}
		}
		wait := func(total int) {
			deadline := time.After(30 * time.Second)
			for {
				mu.Lock()
				done := n >= total
				mu.Unlock()
				if done {
					return
				}
				select {
				case <-arrived:
				case <-deadline:
					t.Fatalf("%d of %d events handled", n, total)
				}
			}
		}
		// The first message of each schema: one of each type.
		publish(0)
		publish(1)
		wait(4)
		first := f.routes()
		want := map[string]int{
			// Producer: the Avro schema and the .proto file looked up
			// (absent), checked and registered; the second Protobuf
			// message is in the same file: looked up, found.
			"POST /subjects/{s}": 3,
			"POST /compatibility/subjects/{s}/versions/latest": 2,
			"POST /subjects/{s}/versions":                      2,
			// Consumer: each id fetched once.
			"GET /schemas/ids/{id}": 2,
		}
		if !maps.Equal(first, want) {
			t.Errorf("registry requests for the first messages: %v, want %v", first, want)
		}
		const more = 40
		for seq := 2; seq < 2+more; seq++ {
			publish(seq)
		}
		wait(4 + 2*more)
		if after := f.routes(); !maps.Equal(after, first) {
			t.Errorf("registry requests after the first message of each schema: %v, was %v", after, first)
		}
		if s := prod.avro.Stats(); s.Encoded != 2+more || s.Requests != 3 {
			t.Errorf("producer Avro stats %+v", s)
		}
		if s := cons.protobuf.Stats(); s.Decoded != 2+more || s.Requests != 1 {
			t.Errorf("consumer Protobuf stats %+v", s)
		}
		mu.Lock()
		defer mu.Unlock()
		// Order per key, and the values, for k1: the odd sequence numbers.
		var wantK1 []string
		for seq := 1; seq < 2+more; seq += 2 {
			wantK1 = append(wantK1, fmt.Sprintf("avro k1/%d", seq), fmt.Sprintf("shipped k1/%d p%d", seq, seq))
		}
		var avroK1, pbK1 []string
		for _, s := range got["k1"] {
			if strings.HasPrefix(s, "avro") {
				avroK1 = append(avroK1, s)
			} else {
				pbK1 = append(pbK1, s)
			}
		}
		for i := range avroK1 {
			if avroK1[i] != wantK1[2*i] || pbK1[i] != wantK1[2*i+1] {
				t.Fatalf("k1 event %d: %q %q, want %q %q", i, avroK1[i], pbK1[i], wantK1[2*i], wantK1[2*i+1])
			}
		}
	})
}

// TestRouterErrors sends each registry failure to a subscription with a
// dead-letter topic: an unknown schema id and a bad frame are dead-lettered
// after one delivery with the reason; a registry that is down gets the
// message retried, not dead-lettered, until it is back.
func TestRouterErrors(t *testing.T) {
	t.Parallel()
	eachBroker(t, func(t *testing.T, p eventbrokers.Pair, f *fake, prod, cons service) {
		ctx := context.Background()
		topic := testenv.Name(t, "sr-bad")
		dlq := topic + ".dlq"

		rt, err := event.NewRouter(cons.reg)
		must(t, err)
		placed := make(chan event.Event[*testpb.OrderPlaced], 10)
		must(t, event.Handle(rt, func(_ context.Context, e event.Event[*testpb.OrderPlaced]) error { placed <- e; return nil }))
		shipped := make(chan event.Event[*testpb.OrderShipped], 10)
		must(t, event.Handle(rt, func(_ context.Context, e event.Event[*testpb.OrderShipped]) error { shipped <- e; return nil }))
		var mu sync.Mutex
		calls := map[string]int{}
		counting := func(ctx context.Context, m broker.Message) error {
			mu.Lock()
			calls[m.ID]++
			mu.Unlock()
			return rt.Handler()(ctx, m)
		}
		dead := newCollector()
		run(t, p, broker.Subscription{Topic: dlq, Group: "reader"}, dead.Handle)
		run(t, p, broker.Subscription{Topic: topic, Group: "g", MaxAttempts: 1000, DeadLetterTopic: dlq}, counting)

		encode := func(id string, v proto.Message) broker.Message {
			var m broker.Message
			var err error
			switch v := v.(type) {
			case *testpb.OrderPlaced:
				m, err = event.Encode(ctx, prod.reg, topic, "k", v, event.WithID(id))
			case *testpb.OrderShipped:
				m, err = event.Encode(ctx, prod.reg, topic, "k", v, event.WithID(id))
			}
			must(t, err)
			return m
		}
		unknown := encode("unknown-id", &testpb.OrderPlaced{Order: "x"})
		unknown.Payload[4] = 0x63 // schema id 99
		badMagic := encode("bad-magic", &testpb.OrderPlaced{Order: "x"})
		badMagic.Payload[0] = 1
		short := encode("short", &testpb.OrderPlaced{Order: "x"})
		short.Payload = short.Payload[:3]
		cases := []struct {
			m    broker.Message
			says string
		}{
			{unknown, "unknown schema (event: cannot decode): id 99"},
			{badMagic, "magic byte 0x01"},
			{short, "3 bytes, the header is 5"},
		}
		for _, c := range cases {
			must(t, p.Pub.Publish(ctx, topic, c.m))
		}
		must(t, event.Publish(ctx, prod.reg, p.Pub, topic, "k", &testpb.OrderPlaced{Order: "good"}, event.WithID("good")))
		select {
		case e := <-placed:
			if e.ID != "good" || e.Data.Order != "good" {
				t.Fatalf("good event %+v", e)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the good event behind the bad ones was not handled")
		}
		testenv.Eventually(t, 30*time.Second, "bad frames dead-lettered", func() bool { return dead.Len() >= len(cases) })
		for _, c := range cases {
			m, ok := dead.Get(c.m.ID)
			if !ok {
				t.Errorf("%s: not dead-lettered", c.m.ID)
				continue
			}
			if x := m.Header[broker.HeaderError]; !strings.Contains(x, event.ErrDecode.Error()) || !strings.Contains(x, c.says) {
				t.Errorf("%s: x-error %q, want ErrDecode saying %q", c.m.ID, x, c.says)
			}
			if a := m.Header[broker.HeaderAttempts]; a != "1" {
				t.Errorf("%s: dead-lettered after %s attempts, want 1", c.m.ID, a)
			}
		}

		// Down: the consumer has the .proto file's id already, so the
		// producer writes with a second text of it (a comment more: a new
		// schema id), registered while the registry is up.
		other := testpb.OrderProto + "\n// v2 of the file\n"
		reg2, err := event.NewRegistry(event.WithSource("/tests/producer2"))
		must(t, err)
		must(t, event.Register[*testpb.OrderShipped](reg2, typeShipped, event.WithCodec(prod.protobuf), event.WithSchema(other)))
		warm, err := event.Encode(ctx, reg2, topic, "k", &testpb.OrderShipped{Order: "down"}, event.WithID("down"))
		must(t, err) // the producer's first message of this schema: registered while up
		before := rt.Stats()
		f.down.Store(true)
		must(t, p.Pub.Publish(ctx, topic, warm))
		testenv.Eventually(t, 30*time.Second, "retries while the registry is down", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return calls["down"] >= 3
		})
		f.down.Store(false)
		select {
		case e := <-shipped:
			if e.Data.Order != "down" || e.Message.Attempt < 3 {
				t.Errorf("handled %q on attempt %d, want after 3 or more", e.Data.Order, e.Message.Attempt)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("not handled after the registry came back")
		}
		if _, ok := dead.Get("down"); ok {
			t.Error("dead-lettered while the registry was down: it is transient")
		}
		if s := rt.Stats(); s.Failed-before.Failed < 2 || s.Rejected != uint64(len(cases)) {
			t.Errorf("stats %+v (before %+v)", s, before)
		}

		// Incompatible at the first publish: a clear error, nothing sent.
		f.setIncompatible(topic + "-value")
		third := testpb.OrderProto + "\n// v3\n"
		reg3, err := event.NewRegistry(event.WithSource("/tests/producer3"))
		must(t, err)
		must(t, event.Register[*testpb.OrderPlaced](reg3, typePlaced, event.WithCodec(prod.protobuf), event.WithSchema(third)))
		err = event.Publish(ctx, reg3, p.Pub, topic, "k", &testpb.OrderPlaced{Order: "incompatible"})
		if !errors.Is(err, schemaregistry.ErrIncompatible) || !errors.Is(err, event.ErrEncode) || errors.Is(err, event.ErrUnavailable) {
			t.Errorf("incompatible first publish: %v", err)
		}
	})
}

// TestDownUsesUpAttempts: a registry that stays down is transient, not
// forever: the subscription retries the message MaxAttempts times, then
// dead-letters it with the reason.
func TestDownUsesUpAttempts(t *testing.T) {
	t.Parallel()
	eachBroker(t, func(t *testing.T, p eventbrokers.Pair, f *fake, prod, cons service) {
		ctx := context.Background()
		topic := testenv.Name(t, "sr-down")
		dlq := topic + ".dlq"
		rt, err := event.NewRouter(cons.reg)
		must(t, err)
		must(t, event.Handle(rt, func(_ context.Context, e event.Event[OrderV1]) error {
			t.Errorf("handled %+v while the registry is down", e.Data)
			return nil
		}))
		dead := newCollector()
		run(t, p, broker.Subscription{Topic: dlq, Group: "reader"}, dead.Handle)
		run(t, p, broker.Subscription{Topic: topic, Group: "g", MaxAttempts: 3, DeadLetterTopic: dlq}, rt.Handler())

		m, err := event.Encode(ctx, prod.reg, topic, "k", OrderV1{Order: "o"}, event.WithID("down"))
		must(t, err)
		f.down.Store(true)
		must(t, p.Pub.Publish(ctx, topic, m))
		testenv.Eventually(t, 30*time.Second, "dead-lettered after MaxAttempts", func() bool { return dead.Len() == 1 })
		d, _ := dead.Get("down")
		if a := d.Header[broker.HeaderAttempts]; a != "3" {
			t.Errorf("dead-lettered after %s attempts, want 3", a)
		}
		if x := d.Header[broker.HeaderError]; !strings.Contains(x, event.ErrUnavailable.Error()) || !strings.Contains(x, "fetch schema id") {
			t.Errorf("x-error %q, want ErrUnavailable naming the fetch", x)
		}
		if s := rt.Stats(); s.Failed != 3 || s.Rejected != 0 {
			t.Errorf("stats %+v, want 3 failed and none rejected", s)
		}
	})
}
