package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/go-integration/patterns/telemetry"
)

// tour runs steps and remembers how each went.
type tour struct {
	mu      sync.Mutex // steps print from handler goroutines
	ctx     context.Context
	w       io.Writer
	results []result

	obs     *observability             // spans and metrics of the run (telemetry.go)
	tel     *telemetry.Telemetry       // obs.tel: every component's tracer
	metrics metricdata.ResourceMetrics // the metrics, read after the last step
}

type result struct {
	name    string
	err     error
	skipped string
	took    time.Duration
}

// stepTimeout bounds each step; the whole tour takes a few seconds.
const stepTimeout = 30 * time.Second

// errSkip marks a step that could not run here (a service is missing); its text says why.
type errSkip struct{ why string }

func (e errSkip) Error() string { return "skipped: " + e.why }

func (t *tour) printf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, format, args...)
}

func (t *tour) step(name string, f func(ctx context.Context, t *tour) error) {
	t.printf("\n== %s\n", name)
	ctx, cancel := context.WithTimeout(t.ctx, stepTimeout)
	defer cancel()
	start := time.Now()
	err := f(ctx, t)
	r := result{name: name, took: time.Since(start)}
	var skip errSkip
	switch {
	case errors.As(err, &skip):
		r.skipped = skip.why
		t.printf("   skipped: %s\n", skip.why)
	case err != nil:
		r.err = err
		t.printf("   FAILED: %v\n", err)
	}
	t.results = append(t.results, r)
}

func (t *tour) summary() error {
	t.printf("\n== Summary\n")
	var failed, width int
	for _, r := range t.results {
		width = max(width, len(r.name))
	}
	for _, r := range t.results {
		status := "ok"
		switch {
		case r.err != nil:
			status = "FAILED: " + r.err.Error()
			failed++
		case r.skipped != "":
			status = "skipped (" + r.skipped + ")"
		}
		t.printf("   %-*s %7s  %s\n", width, r.name, r.took.Round(time.Millisecond), status)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d steps failed", failed, len(t.results))
	}
	return nil
}
