package event_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/internal/testenv"
)

// envelopes are the ways a producer can write events; the Router reads all.
var envelopes = []struct {
	name    string
	opts    []event.Option
	headers event.Headers
	mode    event.Mode
}{
	{"binary", nil, event.KafkaHeaders, event.Binary},
	{"amqpheaders", []event.Option{event.WithHeaders(event.AMQPHeaders)}, event.AMQPHeaders, event.Binary},
	{"structured", []event.Option{event.WithMode(event.Structured)}, event.KafkaHeaders, event.Structured},
}

// sample is the value published as event seq of key: the three types in turn.
func sample(key string, seq int) any {
	switch seq % 3 {
	case 0:
		return OrderPlaced{Order: key, Seq: seq, Items: []string{"tent", fmt.Sprint(seq)}, Total: 12.5 * float64(seq)}
	case 1:
		return OrderShipped{Order: key, Seq: seq, Carrier: "poste", At: time.Date(2026, 11, 30, 12, 0, seq, 123456789, time.UTC)}
	}
	return &Refund{Order: key, Seq: seq, Amount: int64(seq) * 100}
}

func publishSample(ctx context.Context, r *event.Registry, p broker.Publisher, topic, key string, seq int, opts ...event.PublishOption) error {
	switch v := sample(key, seq).(type) {
	case OrderPlaced:
		return event.Publish(ctx, r, p, topic, key, v, opts...)
	case OrderShipped:
		return event.Publish(ctx, r, p, topic, key, v, opts...)
	case *Refund:
		return event.Publish(ctx, r, p, topic, key, v, opts...)
	}
	panic("unreachable")
}

// received is one handled event.
type received struct {
	key  string
	seq  int
	data any
	meta event.Event[struct{}] // attributes, Data left out
}

// TestRoundTrip publishes three types on one topic over three keys, on every
// broker and in every envelope, and checks values, attributes, headers and
// order per key.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, bc := range brokers {
		for _, ec := range envelopes {
			t.Run(bc.Name+"/"+ec.name, func(t *testing.T) {
				t.Parallel()
				roundTrip(t, bc.Name, bc.Make(t), ec.opts, ec.headers, ec.mode)
			})
		}
	}
}

func roundTrip(t *testing.T, brokerName string, p pair, opts []event.Option, h event.Headers, mode event.Mode) {
	ctx := context.Background()
	topic := testenv.Name(t, "ev")
	reg := registry(t, opts...)
	rt, err := event.NewRouter(reg)
	must(t, err)

	const keys, perKey = 3, 15
	var mu sync.Mutex
	seen := map[string]bool{}
	perKeyOrder := map[string][]int{}
	var got []received
	raw := map[string]broker.Message{}
	done := make(chan struct{})
	record := func(m broker.Message, key string, seq int, data any, meta event.Event[struct{}]) {
		mu.Lock()
		defer mu.Unlock()
		if seen[m.ID] {
			return // a redelivery: at-least-once
		}
		seen[m.ID] = true
		perKeyOrder[key] = append(perKeyOrder[key], seq)
		got = append(got, received{key: key, seq: seq, data: data, meta: meta})
		raw[m.ID] = m
		if len(seen) == keys*perKey {
			close(done)
		}
	}
	strip := func(id, src, typ, subj string, at time.Time, v int, ct string, m broker.Message) event.Event[struct{}] {
		return event.Event[struct{}]{ID: id, Source: src, Type: typ, Subject: subj, Time: at, Version: v, ContentType: ct, Message: m}
	}
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[OrderPlaced]) error {
		record(e.Message, e.Data.Order, e.Data.Seq, e.Data, strip(e.ID, e.Source, e.Type, e.Subject, e.Time, e.Version, e.ContentType, e.Message))
		return nil
	}))
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[OrderShipped]) error {
		record(e.Message, e.Data.Order, e.Data.Seq, e.Data, strip(e.ID, e.Source, e.Type, e.Subject, e.Time, e.Version, e.ContentType, e.Message))
		return nil
	}))
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[*Refund]) error {
		record(e.Message, e.Data.Order, e.Data.Seq, e.Data, strip(e.ID, e.Source, e.Type, e.Subject, e.Time, e.Version, e.ContentType, e.Message))
		return nil
	}))
	run(t, p, broker.Subscription{Topic: topic, Group: "g", Concurrency: 4, DeadLetterTopic: topic + ".dlq"}, rt.Handler())

	base := time.Date(2026, 12, 1, 1, 2, 3, 456789000, time.UTC)
	for seq := range perKey {
		for k := range keys {
			key := fmt.Sprintf("orders.k%d", k)
			must(t, publishSample(ctx, reg, p.Pub, topic, key, seq,
				event.WithID(fmt.Sprintf("%s-%d", key, seq)),
				event.WithTime(base.Add(time.Duration(seq)*time.Millisecond)),
				event.WithSubject("orders/"+key)))
		}
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("received %d of %d events; router stats %+v", len(seen), keys*perKey, rt.Stats())
	}
	mu.Lock()
	defer mu.Unlock()
	for k := range keys {
		key := fmt.Sprintf("orders.k%d", k)
		for i, seq := range perKeyOrder[key] {
			if seq != i {
				t.Fatalf("order of %s broken: %v", key, perKeyOrder[key])
			}
		}
	}
	for _, r := range got {
		id := fmt.Sprintf("%s-%d", r.key, r.seq)
		want := sample(r.key, r.seq)
		if !reflect.DeepEqual(r.data, want) {
			t.Errorf("%s: data %+v, want %+v", id, r.data, want)
		}
		wantType, wantVersion := typePlaced, 1
		switch want.(type) {
		case OrderShipped:
			wantType, wantVersion = typeShipped, 2
		case *Refund:
			wantType = typeRefund
		}
		e := r.meta
		at := base.Add(time.Duration(r.seq) * time.Millisecond)
		if e.ID != id || e.Message.ID != id || e.Source != "/tests/orders" || e.Type != wantType || e.Version != wantVersion ||
			e.Subject != "orders/"+r.key || !e.Time.Equal(at) || e.ContentType != "application/json" || e.Message.Key != r.key {
			t.Errorf("%s: attributes %+v", id, e)
		}
		m := raw[id]
		if mode == event.Structured {
			checkStructured(t, brokerName, m, id, wantType, wantVersion)
			continue
		}
		checkBinary(t, brokerName, h, m, map[string]string{
			"specversion": "1.0", "id": id, "source": "/tests/orders", "type": wantType,
			"time": at.Format(time.RFC3339Nano), "dataversion": fmt.Sprint(wantVersion), "subject": "orders/" + r.key,
			"datacontenttype": "application/json",
		})
	}
	if s := rt.Stats(); s.Handled < keys*perKey || s.Rejected != 0 || s.Failed != 0 {
		t.Errorf("stats %+v", s)
	}
}

// checkBinary checks the documented headers, and how each broker carried them.
func checkBinary(t *testing.T, brokerName string, h event.Headers, m broker.Message, attrs map[string]string) {
	t.Helper()
	for attr, want := range attrs {
		if got := m.Header[h.Name(attr)]; got != want {
			t.Errorf("%s: header %s = %q, want %q", m.ID, h.Name(attr), got, want)
		}
	}
	switch brokerName {
	case "rabbitmq":
		d := m.Raw.(*amqp.Delivery)
		if d.ContentType != attrs["datacontenttype"] {
			t.Errorf("%s: AMQP content-type property %q", m.ID, d.ContentType)
		}
		if d.Headers[h.Name("type")] != attrs["type"] {
			t.Errorf("%s: AMQP headers %v", m.ID, d.Headers)
		}
	case "kafka":
		r := m.Raw.(*kgo.Record)
		found := map[string]string{}
		for _, rh := range r.Headers {
			found[rh.Key] = string(rh.Value)
		}
		if found[h.Name("type")] != attrs["type"] || found["content-type"] != attrs["datacontenttype"] || string(r.Key) != m.Key {
			t.Errorf("%s: Kafka record headers %v, key %q", m.ID, found, r.Key)
		}
	}
}

func checkStructured(t *testing.T, brokerName string, m broker.Message, id, typ string, version int) {
	t.Helper()
	if ct := m.Header["content-type"]; ct != event.StructuredContentType {
		t.Errorf("%s: content-type %q", id, ct)
	}
	if brokerName == "rabbitmq" && m.Raw.(*amqp.Delivery).ContentType != event.StructuredContentType {
		t.Errorf("%s: AMQP content-type property %q", id, m.Raw.(*amqp.Delivery).ContentType)
	}
	var doc map[string]any
	if err := json.Unmarshal(m.Payload, &doc); err != nil {
		t.Fatalf("%s: payload is not JSON: %v", id, err)
	}
	if doc["specversion"] != "1.0" || doc["id"] != id || doc["type"] != typ || doc["dataversion"] != float64(version) || doc["data"] == nil {
		t.Errorf("%s: structured event %v", id, doc)
	}
}
