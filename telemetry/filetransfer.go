package telemetry

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/filetransfer"
)

// Attributes of the filetransfer spans and metrics.
const (
	ftDatasetKey     = attribute.Key("patterns.export.dataset")
	ftFromKey        = attribute.Key("patterns.export.from") // first day, YYYY-MM-DD
	ftToKey          = attribute.Key("patterns.export.to")   // last day, included
	ftIncrementalKey = attribute.Key("patterns.export.incremental")
	ftPrefixKey      = attribute.Key("patterns.export.prefix")
	ftFilesKey       = attribute.Key("patterns.export.files")     // days written
	ftUnchangedKey   = attribute.Key("patterns.export.unchanged") // export: days up to date; day: bool
	ftRowsKey        = attribute.Key("patterns.export.rows")
	ftBytesKey       = attribute.Key("patterns.export.bytes") // stored (compressed with gzip)
	ftCSVBytesKey    = attribute.Key("patterns.export.csv_bytes")
	ftManifestKey    = attribute.Key("patterns.export.manifest_key")
	ftDayKey         = attribute.Key("patterns.export.day")
	ftKeyKey         = attribute.Key("patterns.export.key") // the day's data file
	ftSHA256Key      = attribute.Key("patterns.export.sha256")
	ftOutcomeKey     = attribute.Key("patterns.export.outcome") // "written", "unchanged" or "failed"
)

// fileTransferInstruments are the metrics of the filetransfer tracer.
type fileTransferInstruments struct {
	rows        metric.Int64Counter     // patterns.export.rows
	bytes       metric.Int64Counter     // patterns.export.bytes
	dayDuration metric.Float64Histogram // patterns.export.day.duration
}

func (in *fileTransferInstruments) init(m metric.Meter) error {
	var err, e error
	in.rows, e = m.Int64Counter("patterns.export.rows",
		metric.WithDescription("Data rows written to exported day files."),
		metric.WithUnit("{row}"))
	err = errors.Join(err, e)
	in.bytes, e = m.Int64Counter("patterns.export.bytes",
		metric.WithDescription("Bytes stored in exported day files (compressed with gzip)."),
		metric.WithUnit("By"))
	err = errors.Join(err, e)
	in.dayDuration, e = m.Float64Histogram("patterns.export.day.duration",
		metric.WithDescription("Time to export one day, waiting for its advisory lock included, by outcome."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
	return errors.Join(err, e)
}

// fileTransferTracer implements the filetransfer tracer interfaces.
type fileTransferTracer struct {
	t  *Telemetry
	in *fileTransferInstruments
}

var (
	_ filetransfer.ExportTracer         = (*fileTransferTracer)(nil)
	_ filetransfer.ExportDayTracer      = (*fileTransferTracer)(nil)
	_ filetransfer.ExportProgressTracer = (*fileTransferTracer)(nil)
)

// FileTransfer returns the tracer for filetransfer.WithTracer. It
// implements filetransfer.ExportTracer, ExportDayTracer and
// ExportProgressTracer.
//
// An Export, ExportChanged or Catchup call is a span of kind Internal
// named "export <dataset>" with patterns.export.dataset, .from, .to,
// .incremental and .prefix, and at its end .files, .unchanged, .rows,
// .bytes and .manifest_key. Each day is its child "export day <dataset>"
// with .day and .key, and at its end .unchanged, .rows, .bytes,
// .csv_bytes and .sha256 (what the day's DayFile records). A progress
// report while a day's file is written (every WithProgressEvery bytes of
// CSV) is an event "progress" on the day's span with .rows, .csv_bytes and
// .bytes so far. A failed day or call has status Error and its error recorded.
//
// Metrics: patterns.export.rows and patterns.export.bytes (counters of what
// the written days hold, by dataset) and patterns.export.day.duration (s,
// by dataset and outcome: "written", "unchanged" or "failed", with
// error.type).
func (t *Telemetry) FileTransfer() any {
	return &fileTransferTracer{t: t, in: &t.instr.fileTransfer}
}

// ftSpanOpts are the start options of the export and day spans, made once.
var ftSpanOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}

// ftExportSpanKey and ftDaySpanKey hold the spans in the contexts the
// Start methods return.
type (
	ftExportSpanKey struct{}
	ftDaySpanKey    struct{}
)

// TraceExportStart starts the export's span.
func (f *fileTransferTracer) TraceExportStart(ctx context.Context, d filetransfer.TraceExportStartData) context.Context {
	sctx, span := f.t.tracer.Start(ctx, "export "+d.Dataset, ftSpanOpts...)
	if !span.IsRecording() {
		span.End()
		return ctx
	}
	span.SetAttributes(
		ftDatasetKey.String(d.Dataset),
		ftFromKey.String(d.From.String()),
		ftToKey.String(d.To.String()),
		ftIncrementalKey.Bool(d.Incremental),
		ftPrefixKey.String(d.Prefix),
	)
	return context.WithValue(sctx, ftExportSpanKey{}, span)
}

// TraceExportEnd ends the export's span.
func (f *fileTransferTracer) TraceExportEnd(ctx context.Context, d filetransfer.TraceExportEndData) {
	span, ok := ctx.Value(ftExportSpanKey{}).(trace.Span)
	if !ok {
		return
	}
	span.SetAttributes(
		ftFilesKey.Int(d.Files),
		ftUnchangedKey.Int(d.Unchanged),
		ftRowsKey.Int64(d.Rows),
		ftBytesKey.Int64(d.Bytes),
	)
	if d.ManifestKey != "" {
		span.SetAttributes(ftManifestKey.String(d.ManifestKey))
	}
	endWithError(span, d.Err)
}

// TraceExportDayStart starts the day's span, a child of the export's.
func (f *fileTransferTracer) TraceExportDayStart(ctx context.Context, d filetransfer.TraceExportDayStartData) context.Context {
	sctx, span := f.t.tracer.Start(ctx, "export day "+d.Dataset, ftSpanOpts...)
	if !span.IsRecording() {
		span.End()
		// The day's dataset travels in the context for the metrics at its end.
		return context.WithValue(ctx, ftDaySpanKey{}, &ftDay{dataset: d.Dataset})
	}
	span.SetAttributes(
		ftDatasetKey.String(d.Dataset),
		ftDayKey.String(d.Day.String()),
		ftKeyKey.String(d.Key),
		ftIncrementalKey.Bool(d.Incremental),
	)
	return context.WithValue(sctx, ftDaySpanKey{}, &ftDay{dataset: d.Dataset, span: span})
}

// ftDay is a day in flight: its dataset and span (nil when not recording).
type ftDay struct {
	dataset string
	span    trace.Span
}

// TraceExportDayEnd counts what the day wrote and ends its span.
func (f *fileTransferTracer) TraceExportDayEnd(ctx context.Context, d filetransfer.TraceExportDayEndData) {
	day, ok := ctx.Value(ftDaySpanKey{}).(*ftDay)
	if !ok {
		return
	}
	in := f.in
	outcome := "written"
	switch {
	case d.Err != nil:
		outcome = "failed"
	case d.Unchanged:
		outcome = "unchanged"
	}
	if d.Err == nil && !d.Unchanged {
		if in.rows.Enabled(ctx) {
			in.rows.Add(ctx, d.Rows, metric.WithAttributes(ftDatasetKey.String(day.dataset)))
		}
		if in.bytes.Enabled(ctx) {
			in.bytes.Add(ctx, d.Bytes, metric.WithAttributes(ftDatasetKey.String(day.dataset)))
		}
	}
	if in.dayDuration.Enabled(ctx) {
		attrs := []attribute.KeyValue{ftDatasetKey.String(day.dataset), ftOutcomeKey.String(outcome)}
		if d.Err != nil {
			attrs = append(attrs, exportErrorType(d.Err))
		}
		in.dayDuration.Record(ctx, d.Duration.Seconds(), metric.WithAttributes(attrs...))
	}
	if day.span == nil {
		return
	}
	day.span.SetAttributes(ftUnchangedKey.Bool(d.Unchanged))
	if d.Err == nil && !d.Unchanged {
		day.span.SetAttributes(
			ftRowsKey.Int64(d.Rows),
			ftBytesKey.Int64(d.Bytes),
			ftCSVBytesKey.Int64(d.CSVBytes),
			ftSHA256Key.String(d.SHA256),
		)
	}
	endWithError(day.span, d.Err)
}

// TraceExportProgress adds a "progress" event to the day's span.
func (f *fileTransferTracer) TraceExportProgress(ctx context.Context, d filetransfer.TraceExportProgressData) {
	day, ok := ctx.Value(ftDaySpanKey{}).(*ftDay)
	if !ok || day.span == nil {
		return
	}
	day.span.AddEvent("progress", trace.WithAttributes(
		ftRowsKey.Int64(d.Rows),
		ftCSVBytesKey.Int64(d.CSVBytes),
		ftBytesKey.Int64(d.Bytes),
	))
}

// endWithError ends span, recording err (if any) as its status.
func endWithError(span trace.Span, err error) {
	if err != nil {
		span.SetAttributes(exportErrorType(err))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// exportErrorType is error.type for a failed export or day.
func exportErrorType(err error) attribute.KeyValue {
	et, _ := dbErrorType(err) // the shared vocabulary, then SQLSTATE for a server error
	return semconv.ErrorTypeKey.String(et)
}
