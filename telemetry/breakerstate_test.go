package telemetry_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc"
)

// breakerGauge is patterns.rpc.breaker.state for exactly attrs, and
// whether it has that point.
func breakerGauge(t *testing.T, rm metricdata.ResourceMetrics, attrs ...attribute.KeyValue) (int64, bool) {
	t.Helper()
	m, ok := findMetric(rm, "patterns.rpc.breaker.state")
	if !ok {
		return 0, false
	}
	g, ok := m.Data.(metricdata.Gauge[int64])
	if !ok {
		t.Fatalf("patterns.rpc.breaker.state is a %T, not an int64 gauge", m.Data)
	}
	want := attribute.NewSet(attrs...)
	for _, dp := range g.DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Value, true
		}
	}
	return 0, false
}

// patterns.rpc.breaker.state follows a host's breaker through closed (no
// point until it first changes), open (2), half-open (1) and closed again
// (0); another host's breaker is a point of its own.
func TestRPCBreakerStateGauge(t *testing.T) {
	rig := newRWRig(t)
	var failing atomic.Bool
	failing.Store(true)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	srv := httptest.NewServer(handler)
	defer srv.Close()
	other := httptest.NewServer(handler)
	defer other.Close()
	tr, err := rpc.NewTransport(rpc.WithTracer(rig.tel.RPC()), rpc.WithMaxAttempts(1),
		rpc.WithBreaker(rpc.BreakerConfig{Failures: 2, OpenFor: 50 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr}
	get := func(url string) error {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	attrs := []attribute.KeyValue{attribute.String("server.address", "127.0.0.1"), attribute.Int64("server.port", rwPort(srv))}
	state := func() (int64, bool) { return breakerGauge(t, rig.collect(t), attrs...) }

	if err := get(srv.URL); err != nil {
		t.Fatal(err)
	}
	if v, ok := state(); ok {
		t.Fatalf("a closed breaker that never changed reported %d", v)
	}
	if err := get(srv.URL); err != nil { // the second failure opens it
		t.Fatal(err)
	}
	if v, ok := state(); !ok || v != 2 {
		t.Fatalf("open breaker: gauge %d (present %v), want 2", v, ok)
	}
	// After OpenFor, reading the state moves it to half-open, traced.
	testenv.Eventually(t, 10*time.Second, "half-open breaker", func() bool { return tr.BreakerState(host) == rpc.BreakerHalfOpen })
	if v, ok := state(); !ok || v != 1 {
		t.Fatalf("half-open breaker: gauge %d (present %v), want 1", v, ok)
	}
	failing.Store(false)
	if err := get(srv.URL); err != nil {
		t.Fatal(err)
	}
	if s := tr.BreakerState(host); s != rpc.BreakerClosed {
		t.Fatalf("breaker %v after a success", s)
	}
	if v, ok := state(); !ok || v != 0 {
		t.Fatalf("closed again: gauge %d (present %v), want 0", v, ok)
	}

	// Another host opens: its own point; the first stays closed.
	failing.Store(true)
	for range 2 {
		if err := get(other.URL); err != nil {
			t.Fatal(err)
		}
	}
	if err := get(other.URL); !errors.Is(err, rpc.ErrCircuitOpen) {
		t.Fatalf("third call to the other host: %v, want ErrCircuitOpen", err)
	}
	rm := rig.collect(t)
	if v, ok := breakerGauge(t, rm, attribute.String("server.address", "127.0.0.1"), attribute.Int64("server.port", rwPort(other))); !ok || v != 2 {
		t.Errorf("other host: gauge %d (present %v), want 2", v, ok)
	}
	if v, ok := breakerGauge(t, rm, attrs...); !ok || v != 0 {
		t.Errorf("first host: gauge %d (present %v), want 0", v, ok)
	}
}
