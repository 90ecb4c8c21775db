package event_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/internal/eventbrokers"
	"github.com/go-integration/patterns/internal/testenv"
)

// Event types of the tests: three on one topic, one a pointer type.
type (
	OrderPlaced struct {
		Order string   `json:"order"`
		Seq   int      `json:"seq"`
		Items []string `json:"items"`
		Total float64  `json:"total"`
	}
	OrderShipped struct {
		Order   string    `json:"order"`
		Seq     int       `json:"seq"`
		Carrier string    `json:"carrier"`
		At      time.Time `json:"at"`
	}
	Refund struct {
		Order  string `json:"order"`
		Seq    int    `json:"seq"`
		Amount int64  `json:"amount"`
	}
)

const (
	typePlaced  = "com.example.order.placed"
	typeShipped = "com.example.order.shipped"
	typeRefund  = "com.example.order.refund"
)

// registry returns a registry with the three order types.
func registry(t testing.TB, opts ...event.Option) *event.Registry {
	t.Helper()
	r, err := event.NewRegistry(append([]event.Option{event.WithSource("/tests/orders")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	must(t, event.Register[OrderPlaced](r, typePlaced))
	must(t, event.Register[OrderShipped](r, typeShipped, event.WithVersion(2), event.WithUpcaster(1, func(_ context.Context, b []byte) ([]byte, error) { return b, nil })))
	must(t, event.Register[*Refund](r, typeRefund))
	return r
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The broker set-up and the CPU clock of the benchmarks are shared with
// event/schemaregistry's tests.
type pair = eventbrokers.Pair

var (
	brokers      = eventbrokers.Cases
	run          = eventbrokers.Run
	newCollector = eventbrokers.NewCollector
	processCPU   = testenv.ProcessCPU
)
