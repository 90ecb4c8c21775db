package event_test

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"

	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/eventtest"
)

func TestJSONCodecConformance(t *testing.T) {
	t.Parallel()
	eventtest.Run(t, eventtest.Harness{
		Codec: func(*testing.T) event.Codec { return event.JSON },
		Cases: []eventtest.Case{
			{Name: "struct", Type: event.TypeInfo{Name: typePlaced}, Value: OrderPlaced{Order: "o", Seq: 1, Items: []string{"a", "b"}, Total: 2.5}},
			{Name: "time", Type: event.TypeInfo{Name: typeShipped, Version: 2}, Value: OrderShipped{Order: "o", At: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}},
			{Name: "pointer", Type: event.TypeInfo{Name: typeRefund}, Value: &Refund{Order: "o", Amount: 7}},
		},
	})
}

// recording is a JSON codec that remembers what it was given.
type recording struct {
	mu      sync.Mutex
	infos   []event.TypeInfo
	targets []string
}

func (*recording) ContentType() string { return "application/json" }

func (r *recording) Marshal(ctx context.Context, t event.TypeInfo, v any) ([]byte, error) {
	r.mu.Lock()
	r.infos = append(r.infos, t)
	r.mu.Unlock()
	return event.JSON.Marshal(ctx, t, v)
}

func (r *recording) Unmarshal(ctx context.Context, t event.TypeInfo, data []byte, v any) error {
	r.mu.Lock()
	r.infos = append(r.infos, t)
	r.targets = append(r.targets, fmt.Sprintf("%T", v))
	r.mu.Unlock()
	return event.JSON.Unmarshal(ctx, t, data, v)
}

// TestCodecContract: a codec gets the type's name, version, schema, Go type
// and topic on both sides, and decodes into *T, or into a new T when T is a
// pointer type.
func TestCodecContract(t *testing.T) {
	t.Parallel()
	p := brokers[0].Make(t)
	ctx := context.Background()
	c := &recording{}
	reg, err := event.NewRegistry(event.WithSource("/tests/codec"), event.WithCodec(c))
	must(t, err)
	must(t, event.Register[OrderPlaced](reg, typePlaced, event.WithVersion(3), event.WithSchema(`{"type":"record"}`)))
	must(t, event.Register[*Refund](reg, typeRefund))
	rt, err := event.NewRouter(reg)
	must(t, err)
	got := make(chan any, 2)
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[OrderPlaced]) error { got <- e.Data; return nil }))
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[*Refund]) error { got <- e.Data; return nil }))
	run(t, p, broker.Subscription{Topic: "codec.topic", Group: "g", DeadLetterTopic: "codec.dlq"}, rt.Handler())
	must(t, event.Publish(ctx, reg, p.Pub, "codec.topic", "k", OrderPlaced{Order: "a"}))
	must(t, event.Publish(ctx, reg, p.Pub, "codec.topic", "k", &Refund{Order: "b", Amount: 3}))
	for range 2 {
		select {
		case v := <-got:
			if r, ok := v.(*Refund); ok && (r == nil || r.Amount != 3) {
				t.Errorf("refund %+v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not handled")
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	wantPlaced := event.TypeInfo{Name: typePlaced, Version: 3, Schema: `{"type":"record"}`, GoType: reflect.TypeFor[OrderPlaced](), Topic: "codec.topic"}
	wantRefund := event.TypeInfo{Name: typeRefund, Version: 1, GoType: reflect.TypeFor[*Refund](), Topic: "codec.topic"}
	// Each type is marshalled once and unmarshalled once, in whatever order
	// publishing and handling interleave.
	n := map[event.TypeInfo]int{}
	for _, ti := range c.infos {
		n[ti]++
	}
	if len(c.infos) != 4 || n[wantPlaced] != 2 || n[wantRefund] != 2 {
		t.Errorf("TypeInfos %+v, want twice each of %+v and %+v", c.infos, wantPlaced, wantRefund)
	}
	if len(c.targets) != 2 || c.targets[0] != "*event_test.OrderPlaced" || c.targets[1] != "*event_test.Refund" {
		t.Errorf("Unmarshal targets %v", c.targets)
	}
}
