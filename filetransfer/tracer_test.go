package filetransfer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-integration/patterns/filetransfer"
)

type ctxKey string

// recorder implements every tracer interface and records what it is given.
// Its Start methods put a value in the context, and every later call checks
// that it receives that context (the export's in day calls, the day's in
// progress and end calls).
type recorder struct {
	name       string
	log        *[]string // shared by several recorders to check the call order
	onProgress func(filetransfer.TraceExportProgressData)

	mu           sync.Mutex
	exportStarts []filetransfer.TraceExportStartData
	exportEnds   []filetransfer.TraceExportEndData
	dayStarts    map[string]filetransfer.TraceExportDayStartData
	dayEnds      map[string]filetransfer.TraceExportDayEndData
	progress     map[string][]filetransfer.TraceExportProgressData
	ctxErrs      []string
}

func newRecorder() *recorder {
	return &recorder{
		name:      "rec",
		log:       new([]string),
		dayStarts: map[string]filetransfer.TraceExportDayStartData{},
		dayEnds:   map[string]filetransfer.TraceExportDayEndData{},
		progress:  map[string][]filetransfer.TraceExportProgressData{},
	}
}

func (r *recorder) note(format string, args ...any) {
	*r.log = append(*r.log, r.name+" "+fmt.Sprintf(format, args...))
}

func (r *recorder) want(ctx context.Context, key ctxKey, value, where string) {
	if got, _ := ctx.Value(key).(string); got != value {
		r.ctxErrs = append(r.ctxErrs, fmt.Sprintf("%s: context %s = %q, want %q", where, key, got, value))
	}
}

func (r *recorder) TraceExportStart(ctx context.Context, d filetransfer.TraceExportStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.note("export start")
	r.exportStarts = append(r.exportStarts, d)
	return context.WithValue(ctx, ctxKey(r.name+"/export"), d.Dataset)
}

func (r *recorder) TraceExportEnd(ctx context.Context, d filetransfer.TraceExportEndData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.note("export end")
	r.exportEnds = append(r.exportEnds, d)
	r.want(ctx, ctxKey(r.name+"/export"), r.exportStarts[len(r.exportStarts)-1].Dataset, "export end")
}

func (r *recorder) TraceExportDayStart(ctx context.Context, d filetransfer.TraceExportDayStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.note("day start %s", d.Day)
	r.dayStarts[d.Day.String()] = d
	if len(r.exportStarts) > 0 {
		r.want(ctx, ctxKey(r.name+"/export"), d.Dataset, "day start "+d.Day.String())
	}
	return context.WithValue(ctx, ctxKey(r.name+"/day"), d.Day.String())
}

func (r *recorder) TraceExportDayEnd(ctx context.Context, d filetransfer.TraceExportDayEndData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	day, _ := ctx.Value(ctxKey(r.name + "/day")).(string)
	r.note("day end %s", day)
	if day == "" {
		r.ctxErrs = append(r.ctxErrs, "day end without the day's context")
	}
	r.dayEnds[day] = d
}

func (r *recorder) TraceExportProgress(ctx context.Context, d filetransfer.TraceExportProgressData) {
	r.mu.Lock()
	r.progress[d.Day.String()] = append(r.progress[d.Day.String()], d)
	r.want(ctx, ctxKey(r.name+"/day"), d.Day.String(), "progress")
	f := r.onProgress
	r.mu.Unlock()
	if f != nil {
		f(d)
	}
}

func (r *recorder) checkContexts(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.ctxErrs {
		t.Error(e)
	}
}

func (r *recorder) dayEnd(d filetransfer.Day) (filetransfer.TraceExportDayEndData, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.dayEnds[d.String()]
	return e, ok
}

func (r *recorder) progressOf(d filetransfer.Day) []filetransfer.TraceExportProgressData {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.progress[d.String()])
}

// dayOnly implements ExportDayTracer alone.
type dayOnly struct{ r *recorder }

func (d dayOnly) TraceExportDayStart(ctx context.Context, data filetransfer.TraceExportDayStartData) context.Context {
	return d.r.TraceExportDayStart(ctx, data)
}

func (d dayOnly) TraceExportDayEnd(ctx context.Context, data filetransfer.TraceExportDayEndData) {
	d.r.TraceExportDayEnd(ctx, data)
}

// progressFunc is an ExportProgressTracer.
type progressFunc func(filetransfer.TraceExportProgressData)

func (f progressFunc) TraceExportProgress(_ context.Context, d filetransfer.TraceExportProgressData) {
	f(d)
}

// logBuffer collects slog text records.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// Every day and the whole export are traced with what a span needs, and each
// tracer call gets the context the matching Start returned.
func TestTracers(t *testing.T) {
	d := newDB(t, 4)
	table := d.createEvents(t)
	store := newMemory(t)
	rec := newRecorder()
	// A second tracer (day events only) shares the log: the two are called
	// in the order given, each End after the operation.
	second := newRecorder()
	second.name, second.log = "second", rec.log
	e := newExporter(t, d, store, filetransfer.WithPrefix("tr"), filetransfer.WithParallelism(1), filetransfer.WithTracer(rec), filetransfer.WithTracer(dayOnly{second}))
	ds := filetransfer.Dataset{Name: "events", Query: "select id, day, name from " + table + " order by id", DayColumn: "day"}
	from, to := day(t, "2024-01-01"), day(t, "2024-01-03")
	m, err := e.Export(tctx(t), ds, from, to)
	if err != nil {
		t.Fatal(err)
	}
	rec.checkContexts(t)
	second.checkContexts(t)

	wantLog := []string{"rec export start"}
	for _, dd := range []string{"2024-01-01", "2024-01-02", "2024-01-03"} {
		wantLog = append(wantLog, "rec day start "+dd, "second day start "+dd, "rec day end "+dd, "second day end "+dd)
	}
	wantLog = append(wantLog, "rec export end")
	if !slices.Equal(*rec.log, wantLog) {
		t.Errorf("calls:\n%s\nwant\n%s", strings.Join(*rec.log, "\n"), strings.Join(wantLog, "\n"))
	}

	if len(rec.exportStarts) != 1 || rec.exportStarts[0] != (filetransfer.TraceExportStartData{Dataset: "events", From: from, To: to, Prefix: "tr"}) {
		t.Errorf("export start: %+v", rec.exportStarts)
	}
	var rows, bytes int64
	for _, f := range m.Files {
		rows += f.Rows
		bytes += f.Bytes
		start := rec.dayStarts[f.Day.String()]
		if start != (filetransfer.TraceExportDayStartData{Dataset: "events", Day: f.Day, Key: f.Key}) {
			t.Errorf("day start %+v, want the file %s", start, f.Key)
		}
		end, _ := rec.dayEnd(f.Day)
		if end.Err != nil || end.Unchanged || end.Rows != f.Rows || end.Bytes != f.Bytes || end.CSVBytes != f.CSVBytes || end.SHA256 != f.SHA256 || end.Duration <= 0 {
			t.Errorf("day end %+v, want %+v", end, f)
		}
	}
	end := rec.exportEnds[0]
	if end.Err != nil || end.Files != 3 || end.Unchanged != 0 || end.Rows != rows || end.Bytes != bytes || end.ManifestKey != m.Key || m.Key == "" || end.Duration <= 0 {
		t.Errorf("export end %+v; manifest %s, %d rows, %d bytes", end, m.Key, rows, bytes)
	}

	// Incremental, nothing changed: every day traced as unchanged, no counts.
	rec = newRecorder()
	e = newExporter(t, d, store, filetransfer.WithPrefix("tr"), filetransfer.WithTracer(rec))
	if _, err := e.ExportChanged(tctx(t), ds, from, to); err != nil {
		t.Fatal(err)
	}
	rec.checkContexts(t)
	if s := rec.exportStarts[0]; !s.Incremental {
		t.Errorf("ExportChanged start: %+v, want Incremental", s)
	}
	for _, dd := range []string{"2024-01-01", "2024-01-02", "2024-01-03"} {
		if s := rec.dayStarts[dd]; !s.Incremental {
			t.Errorf("%s: day start %+v, want Incremental", dd, s)
		}
		if e := rec.dayEnds[dd]; !e.Unchanged || e.Err != nil || e.Rows != 0 || e.Bytes != 0 || e.SHA256 != "" {
			t.Errorf("%s: day end %+v, want unchanged without counts", dd, e)
		}
	}
	if end := rec.exportEnds[0]; end.Files != 0 || end.Unchanged != 3 || end.ManifestKey != "" || end.Err != nil {
		t.Errorf("ExportChanged end: %+v", end)
	}
}

// A failing day ends with its error and no counts, the days after it are
// never started (nor any day of an export whose context is already
// cancelled), and the export ends with the error; input refused before any
// day starts still ends the export's trace with the error.
func TestTracersOnFailure(t *testing.T) {
	d := newDB(t, 2)
	store := newMemory(t)
	rec := newRecorder()
	e := newExporter(t, d, store, filetransfer.WithParallelism(1), filetransfer.WithMaxDays(5), filetransfer.WithTracer(rec))
	ds := filetransfer.Dataset{Name: "partial", Template: "select g, 1 / (case when {day} = DATE '2024-01-02' then 0 else 1 end) as x from generate_series(1, 10) g"}
	m, err := e.Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-03"))
	if err == nil {
		t.Fatal("no error")
	}
	rec.checkContexts(t)
	if end := rec.dayEnds["2024-01-01"]; end.Err != nil || end.Rows != 10 {
		t.Errorf("good day: %+v", end)
	}
	bad := rec.dayEnds["2024-01-02"]
	if bad.Err == nil || !strings.Contains(bad.Err.Error(), "division by zero") || bad.Rows != 0 || bad.Bytes != 0 || bad.SHA256 != "" {
		t.Errorf("failed day: %+v, want the division by zero and no counts", bad)
	}
	if _, started := rec.dayStarts["2024-01-03"]; started {
		t.Error("the day after the failure was started")
	}
	if end := rec.exportEnds[0]; end.Err != err || end.Files != 1 || end.ManifestKey != "" || len(m.Files) != 1 {
		t.Errorf("export end %+v (returned %v)", end, err)
	}

	// With the context already cancelled, no day is started.
	rec = newRecorder()
	e = newExporter(t, d, store, filetransfer.WithParallelism(1), filetransfer.WithTracer(rec))
	cancelled, cancel := context.WithCancel(tctx(t))
	cancel()
	for range 20 {
		if _, err := e.Export(cancelled, ds, day(t, "2024-01-01"), day(t, "2024-01-05")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Export with a cancelled context: %v", err)
		}
	}
	if len(rec.dayStarts) != 0 || len(rec.exportEnds) != 20 {
		t.Errorf("cancelled exports started days %v (%d ends)", rec.dayStarts, len(rec.exportEnds))
	}

	rec = newRecorder()
	e = newExporter(t, d, store, filetransfer.WithMaxDays(5), filetransfer.WithTracer(rec))
	_, err = e.Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-31"))
	if !errors.Is(err, filetransfer.ErrInvalidRange) {
		t.Fatalf("31 days with WithMaxDays(5): %v", err)
	}
	if len(rec.exportStarts) != 1 || len(rec.exportEnds) != 1 || !errors.Is(rec.exportEnds[0].Err, filetransfer.ErrInvalidRange) || len(rec.dayStarts) != 0 {
		t.Errorf("refused range: starts %v, ends %v, days %v", rec.exportStarts, rec.exportEnds, rec.dayStarts)
	}
}

// abortFailsStore's writers fail every Write and every Abort, like an S3
// store that cannot abort its multipart upload.
type abortFailsStore struct{ filetransfer.Store }

type abortFailsWriter struct{ filetransfer.Writer }

func (s abortFailsStore) Create(ctx context.Context, key string) (filetransfer.Writer, error) {
	w, err := s.Store.Create(ctx, key)
	return abortFailsWriter{w}, err
}

func (abortFailsWriter) Write([]byte) (int, error) { return 0, errors.New("write refused") }
func (abortFailsWriter) Abort() error              { return errors.New("abort refused") }

// A failed Abort (parts that may be left behind) is logged, since the
// export's error is the write's.
func TestAbortFailureIsLogged(t *testing.T) {
	d := newDB(t, 1)
	var logged logBuffer
	e := newExporter(t, d, abortFailsStore{newMemory(t)}, filetransfer.WithLogger(logged.logger()))
	_, err := e.Export(tctx(t), filetransfer.Dataset{Name: "x", Template: "select {day} as d"}, day(t, "2024-01-01"), day(t, "2024-01-01"))
	if err == nil || !strings.Contains(err.Error(), "write refused") {
		t.Fatalf("err = %v, want the write's error", err)
	}
	got := logged.String()
	if !strings.Contains(got, "level=WARN") || !strings.Contains(got, "abort refused") || !strings.Contains(got, "x/dt=2024-01-01/x-2024-01-01.csv") {
		t.Fatalf("log %q, want a warning with the abort's error and the key", got)
	}
}
