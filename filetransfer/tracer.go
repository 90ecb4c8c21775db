package filetransfer

import (
	"context"
	"time"

	"github.com/go-integration/patterns/internal/hooks"
)

// The Exporter's hooks are tracers in the style of pgx's: install a value
// implementing one or more of ExportTracer, ExportDayTracer and
// ExportProgressTracer with WithTracer. Tracers are called synchronously, on
// the goroutine doing the work, and must not block; the day tracers and the
// progress tracer may be called from several goroutines at once (one per day
// in flight, see WithParallelism), but the calls for one day are
// sequential. Data structs may gain fields.

// ExportTracer traces whole Export, ExportChanged and Catchup calls.
type ExportTracer interface {
	// TraceExportStart is called when the call starts, before anything is
	// checked. The context it returns is the one the call runs in (every
	// day's work included) and the one TraceExportEnd receives.
	TraceExportStart(ctx context.Context, data TraceExportStartData) context.Context
	// TraceExportEnd is called when the call returns.
	TraceExportEnd(ctx context.Context, data TraceExportEndData)
}

// TraceExportStartData describes an export about to run.
type TraceExportStartData struct {
	Dataset string
	// From and To are the range asked for, both included (for Catchup, the
	// range it computed).
	From, To Day
	// Incremental is true for ExportChanged and Catchup, which skip days
	// that are up to date.
	Incremental bool
	// Prefix is the Exporter's key prefix (WithPrefix).
	Prefix string
}

// TraceExportEndData is the outcome of an export: what the returned
// Manifest holds and the error returned.
type TraceExportEndData struct {
	// Files is how many days were written, Unchanged how many were found up
	// to date.
	Files, Unchanged int
	// Rows and Bytes add up the written days' rows and stored bytes.
	Rows, Bytes int64
	// ManifestKey is where the manifest was stored ("" when none was).
	ManifestKey string
	// Err is what the call returned (errors.Join of the failed days'
	// errors, a context error, or the input or store check that refused
	// the call).
	Err error
	// Duration is the time from TraceExportStart to this call.
	Duration time.Duration
}

// ExportDayTracer traces each day of an export: the file it writes, or the
// finding that the day is up to date.
type ExportDayTracer interface {
	// TraceExportDayStart is called when a worker takes the day, before it
	// waits for the day's advisory lock. The context it returns is the one
	// the day's database and store work runs in, and the one
	// TraceExportProgress and TraceExportDayEnd receive.
	TraceExportDayStart(ctx context.Context, data TraceExportDayStartData) context.Context
	// TraceExportDayEnd is called when the day is done: its file and marker
	// written, found unchanged, or failed.
	TraceExportDayEnd(ctx context.Context, data TraceExportDayEndData)
}

// TraceExportDayStartData names a day about to be exported.
type TraceExportDayStartData struct {
	Dataset string
	Day     Day
	// Key is the key of the day's data file (see Layout.DataKey).
	Key string
	// Incremental is true when the day is skipped if it is up to date.
	Incremental bool
}

// TraceExportDayEndData is the outcome of one day. The counts describe the
// file this call wrote: they are zero when the day was unchanged or failed.
type TraceExportDayEndData struct {
	// Unchanged is true when an incremental export found the day up to date
	// and wrote nothing.
	Unchanged bool
	// Rows is the number of data rows, Bytes the stored size (compressed
	// with WithGzip), CSVBytes the size of the CSV, SHA256 the hex SHA-256
	// of the stored bytes: what the day's DayFile records.
	Rows, Bytes, CSVBytes int64
	SHA256                string
	// Err is why the day failed (nil when it did not). A failed day
	// publishes nothing new.
	Err error
	// Duration is the time from TraceExportDayStart to this call, the wait
	// for the day's advisory lock included.
	Duration time.Duration
}

// ExportProgressTracer receives progress reports while a day's file is
// being written.
type ExportProgressTracer interface {
	// TraceExportProgress is called every WithProgressEvery bytes of CSV
	// (8 MiB by default) while a day's COPY runs. It is not called at the
	// end: TraceExportDayEnd carries the final numbers.
	TraceExportProgress(ctx context.Context, data TraceExportProgressData)
}

// TraceExportProgressData reports how far one day's file has got.
type TraceExportProgressData struct {
	Dataset string
	Day     Day
	Key     string
	// Rows is the number of data rows so far (exact: PostgreSQL sends one
	// message per row).
	Rows int64
	// CSVBytes is the CSV produced so far, Bytes what was handed to the
	// store so far (the compressed size with WithGzip).
	CSVBytes, Bytes int64
}

// tracers holds the installed tracers, sorted by interface.
type tracers struct {
	export   []ExportTracer
	day      []ExportDayTracer
	progress []ExportProgressTracer
}

func newTracers(ts []any) tracers {
	return tracers{
		export:   hooks.Pick[ExportTracer](ts),
		day:      hooks.Pick[ExportDayTracer](ts),
		progress: hooks.Pick[ExportProgressTracer](ts),
	}
}

func (t *tracers) exportStart(ctx context.Context, d TraceExportStartData) context.Context {
	for _, x := range t.export {
		ctx = x.TraceExportStart(ctx, d)
	}
	return ctx
}

func (t *tracers) exportEnd(ctx context.Context, d TraceExportEndData) {
	for _, x := range t.export {
		x.TraceExportEnd(ctx, d)
	}
}

func (t *tracers) dayStart(ctx context.Context, d TraceExportDayStartData) context.Context {
	for _, x := range t.day {
		ctx = x.TraceExportDayStart(ctx, d)
	}
	return ctx
}

func (t *tracers) dayEnd(ctx context.Context, d TraceExportDayEndData) {
	for _, x := range t.day {
		x.TraceExportDayEnd(ctx, d)
	}
}

func (t *tracers) progressed(ctx context.Context, d TraceExportProgressData) {
	for _, x := range t.progress {
		x.TraceExportProgress(ctx, d)
	}
}
