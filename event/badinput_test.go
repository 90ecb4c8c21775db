package event_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/internal/testenv"
)

// headers returns valid binary-mode headers for an event of typ.
func headers(typ, id string, version string) map[string]string {
	return map[string]string{
		"ce_specversion": "1.0", "ce_id": id, "ce_source": "/tests/raw", "ce_type": typ,
		"ce_time": "2026-12-01T00:00:00Z", "ce_dataversion": version, "content-type": "application/json",
	}
}

func without(h map[string]string, k string) map[string]string {
	delete(h, k)
	return h
}

func with(h map[string]string, k, v string) map[string]string {
	h[k] = v
	return h
}

// TestBadInput sends each kind of bad input on every broker to a
// subscription with a dead-letter topic and MaxAttempts 5: each is
// dead-lettered after one delivery with the reason in x-error, and the good
// event behind them on the same key is handled.
func TestBadInput(t *testing.T) {
	t.Parallel()
	for _, bc := range brokers {
		t.Run(bc.Name, func(t *testing.T) {
			t.Parallel()
			badInput(t, bc.Make(t))
		})
	}
}

func badInput(t *testing.T, p pair) {
	ctx := context.Background()
	topic := testenv.Name(t, "bad")
	dlq := topic + ".dlq"
	reg, err := event.NewRegistry(event.WithSource("/tests/bad"))
	must(t, err)
	must(t, event.Register[OrderPlaced](reg, typePlaced))
	must(t, event.Register[OrderShipped](reg, typeShipped, event.WithVersion(2),
		event.WithUpcaster(1, func(_ context.Context, b []byte) ([]byte, error) {
			if strings.Contains(string(b), "poison") {
				return nil, errors.New("poisoned v1 payload")
			}
			return b, nil
		})))
	rt, err := event.NewRouter(reg)
	must(t, err)
	good := make(chan event.Event[OrderPlaced], 1)
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[OrderPlaced]) error {
		good <- e
		return nil
	}))
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[OrderShipped]) error {
		t.Errorf("handler called for %s", e.ID)
		return nil
	}))

	dead := newCollector()
	run(t, p, broker.Subscription{Topic: dlq, Group: "reader"}, dead.Handle)
	var mu sync.Mutex
	calls := map[string]int{}
	counting := func(ctx context.Context, m broker.Message) error {
		mu.Lock()
		calls[m.ID]++
		mu.Unlock()
		return rt.Handler()(ctx, m)
	}
	run(t, p, broker.Subscription{Topic: topic, Group: "g", MaxAttempts: 5, DeadLetterTopic: dlq}, counting)

	cases := []struct {
		id      string
		header  map[string]string
		payload string
		want    error
		says    string
	}{
		{"decode", headers(typePlaced, "decode", "1"), "not json", event.ErrDecode, "com.example.order.placed version 1"},
		{"no-source", without(headers(typePlaced, "no-source", "1"), "ce_source"), `{}`, event.ErrMissingAttribute, "ce_source"},
		{"no-type", map[string]string{"x": "y"}, `{}`, event.ErrMissingAttribute, "ce_type"},
		{"no-id", without(headers(typePlaced, "no-id", "1"), "ce_id"), `{}`, event.ErrMissingAttribute, "ce_id"},
		{"unknown", headers("com.example.nope", "unknown", "1"), `{}`, event.ErrUnknownType, "com.example.nope"},
		{"upcast", headers(typeShipped, "upcast", "1"), `{"poison":true}`, event.ErrUpcast, "poisoned v1 payload"},
		{"newer", headers(typeShipped, "newer", "3"), `{}`, event.ErrVersion, "version 3 is newer"},
		{"zero-version", headers(typeShipped, "zero-version", "0"), `{}`, event.ErrInvalidAttribute, "ce_dataversion"},
		{"bad-time", with(headers(typePlaced, "bad-time", "1"), "ce_time", "yesterday"), `{}`, event.ErrInvalidAttribute, "ce_time"},
		{"spec-0.3", with(headers(typePlaced, "spec-0.3", "1"), "ce_specversion", "0.3"), `{}`, event.ErrInvalidAttribute, "ce_specversion"},
		{"avro", with(headers(typePlaced, "avro", "1"), "content-type", "application/avro"), `{}`, event.ErrDecode, "application/avro"},
		{"structured-garbage", map[string]string{"content-type": event.StructuredContentType}, `{"specversion":`, event.ErrDecode, "structured"},
		{"structured-no-id", map[string]string{"content-type": event.StructuredContentType},
			`{"specversion":"1.0","type":"com.example.order.placed","source":"/x","data":{}}`, event.ErrMissingAttribute, "id"},
	}
	for _, c := range cases {
		must(t, p.Pub.Publish(ctx, topic, broker.Message{ID: c.id, Key: "k", Payload: []byte(c.payload), Header: c.header}))
	}
	must(t, event.Publish(ctx, reg, p.Pub, topic, "k", OrderPlaced{Order: "ok"}, event.WithID("good")))
	select {
	case e := <-good:
		if e.ID != "good" || e.Data.Order != "ok" {
			t.Errorf("good event %+v", e)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the good event behind the bad ones was not handled")
	}
	testenv.Eventually(t, 30*time.Second, "every bad input dead-lettered", func() bool { return dead.Len() >= len(cases) })
	for _, c := range cases {
		m, ok := dead.Get(c.id)
		if !ok {
			t.Errorf("%s: not dead-lettered", c.id)
			continue
		}
		xerr := m.Header[broker.HeaderError]
		if !strings.Contains(xerr, c.want.Error()) || !strings.Contains(xerr, c.says) {
			t.Errorf("%s: x-error %q, want %q naming %q", c.id, xerr, c.want, c.says)
		}
		if a := m.Header[broker.HeaderAttempts]; a != "1" {
			t.Errorf("%s: dead-lettered after %s attempts, want 1 (permanent)", c.id, a)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, c := range cases {
		if calls[c.id] != 1 {
			t.Errorf("%s: delivered %d times, want once", c.id, calls[c.id])
		}
	}
	// Handled counts after the handler returns: wait for it.
	testenv.Eventually(t, 5*time.Second, "stats count the good event", func() bool { return rt.Stats().Handled == 1 })
	if s := rt.Stats(); s.Rejected != uint64(len(cases)) || s.Handled != 1 || s.Failed != 0 {
		t.Errorf("stats %+v, want %d rejected and 1 handled", s, len(cases))
	}
}

// flaky is a codec whose service is down for the first n calls of each kind.
type flaky struct {
	marshalDown, unmarshalDown atomic.Int32
}

func (*flaky) ContentType() string { return "application/json" }

func (f *flaky) Marshal(ctx context.Context, t event.TypeInfo, v any) ([]byte, error) {
	if f.marshalDown.Add(-1) >= 0 {
		return nil, errors.Join(event.ErrUnavailable, errors.New("registry: connection refused"))
	}
	return event.JSON.Marshal(ctx, t, v)
}

func (f *flaky) Unmarshal(ctx context.Context, t event.TypeInfo, data []byte, v any) error {
	if f.unmarshalDown.Add(-1) >= 0 {
		return errors.Join(event.ErrUnavailable, errors.New("registry: connection refused"))
	}
	return event.JSON.Unmarshal(ctx, t, data, v)
}

// TestUnavailableIsTransient: a codec that wraps ErrUnavailable fails
// Publish with that error (not ErrEncode) and gets a received message
// retried, not dead-lettered.
func TestUnavailableIsTransient(t *testing.T) {
	t.Parallel()
	p := brokers[0].Make(t)
	ctx := context.Background()
	codec := &flaky{}
	codec.marshalDown.Store(1)
	codec.unmarshalDown.Store(2)
	reg, err := event.NewRegistry(event.WithSource("/tests/flaky"), event.WithCodec(codec))
	must(t, err)
	must(t, event.Register[OrderPlaced](reg, typePlaced))
	rt, err := event.NewRouter(reg)
	must(t, err)
	got := make(chan event.Event[OrderPlaced], 1)
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[OrderPlaced]) error { got <- e; return nil }))
	dead := newCollector()
	run(t, p, broker.Subscription{Topic: "flaky.dlq", Group: "reader"}, dead.Handle)
	run(t, p, broker.Subscription{Topic: "flaky", Group: "g", MaxAttempts: 5, DeadLetterTopic: "flaky.dlq"}, rt.Handler())

	err = event.Publish(ctx, reg, p.Pub, "flaky", "k", OrderPlaced{Order: "1"})
	if !errors.Is(err, event.ErrUnavailable) || errors.Is(err, event.ErrEncode) {
		t.Fatalf("Publish while the codec is down: %v, want ErrUnavailable", err)
	}
	must(t, event.Publish(ctx, reg, p.Pub, "flaky", "k", OrderPlaced{Order: "1"}))
	select {
	case e := <-got:
		if e.Message.Attempt != 3 {
			t.Errorf("handled on attempt %d, want 3 (two transient failures)", e.Message.Attempt)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not handled")
	}
	testenv.Eventually(t, 5*time.Second, "stats count the event", func() bool { return rt.Stats().Handled == 1 })
	if s := rt.Stats(); s.Failed != 2 || s.Rejected != 0 || s.Handled != 1 {
		t.Errorf("stats %+v", s)
	}
	if dead.Len() != 0 {
		t.Errorf("%d dead letters", dead.Len())
	}
}
