package event_test

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	ce "github.com/cloudevents/sdk-go/v2/event"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/event"
)

// TestSDKStructuredIsRead: a structured CloudEvent written by the official
// Go SDK (event.New, json.Marshal) is read by the Router, with and without
// our dataversion extension, and its other extensions reach Event.Extensions.
func TestSDKStructuredIsRead(t *testing.T) {
	t.Parallel()
	p := brokers[0].Make(t)
	ctx := context.Background()
	reg := registry(t)
	rt, err := event.NewRouter(reg)
	must(t, err)
	got := make(chan event.Event[OrderPlaced], 2)
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[OrderPlaced]) error { got <- e; return nil }))
	run(t, p, broker.Subscription{Topic: "sdk", Group: "g", DeadLetterTopic: "sdk.dlq"}, rt.Handler())

	at := time.Date(2026, 12, 1, 1, 0, 0, 5000, time.UTC)
	want := OrderPlaced{Order: "sdk", Seq: 7, Items: []string{"map"}, Total: 3.5}
	for i, version := range []any{nil, 1} {
		e := ce.New()
		e.SetID([]string{"sdk-1", "sdk-2"}[i])
		e.SetSource("/sdk/producer")
		e.SetType(typePlaced)
		e.SetTime(at)
		e.SetSubject("orders/sdk")
		e.SetExtension("partitionkey", "orders.sdk")
		if version != nil {
			e.SetExtension(event.DataVersionAttribute, version)
		}
		must(t, e.SetData(ce.ApplicationJSON, want))
		must(t, e.Validate())
		b, err := json.Marshal(e)
		must(t, err)
		must(t, p.Pub.Publish(ctx, "sdk", broker.Message{ID: e.ID(), Key: "orders.sdk", Payload: b,
			Header: map[string]string{"content-type": ce.ApplicationCloudEventsJSON}}))
		select {
		case ev := <-got:
			if !reflect.DeepEqual(ev.Data, want) || ev.ID != e.ID() || ev.Source != "/sdk/producer" || ev.Type != typePlaced ||
				!ev.Time.Equal(at) || ev.Subject != "orders/sdk" || ev.Version != 1 || ev.Extensions["partitionkey"] != "orders.sdk" {
				t.Errorf("SDK event read as %+v", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("SDK event %s not handled; stats %+v", e.ID(), rt.Stats())
		}
	}
}

// TestStructuredIsReadBySDK: what Encode writes in structured mode
// unmarshals into the SDK's event.Event, which validates and carries our
// attributes and data.
func TestStructuredIsReadBySDK(t *testing.T) {
	t.Parallel()
	reg := registry(t, event.WithMode(event.Structured))
	at := time.Date(2026, 12, 1, 1, 0, 0, 123456789, time.UTC)
	v := OrderShipped{Order: "o1", Seq: 2, Carrier: "poste", At: at}
	m, err := event.Encode(context.Background(), reg, "orders", "orders.o1", v,
		event.WithSubject("orders/o1"), event.WithTime(at), event.WithExtension("tenant", "acme"))
	must(t, err)
	var e ce.Event
	must(t, json.Unmarshal(m.Payload, &e))
	must(t, e.Validate())
	var data OrderShipped
	must(t, e.DataAs(&data))
	if e.ID() != m.ID || e.Source() != "/tests/orders" || e.Type() != typeShipped || !e.Time().Equal(at) || e.Subject() != "orders/o1" ||
		e.DataContentType() != "application/json" || !reflect.DeepEqual(data, v) {
		t.Errorf("SDK reads %v", e)
	}
	if ext := e.Extensions(); ext["tenant"] != "acme" || ext[event.DataVersionAttribute] != int32(2) {
		t.Errorf("SDK extensions %#v", ext)
	}
}

// headerMessage reads a broker.Message in binary mode as the SDK's Kafka
// and AMQP bindings read their protocol's headers: through the SDK's
// attribute table for the given prefix, so an attribute we name differently
// from the binding would surface as an unknown extension, not an attribute.
type headerMessage struct {
	m      broker.Message
	prefix string
}

func (h headerMessage) ReadEncoding() binding.Encoding { return binding.EncodingBinary }

func (h headerMessage) ReadStructured(context.Context, binding.StructuredWriter) error {
	return binding.ErrNotStructured
}

func (h headerMessage) ReadBinary(ctx context.Context, w binding.BinaryWriter) error {
	version := spec.WithPrefix(h.prefix).Version(h.m.Header[h.prefix+"specversion"])
	if version == nil {
		return binding.ErrUnknownEncoding
	}
	for k, v := range h.m.Header {
		switch {
		case k == "content-type":
			if err := w.SetAttribute(version.AttributeFromKind(spec.DataContentType), v); err != nil {
				return err
			}
		case strings.HasPrefix(k, h.prefix):
			if a := version.Attribute(k); a != nil {
				if err := w.SetAttribute(a, v); err != nil {
					return err
				}
			} else if err := w.SetExtension(strings.TrimPrefix(k, h.prefix), v); err != nil {
				return err
			}
		}
	}
	return w.SetData(bytes.NewReader(h.m.Payload))
}

func (h headerMessage) Finish(error) error { return nil }

func (h headerMessage) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	version := spec.WithPrefix(h.prefix).Version(h.m.Header[h.prefix+"specversion"])
	if version == nil {
		return nil, nil
	}
	a := version.AttributeFromKind(k)
	if a == nil {
		return nil, nil
	}
	name := a.PrefixedName()
	if k == spec.DataContentType {
		name = "content-type"
	}
	if v, ok := h.m.Header[name]; ok {
		return a, v
	}
	return a, nil
}

func (h headerMessage) GetExtension(name string) any {
	if v, ok := h.m.Header[h.prefix+name]; ok {
		return v
	}
	return nil
}

// TestBinaryIsReadBySDK: binary mode under KafkaHeaders and AMQPHeaders
// gives the SDK a valid event with every attribute under its binding name.
func TestBinaryIsReadBySDK(t *testing.T) {
	t.Parallel()
	for _, h := range []event.Headers{event.KafkaHeaders, event.AMQPHeaders} {
		reg := registry(t, event.WithHeaders(h))
		at := time.Date(2026, 12, 1, 1, 0, 0, 42, time.UTC)
		v := OrderPlaced{Order: "o2", Seq: 3, Items: []string{"a"}, Total: 1}
		m, err := event.Encode(context.Background(), reg, "orders", "orders.o2", v, event.WithSubject("orders/o2"), event.WithTime(at))
		must(t, err)
		e, err := binding.ToEvent(context.Background(), headerMessage{m, h.Prefix()})
		must(t, err)
		must(t, e.Validate())
		var data OrderPlaced
		must(t, e.DataAs(&data))
		if e.ID() != m.ID || e.Source() != "/tests/orders" || e.Type() != typePlaced || !e.Time().Equal(at) ||
			e.Subject() != "orders/o2" || e.DataContentType() != "application/json" || !reflect.DeepEqual(data, v) {
			t.Errorf("%s: SDK reads %v", h.Prefix(), e)
		}
		if ext := e.Extensions(); len(ext) != 1 || ext[event.DataVersionAttribute] != "1" {
			t.Errorf("%s: SDK extensions %#v, want only dataversion", h.Prefix(), ext)
		}
	}
}
