package event_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/internal/testenv"
)

// Two versions of one event type, as two services see it.
type (
	// PriceChangedV1 carries a price in euros as a float.
	PriceChangedV1 struct {
		SKU   string  `json:"sku"`
		Price float64 `json:"price"`
	}
	// PriceChangedV2 carries cents and a currency.
	PriceChangedV2 struct {
		SKU      string `json:"sku"`
		Cents    int64  `json:"cents"`
		Currency string `json:"currency"`
	}
)

const typePrice = "com.example.price.changed"

func v1Registry(t *testing.T) *event.Registry {
	r, err := event.NewRegistry(event.WithSource("/tests/v1"))
	must(t, err)
	must(t, event.Register[PriceChangedV1](r, typePrice))
	return r
}

func v2Registry(t *testing.T) *event.Registry {
	r, err := event.NewRegistry(event.WithSource("/tests/v2"))
	must(t, err)
	must(t, event.Register[PriceChangedV2](r, typePrice, event.WithVersion(2),
		event.WithUpcaster(1, event.UpcastJSON(func(v PriceChangedV1) (PriceChangedV2, error) {
			return PriceChangedV2{SKU: v.SKU, Cents: int64(v.Price*100 + 0.5), Currency: "EUR"}, nil
		}))))
	return r
}

// TestVersions: a v1 producer and a v2 consumer interoperate through the
// upcaster (binary and structured); a v2 producer's event reaching a v1
// consumer is dead-lettered with ErrVersion, because a version bump means a
// change the old type cannot read.
func TestVersions(t *testing.T) {
	t.Parallel()
	p := brokers[0].Make(t)
	ctx := context.Background()
	v1, v2 := v1Registry(t), v2Registry(t)

	rt2, err := event.NewRouter(v2)
	must(t, err)
	got2 := make(chan event.Event[PriceChangedV2], 2)
	must(t, event.Handle(rt2, func(_ context.Context, e event.Event[PriceChangedV2]) error { got2 <- e; return nil }))
	rt1, err := event.NewRouter(v1)
	must(t, err)
	got1 := make(chan event.Event[PriceChangedV1], 1)
	must(t, event.Handle(rt1, func(_ context.Context, e event.Event[PriceChangedV1]) error { got1 <- e; return nil }))
	dead := newCollector()
	run(t, p, broker.Subscription{Topic: "prices.dlq", Group: "reader"}, dead.Handle)
	run(t, p, broker.Subscription{Topic: "prices", Group: "v2", DeadLetterTopic: "prices.dlq"}, rt2.Handler())
	run(t, p, broker.Subscription{Topic: "prices", Group: "v1", DeadLetterTopic: "prices.dlq"}, rt1.Handler())

	// v1 producer: both consumers handle it, v2 after upcasting.
	must(t, event.Publish(ctx, v1, p.Pub, "prices", "sku.1", PriceChangedV1{SKU: "tent", Price: 129.99}, event.WithID("from-v1")))
	must(t, event.Publish(ctx, v1, p.Pub, "prices", "sku.1", PriceChangedV1{SKU: "stove", Price: 45.5},
		event.WithID("from-v1-structured"), event.WithMode(event.Structured)))
	want := map[string]PriceChangedV2{
		"from-v1":            {SKU: "tent", Cents: 12999, Currency: "EUR"},
		"from-v1-structured": {SKU: "stove", Cents: 4550, Currency: "EUR"},
	}
	for range 2 {
		select {
		case e := <-got2:
			if e.Data != want[e.ID] || e.Version != 1 || e.Source != "/tests/v1" {
				t.Errorf("v2 consumer got %+v (version %d), want %+v", e.Data, e.Version, want[e.ID])
			}
		case <-time.After(10 * time.Second):
			t.Fatal("v2 consumer did not handle the v1 events")
		}
	}
	for range 2 {
		select {
		case e := <-got1:
			if e.Version != 1 {
				t.Errorf("v1 consumer got version %d", e.Version)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("v1 consumer did not handle the v1 events")
		}
		if len(got1) == 0 {
			break
		}
	}

	// v2 producer: the v2 consumer handles it as is, the v1 consumer refuses it.
	must(t, event.Publish(ctx, v2, p.Pub, "prices", "sku.1", PriceChangedV2{SKU: "mat", Cents: 1999, Currency: "EUR"}, event.WithID("from-v2")))
	select {
	case e := <-got2:
		if e.ID != "from-v2" || e.Version != 2 || e.Data.Cents != 1999 {
			t.Errorf("v2 consumer got %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("v2 consumer did not handle the v2 event")
	}
	testenv.Eventually(t, 10*time.Second, "the v1 consumer dead-letters the v2 event", func() bool { _, ok := dead.Get("from-v2"); return ok })
	m, _ := dead.Get("from-v2")
	if xerr := m.Header[broker.HeaderError]; !strings.Contains(xerr, event.ErrVersion.Error()) || m.Header[broker.HeaderOriginGroup] != "v1" {
		t.Errorf("dead letter: x-error %q, group %q", xerr, m.Header[broker.HeaderOriginGroup])
	}
}
