package filetransfer_test

import (
	"compress/gzip"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/filetransfer"
)

// misspelt has TraceExportDayStart with the wrong signature, so it
// implements no tracer interface.
type misspelt struct{}

func (misspelt) TraceExportDayStart(ctx context.Context) context.Context { return ctx }

func TestExporterBadOptions(t *testing.T) {
	d := newDB(t, 1)
	store := newMemory(t)
	for _, c := range []struct {
		name  string
		opts  []filetransfer.ExporterOption
		names string // what the error must name
		also  error
	}{
		{"nil option", []filetransfer.ExporterOption{nil}, "option 0 is nil", nil},
		{"traversal prefix", []filetransfer.ExporterOption{filetransfer.WithPrefix("../up")}, "WithPrefix", filetransfer.ErrInvalidKey},
		{"absolute prefix", []filetransfer.ExporterOption{filetransfer.WithPrefix("/abs")}, "WithPrefix", filetransfer.ErrInvalidKey},
		{"zero max days", []filetransfer.ExporterOption{filetransfer.WithMaxDays(0)}, "WithMaxDays", nil},
		{"nil logger", []filetransfer.ExporterOption{filetransfer.WithLogger(nil)}, "WithLogger", nil},
		{"gzip level too high", []filetransfer.ExporterOption{filetransfer.WithGzip(10)}, "WithGzip", nil},
		{"gzip level too low", []filetransfer.ExporterOption{filetransfer.WithGzip(-3)}, "WithGzip", nil},
		{"zero parallelism", []filetransfer.ExporterOption{filetransfer.WithParallelism(0)}, "WithParallelism", nil},
		{"nil location", []filetransfer.ExporterOption{filetransfer.WithLocation(nil)}, "WithLocation", nil},
		{"zero progress", []filetransfer.ExporterOption{filetransfer.WithProgressEvery(0)}, "WithProgressEvery", nil},
		{"nil tracer", []filetransfer.ExporterOption{filetransfer.WithTracer(nil)}, "WithTracer", nil},
		{"not a tracer", []filetransfer.ExporterOption{filetransfer.WithTracer(misspelt{})}, "WithTracer: tracer filetransfer_test.misspelt implements none of", nil},
		{"bad after good", []filetransfer.ExporterOption{filetransfer.WithParallelism(4), filetransfer.WithParallelism(-1)}, "WithParallelism(-1)", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := filetransfer.NewExporter(d.pool, store, c.opts...)
			if !errors.Is(err, filetransfer.ErrInvalidOption) || !strings.Contains(err.Error(), c.names) {
				t.Fatalf("NewExporter = %v, want ErrInvalidOption naming %s", err, c.names)
			}
			if c.also != nil && !errors.Is(err, c.also) {
				t.Fatalf("NewExporter = %v, want it to wrap %v too", err, c.also)
			}
		})
	}
	if _, err := filetransfer.NewExporter(nil, store); !errors.Is(err, filetransfer.ErrInvalidOption) {
		t.Errorf("nil db: %v", err)
	}
	if _, err := filetransfer.NewExporter(d.pool, nil); !errors.Is(err, filetransfer.ErrInvalidOption) {
		t.Errorf("nil store: %v", err)
	}
	// Every gzip level compress/gzip knows, and a partial tracer, are fine.
	for level := gzip.HuffmanOnly; level <= gzip.BestCompression; level++ {
		if _, err := filetransfer.NewExporter(d.pool, store, filetransfer.WithGzip(level)); err != nil {
			t.Errorf("WithGzip(%d): %v", level, err)
		}
	}
	if _, err := filetransfer.NewExporter(d.pool, store, filetransfer.WithTracer(progressFunc(func(filetransfer.TraceExportProgressData) {})),
		filetransfer.WithPrefix("a/b"), filetransfer.WithMaxDays(1), filetransfer.WithLocation(time.Local), filetransfer.WithProgressEvery(1)); err != nil {
		t.Errorf("good options: %v", err)
	}
}

func TestLinksBadOptions(t *testing.T) {
	store := newMemory(t)
	for _, c := range []struct {
		name  string
		opts  []filetransfer.LinksOption
		names string
		also  error
	}{
		{"nil option", []filetransfer.LinksOption{nil}, "option 0 is nil", nil},
		{"traversal prefix", []filetransfer.LinksOption{filetransfer.WithPrefix("../x")}, "WithPrefix", filetransfer.ErrInvalidKey},
		{"zero max days", []filetransfer.LinksOption{filetransfer.WithMaxDays(0)}, "WithMaxDays", nil},
		{"nil logger", []filetransfer.LinksOption{filetransfer.WithLogger(nil)}, "WithLogger", nil},
		{"TTL over 7 days", []filetransfer.LinksOption{filetransfer.WithLinkTTL(8 * 24 * time.Hour)}, "WithLinkTTL", filetransfer.ErrInvalidTTL},
		{"zero TTL", []filetransfer.LinksOption{filetransfer.WithLinkTTL(0)}, "WithLinkTTL", filetransfer.ErrInvalidTTL},
		{"traversal dataset", []filetransfer.LinksOption{filetransfer.WithDatasets("ok", "../x")}, "WithDatasets", filetransfer.ErrInvalidName},
		{"no datasets", []filetransfer.LinksOption{filetransfer.WithDatasets()}, "WithDatasets()", nil},
		{"zero read concurrency", []filetransfer.LinksOption{filetransfer.WithReadConcurrency(0)}, "WithReadConcurrency", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := filetransfer.NewLinksHandler(store, c.opts...)
			if !errors.Is(err, filetransfer.ErrInvalidOption) || !strings.Contains(err.Error(), c.names) {
				t.Fatalf("NewLinksHandler = %v, want ErrInvalidOption naming %s", err, c.names)
			}
			if c.also != nil && !errors.Is(err, c.also) {
				t.Fatalf("NewLinksHandler = %v, want it to wrap %v too", err, c.also)
			}
		})
	}
	if _, err := filetransfer.NewLinksHandler(nil); !errors.Is(err, filetransfer.ErrInvalidOption) {
		t.Errorf("nil store: %v", err)
	}
	if _, err := filetransfer.NewLinksHandler(store, filetransfer.WithLinkTTL(filetransfer.MaxLinkTTL), filetransfer.WithDatasets("a"), filetransfer.WithDatasets("b"), filetransfer.WithReadConcurrency(1)); err != nil {
		t.Errorf("good options: %v", err)
	}
}
