// Package telemetry implements the tracer interfaces of every package of
// this module with OpenTelemetry: spans that follow the semantic conventions
// for messaging, HTTP and database clients, W3C trace context carried in
// message and request headers, and metrics. It uses the OpenTelemetry API
// only; the SDK (or any other implementation) is the application's choice,
// installed globally or given with WithTracerProvider and WithMeterProvider.
//
// One Telemetry value serves a whole process; each method returns the
// tracer for one package's WithTracer option:
//
//	tel, err := telemetry.New() // the global providers and propagator
//	if err != nil { ... }
//	pub, err := rabbitmq.NewPublisher(ctx, url, rabbitmq.WithTracer(tel.Broker()))
//	table, err := outbox.NewTable("outbox", outbox.WithTracer(tel.Outbox())) // Add stores the caller's trace context
//	relay, err := outbox.NewRelay(pool, pub, outbox.WithTracer(tel.Outbox()))
//	client, err := rpc.NewClient(rpc.WithTracer(tel.RPC()))
//
// Gauges read state at collection time: ObserveBacklog (outbox pending rows
// and the oldest one's age) and ObserveKafka (lag and stuck partitions).
//
// With no provider configured (the OpenTelemetry no-op defaults) the cost
// is a few function calls per operation.
package telemetry

import (
	"errors"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every span and metric.
const ScopeName = "github.com/go-integration/patterns"

// ErrInvalidOption is wrapped by New's errors for a bad option.
var ErrInvalidOption = errors.New("telemetry: invalid option")

// Telemetry holds the providers every tracer of this package uses. Its
// methods are safe for concurrent use. The zero value is not usable; call New.
type Telemetry struct {
	tp     trace.TracerProvider
	mp     metric.MeterProvider
	prop   propagation.TextMapPropagator
	logger *slog.Logger
	tracer trace.Tracer
	meter  metric.Meter
	instr  *instruments

	dbQueryText bool // WithDBQueryText
}

// Option configures New.
type Option interface{ apply(*Telemetry) error }

type option func(*Telemetry) error

func (o option) apply(t *Telemetry) error { return o(t) }

// WithTracerProvider sets the TracerProvider. Default: otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option {
	return option(func(t *Telemetry) error {
		if tp == nil {
			return fmt.Errorf("%w: WithTracerProvider(nil)", ErrInvalidOption)
		}
		t.tp = tp
		return nil
	})
}

// WithMeterProvider sets the MeterProvider. Default: otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option {
	return option(func(t *Telemetry) error {
		if mp == nil {
			return fmt.Errorf("%w: WithMeterProvider(nil)", ErrInvalidOption)
		}
		t.mp = mp
		return nil
	})
}

// WithPropagator sets how trace context travels in message and request
// headers. Default: otel.GetTextMapPropagator(), or W3C trace context and
// baggage when that is the no-op default.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return option(func(t *Telemetry) error {
		if p == nil {
			return fmt.Errorf("%w: WithPropagator(nil)", ErrInvalidOption)
		}
		t.prop = p
		return nil
	})
}

// WithLogger sets the logger for what telemetry reports itself (a backlog
// gauge whose query failed). Default: slog.Default(). A stuck Kafka
// partition is logged by the Kafka adapter, through its own WithLogger.
func WithLogger(l *slog.Logger) Option {
	return option(func(t *Telemetry) error {
		if l == nil {
			return fmt.Errorf("%w: WithLogger(nil)", ErrInvalidOption)
		}
		t.logger = l
		return nil
	})
}

// New returns a Telemetry on the given or global providers.
func New(opts ...Option) (*Telemetry, error) {
	t := &Telemetry{logger: slog.Default()}
	var errs []error
	for _, o := range opts {
		if o == nil {
			errs = append(errs, fmt.Errorf("%w: nil option", ErrInvalidOption))
			continue
		}
		if err := o.apply(t); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if t.tp == nil {
		t.tp = otel.GetTracerProvider()
	}
	if t.mp == nil {
		t.mp = otel.GetMeterProvider()
	}
	if t.prop == nil {
		t.prop = otel.GetTextMapPropagator()
		if len(t.prop.Fields()) == 0 { // the global no-op default
			t.prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
		}
	}
	t.tracer = t.tp.Tracer(ScopeName)
	t.meter = t.mp.Meter(ScopeName)
	in, err := newInstruments(t.meter)
	if err != nil {
		return nil, fmt.Errorf("telemetry: instruments: %w", err)
	}
	t.instr = in
	return t, nil
}
