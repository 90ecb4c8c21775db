package telemetry

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/go-integration/patterns/rpc"
)

// maxBreakerGauges bounds the hosts the breaker-state gauge reports: past
// it, hosts whose breaker is closed are forgotten (the rpc package itself
// forgets closed breakers past rpc.BreakerConfig.MaxHosts).
const maxBreakerGauges = 1024

// breakerStates is the last state each host's breaker changed to, as
// TraceBreakerChange saw it, for the patterns.rpc.breaker.state gauge:
// 0 closed, 1 half-open, 2 open (rpc.BreakerState's values). A host whose
// breaker never changed state is not reported: it is closed.
type breakerStates struct {
	mu sync.Mutex
	m  map[breakerHost]rpc.BreakerState
}

// breakerHost is a gauge's attributes: server.address and, when the
// breaker's host has one, server.port.
type breakerHost struct {
	addr string
	port int
}

// set records that host's breaker is now in state s.
func (b *breakerStates) set(h breakerHost, s rpc.BreakerState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[breakerHost]rpc.BreakerState)
	}
	b.m[h] = s
	if len(b.m) > maxBreakerGauges {
		for k, v := range b.m {
			if v == rpc.BreakerClosed && k != h {
				delete(b.m, k)
			}
		}
	}
}

// observe reports every host's state into o.
func (b *breakerStates) observe(o metric.Int64Observer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for h, s := range b.m {
		attrs := make([]attribute.KeyValue, 0, 2)
		attrs = append(attrs, semconv.ServerAddress(h.addr))
		if h.port != 0 {
			attrs = append(attrs, semconv.ServerPort(h.port))
		}
		o.Observe(int64(s), metric.WithAttributes(attrs...))
	}
}

// initBreakerState creates patterns.rpc.breaker.state on m, fed by states.
func initBreakerState(m metric.Meter, states *breakerStates) (metric.Int64ObservableGauge, error) {
	return m.Int64ObservableGauge("patterns.rpc.breaker.state", metric.WithUnit("{state}"),
		metric.WithDescription("State of each host's circuit breaker since its last change: 0 closed, 1 half-open, 2 open."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			states.observe(o)
			return nil
		}))
}
