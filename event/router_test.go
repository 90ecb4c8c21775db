package event_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/event"
)

// TestUnknownPolicies: Skip acknowledges and counts, Fallback hands the
// message over as delivered, DeadLetter (the default) fails permanently.
func TestUnknownPolicies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := registry(t)
	other, err := event.NewRegistry(event.WithSource("/tests/other"))
	must(t, err)
	type Stranger struct{ N int }
	must(t, event.Register[Stranger](other, "com.example.stranger"))
	m, err := event.Encode(ctx, other, "t", "k", Stranger{N: 1})
	must(t, err)

	skip, err := event.NewRouter(reg, event.WithUnknown(event.Skip))
	must(t, err)
	if err := skip.Handler()(ctx, m); err != nil {
		t.Errorf("Skip: %v", err)
	}
	if s := skip.Stats(); s.Skipped != 1 || s.Rejected != 0 {
		t.Errorf("Skip stats %+v", s)
	}

	var fell broker.Message
	fb, err := event.NewRouter(reg, event.WithFallback(func(_ context.Context, m broker.Message) error { fell = m; return errors.New("later") }))
	must(t, err)
	if err := fb.Handler()(ctx, m); err == nil || broker.IsPermanent(err) || fell.ID != m.ID {
		t.Errorf("Fallback: %v, got %q", err, fell.ID)
	}
	if s := fb.Stats(); s.Fallback != 1 {
		t.Errorf("Fallback stats %+v", s)
	}

	dl, err := event.NewRouter(reg)
	must(t, err)
	if err := dl.Handler()(ctx, m); !errors.Is(err, event.ErrUnknownType) || !broker.IsPermanent(err) {
		t.Errorf("DeadLetter: %v", err)
	}
	// A registered type without a handler is unknown to this Router too.
	m2, err := event.Encode(ctx, reg, "t", "k", OrderPlaced{})
	must(t, err)
	if err := dl.Handler()(ctx, m2); !errors.Is(err, event.ErrUnknownType) {
		t.Errorf("registered, unhandled: %v", err)
	}
}

// TestRouterSubscribeNeedsDeadLetter: Router.Subscribe refuses a
// subscription that would drop what the Router rejects, and runs one that
// has a dead-letter destination.
func TestRouterSubscribeNeedsDeadLetter(t *testing.T) {
	t.Parallel()
	p := brokers[0].Make(t)
	rt, err := event.NewRouter(registry(t))
	must(t, err)
	err = rt.Subscribe(context.Background(), p.Sub, broker.Subscription{Topic: "t", Group: "g"})
	if !errors.Is(err, broker.ErrInvalidSubscription) {
		t.Fatalf("without a dead-letter destination: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- rt.Subscribe(ctx, p.Sub, broker.Subscription{Topic: "t", Group: "g", MaxAttempts: 3, Ready: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("with MaxAttempts: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("not ready")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Subscribe: %v", err)
	}
}

// TestOptions: every bad option or argument fails with ErrInvalidOption (or
// the documented sentinel) naming it.
func TestOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, opts := range map[string][]event.Option{
		"nil codec":  {event.WithCodec(nil)},
		"empty src":  {event.WithSource("")},
		"bad src":    {event.WithSource("http://[::1")},
		"zero hdrs":  {event.WithHeaders(event.Headers{})},
		"bad mode":   {event.WithMode(event.Mode(7))},
		"nil option": {nil},
	} {
		if _, err := event.NewRegistry(opts...); !errors.Is(err, event.ErrInvalidOption) {
			t.Errorf("NewRegistry %s: %v", name, err)
		}
	}
	reg := registry(t)
	type T struct{}
	for name, opts := range map[string][]event.TypeOption{
		"version 0":        {event.WithVersion(0)},
		"upcaster from 0":  {event.WithVersion(2), event.WithUpcaster(0, func(context.Context, []byte) ([]byte, error) { return nil, nil })},
		"upcaster too new": {event.WithVersion(2), event.WithUpcaster(2, func(context.Context, []byte) ([]byte, error) { return nil, nil })},
		"nil upcaster":     {event.WithVersion(2), event.WithUpcaster(1, nil)},
		"empty schema":     {event.WithSchema("")},
	} {
		if err := event.Register[T](reg, "com.example.t", opts...); !errors.Is(err, event.ErrInvalidOption) {
			t.Errorf("Register %s: %v", name, err)
		}
	}
	if err := event.Register[T](reg, ""); !errors.Is(err, event.ErrInvalidOption) {
		t.Errorf("empty name: %v", err)
	}
	if err := event.Register[T](reg, "has space"); !errors.Is(err, event.ErrInvalidOption) {
		t.Errorf("name with a space: %v", err)
	}
	if err := event.Register[error](reg, "com.example.iface"); !errors.Is(err, event.ErrInvalidOption) {
		t.Errorf("interface type: %v", err)
	}
	if err := event.Register[T](reg, typePlaced); !errors.Is(err, event.ErrAlreadyRegistered) {
		t.Errorf("name taken: %v", err)
	}
	if err := event.Register[OrderPlaced](reg, "com.example.again"); !errors.Is(err, event.ErrAlreadyRegistered) {
		t.Errorf("Go type taken: %v", err)
	}
	for name, opt := range map[string]event.PublishOption{
		"WithID":        event.WithID(""),
		"WithSubject":   event.WithSubject(""),
		"WithTime":      event.WithTime(time.Time{}),
		"WithExtension": event.WithExtension("Bad_Name", "v"),
		"core ext":      event.WithExtension("type", "v"),
		"dataschema":    event.WithDataSchema("relative/path"),
	} {
		if _, err := event.Encode(ctx, reg, "t", "k", OrderPlaced{}, opt); !errors.Is(err, event.ErrInvalidOption) {
			t.Errorf("Encode %s: %v", name, err)
		}
	}
	if _, err := event.Encode(ctx, reg, "t", "k", T{}); !errors.Is(err, event.ErrNotRegistered) {
		t.Errorf("Encode unregistered: %v", err)
	}
	nosrc, err := event.NewRegistry()
	must(t, err)
	must(t, event.Register[T](nosrc, "com.example.t"))
	if _, err := event.Encode(ctx, nosrc, "t", "k", T{}); !errors.Is(err, event.ErrMissingAttribute) {
		t.Errorf("Encode without a source: %v", err)
	}
	if _, err := event.Encode(ctx, nosrc, "t", "k", T{}, event.WithSource("/per-call")); err != nil {
		t.Errorf("Encode with a per-call source: %v", err)
	}
	if _, err := event.NewRouter(reg, event.WithUnknown(event.Skip), event.WithFallback(func(context.Context, broker.Message) error { return nil })); !errors.Is(err, event.ErrInvalidOption) {
		t.Errorf("WithUnknown and WithFallback: %v", err)
	}
	if _, err := event.NewRouter(reg, event.WithUnknown(event.UnknownAction(9))); !errors.Is(err, event.ErrInvalidOption) {
		t.Errorf("bad UnknownAction: %v", err)
	}
	rt, err := event.NewRouter(reg)
	must(t, err)
	if err := event.Handle(rt, func(context.Context, event.Event[T]) error { return nil }); !errors.Is(err, event.ErrNotRegistered) {
		t.Errorf("Handle unregistered: %v", err)
	}
	must(t, event.Handle(rt, func(context.Context, event.Event[OrderPlaced]) error { return nil }))
	if err := event.Handle(rt, func(context.Context, event.Event[OrderPlaced]) error { return nil }); !errors.Is(err, event.ErrAlreadyRegistered) {
		t.Errorf("Handle twice: %v", err)
	}
	if err := event.Handle[OrderShipped](rt, nil); !errors.Is(err, event.ErrInvalidOption) {
		t.Errorf("Handle nil: %v", err)
	}
}

// TestExtensionsAndSchemes: extensions travel in binary and structured
// mode, and a message written under AMQPHeaders (either AMQP prefix) is read
// by a Router whose registry writes KafkaHeaders.
func TestExtensionsAndSchemes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := registry(t)
	rt, err := event.NewRouter(reg)
	must(t, err)
	var got event.Event[OrderPlaced]
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[OrderPlaced]) error { got = e; return nil }))
	for _, opts := range [][]event.PublishOption{
		{event.WithHeaders(event.AMQPHeaders)},
		{event.WithMode(event.Structured)},
		{},
	} {
		opts = append(opts, event.WithExtension("tenant", "acme"), event.WithDataSchema("https://schemas.example.com/order.json"))
		m, err := event.Encode(ctx, reg, "t", "k", OrderPlaced{Order: "x"}, opts...)
		must(t, err)
		m.Header["traceparent"] = "00-not-an-attribute" // other headers are not extensions
		got = event.Event[OrderPlaced]{}
		must(t, rt.Handler()(ctx, m))
		if got.Data.Order != "x" || got.Extensions["tenant"] != "acme" || len(got.Extensions) != 1 ||
			got.DataSchema != "https://schemas.example.com/order.json" {
			t.Errorf("%v: got %+v", m.Header, got)
		}
	}
	// The underscore form of the AMQP binding.
	m, err := event.Encode(ctx, reg, "t", "k", OrderPlaced{Order: "u"}, event.WithHeaders(event.AMQPHeaders))
	must(t, err)
	h := map[string]string{}
	for k, v := range m.Header {
		h[k] = v
		if len(k) > len("cloudEvents:") && k[:len("cloudEvents:")] == "cloudEvents:" {
			h["cloudEvents_"+k[len("cloudEvents:"):]] = v
			delete(h, k)
		}
	}
	m.Header = h
	must(t, rt.Handler()(ctx, m))
	if got.Data.Order != "u" {
		t.Errorf("cloudEvents_ prefix: got %+v", got)
	}
}
