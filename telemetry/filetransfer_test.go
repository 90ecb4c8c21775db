package telemetry_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/memory"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/shareddb"
	"github.com/go-integration/patterns/telemetry"
)

// ftSetup gives t a schema of its own (with ddl run in it), a pool on it and
// a memory store.
func ftSetup(t *testing.T, ddl ...string) (*pgxpool.Pool, *memory.Store) {
	t.Helper()
	_, dsn := testenv.Schema(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for _, s := range ddl {
		if _, err := pool.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	store, err := memory.New()
	if err != nil {
		t.Fatal(err)
	}
	return pool, store
}

func ftDay(t *testing.T, s string) filetransfer.Day {
	t.Helper()
	d, err := filetransfer.ParseDay(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// ftStored returns the stored bytes of key.
func ftStored(t *testing.T, s *memory.Store, key string) []byte {
	t.Helper()
	r, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ftByDay maps the day spans by their day.
func ftByDay(t *testing.T, spans []sdktrace.ReadOnlySpan) map[string]sdktrace.ReadOnlySpan {
	t.Helper()
	out := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		d, ok := sfAttr(s, "patterns.export.day")
		if !ok {
			t.Fatalf("day span without patterns.export.day: %v", s.Attributes())
		}
		out[d.AsString()] = s
	}
	return out
}

// An export of 3 days is one span with 3 day children; the day spans and
// the metrics carry the rows, bytes and checksums of the stored files; an
// incremental export of the same days shows them unchanged.
func TestFileTransferExportSpansAndMetrics(t *testing.T) {
	pool, store := ftSetup(t,
		"create table events (id int primary key, day date not null, name text)",
		// 2, 40 and 1 rows.
		`insert into events select g, case when g <= 2 then date '2024-01-01' when g <= 42 then date '2024-01-02' else date '2024-01-03' end,
			'event number ' || g from generate_series(1, 43) g`,
	)
	e := sfNew(t)
	ex, err := filetransfer.NewExporter(pool, store, filetransfer.WithGzip(1), filetransfer.WithProgressEvery(200),
		filetransfer.WithTracer(e.tel.FileTransfer()))
	if err != nil {
		t.Fatal(err)
	}
	ds := filetransfer.Dataset{Name: "events", Query: "select id, day, name from events order by id", DayColumn: "day"}
	from, to := ftDay(t, "2024-01-01"), ftDay(t, "2024-01-03")

	ctx, job := e.parent(context.Background(), "job")
	m, err := ex.Export(ctx, ds, from, to)
	if err != nil {
		t.Fatal(err)
	}
	job.End()

	exports := e.ended("export events")
	if len(exports) != 1 {
		t.Fatalf("%d export spans, want 1", len(exports))
	}
	exp := exports[0]
	sfChildOf(t, "export", exp, job.SpanContext())
	if exp.SpanKind() != trace.SpanKindInternal || exp.Status().Code != codes.Unset {
		t.Errorf("export: kind %v, status %v", exp.SpanKind(), exp.Status())
	}
	var rows, bytes int64
	for _, f := range m.Files {
		rows += f.Rows
		bytes += f.Bytes
	}
	if len(m.Files) != 3 || rows != 43 {
		t.Fatalf("manifest: %d files, %d rows", len(m.Files), rows)
	}
	sfWantAttrs(t, "export", exp, map[string]any{
		"patterns.export.dataset": "events", "patterns.export.from": "2024-01-01", "patterns.export.to": "2024-01-03",
		"patterns.export.incremental": false, "patterns.export.files": int64(3), "patterns.export.unchanged": int64(0),
		"patterns.export.rows": rows, "patterns.export.bytes": bytes, "patterns.export.manifest_key": m.Key,
	})

	days := e.ended("export day events")
	if len(days) != 3 {
		t.Fatalf("%d day spans, want 3", len(days))
	}
	byDay := ftByDay(t, days)
	for _, f := range m.Files {
		s, ok := byDay[f.Day.String()]
		if !ok {
			t.Errorf("no span for %s", f.Day)
			continue
		}
		sfChildOf(t, "day "+f.Day.String(), s, exp.SpanContext())
		stored := ftStored(t, store, f.Key)
		sum := sha256.Sum256(stored)
		if int64(len(stored)) != f.Bytes || hex.EncodeToString(sum[:]) != f.SHA256 {
			t.Errorf("%s: stored %d bytes, sha256 %x; the manifest says %d, %s", f.Day, len(stored), sum, f.Bytes, f.SHA256)
		}
		sfWantAttrs(t, "day "+f.Day.String(), s, map[string]any{
			"patterns.export.dataset": "events", "patterns.export.key": f.Key, "patterns.export.unchanged": false,
			"patterns.export.rows": f.Rows, "patterns.export.bytes": int64(len(stored)), "patterns.export.csv_bytes": f.CSVBytes,
			"patterns.export.sha256": hex.EncodeToString(sum[:]),
		})
		if s.SpanKind() != trace.SpanKindInternal || s.Status().Code != codes.Unset {
			t.Errorf("day %s: kind %v, status %v", f.Day, s.SpanKind(), s.Status())
		}
	}
	// Progress: the 40-row day passes 200 bytes of CSV several times; the
	// 1-row day never does.
	big := byDay["2024-01-02"].Events()
	if len(big) < 2 {
		t.Errorf("2024-01-02: %d progress events, want several", len(big))
	}
	var last int64
	for _, ev := range big {
		var got int64 = -1
		for _, kv := range ev.Attributes {
			if kv.Key == "patterns.export.rows" {
				got = kv.Value.AsInt64()
			}
		}
		if ev.Name != "progress" || got < last || got > 40 {
			t.Errorf("event %s with %d rows after %d", ev.Name, got, last)
		}
		last = got
	}
	if ev := byDay["2024-01-03"].Events(); len(ev) != 0 {
		t.Errorf("2024-01-03: events %v, want none", ev)
	}

	// Incremental, nothing changed: every day unchanged.
	if _, err := ex.ExportChanged(context.Background(), ds, from, to); err != nil {
		t.Fatal(err)
	}
	exports = e.ended("export events")
	if len(exports) != 2 {
		t.Fatalf("%d export spans, want 2", len(exports))
	}
	if exports[1].Parent().IsValid() {
		t.Error("an export without a parent span has one")
	}
	sfWantAttrs(t, "incremental export", exports[1], map[string]any{
		"patterns.export.incremental": true, "patterns.export.files": int64(0), "patterns.export.unchanged": int64(3),
		"patterns.export.rows": int64(0), "patterns.export.manifest_key": nil,
	})
	days = e.ended("export day events")[3:]
	if len(days) != 3 {
		t.Fatalf("%d incremental day spans, want 3", len(days))
	}
	for _, s := range days {
		sfChildOf(t, "unchanged day", s, exports[1].SpanContext())
		sfWantAttrs(t, "unchanged day", s, map[string]any{"patterns.export.unchanged": true, "patterns.export.incremental": true, "patterns.export.rows": nil, "patterns.export.sha256": nil})
	}

	rm := e.metrics(t)
	dataset := attrS("patterns.export.dataset", "events")
	if n, _ := sfInt(rm, "patterns.export.rows", dataset); n != rows {
		t.Errorf("patterns.export.rows = %d, want %d", n, rows)
	}
	if n, _ := sfInt(rm, "patterns.export.bytes", dataset); n != bytes {
		t.Errorf("patterns.export.bytes = %d, want %d", n, bytes)
	}
	for outcome, want := range map[string]uint64{"written": 3, "unchanged": 3} {
		if n, sum := sfHist(rm, "patterns.export.day.duration", dataset, attrS("patterns.export.outcome", outcome)); n != want || sum <= 0 {
			t.Errorf("day.duration{%s}: count %d, sum %g; want count %d", outcome, n, sum, want)
		}
	}
	if sets := sfSets(rm, "patterns.export.day.duration"); len(sets) != 2 {
		t.Errorf("day.duration series %v, want 2", sets)
	}
}

// A failing day ends its span with status Error and the SQLSTATE, the export
// too; the day after it never starts; the metrics count the written day only.
func TestFileTransferFailingDay(t *testing.T) {
	pool, store := ftSetup(t)
	e := sfNew(t)
	ex, err := filetransfer.NewExporter(pool, store, filetransfer.WithParallelism(1), filetransfer.WithTracer(e.tel.FileTransfer()))
	if err != nil {
		t.Fatal(err)
	}
	ds := filetransfer.Dataset{Name: "partial", Template: "select g, 1 / (case when {day} = DATE '2024-01-02' then 0 else 1 end) as x from generate_series(1, 10) g"}
	ctx, job := e.parent(context.Background(), "job")
	_, exportErr := ex.Export(ctx, ds, ftDay(t, "2024-01-01"), ftDay(t, "2024-01-03"))
	job.End()
	if exportErr == nil || !strings.Contains(exportErr.Error(), "division by zero") {
		t.Fatalf("export: %v, want the division by zero", exportErr)
	}

	exports := e.ended("export partial")
	if len(exports) != 1 {
		t.Fatalf("%d export spans", len(exports))
	}
	exp := exports[0]
	sfChildOf(t, "export", exp, job.SpanContext())
	if st := exp.Status(); st.Code != codes.Error || st.Description != exportErr.Error() {
		t.Errorf("export status %v, want error %q", st, exportErr)
	}
	sfWantAttrs(t, "export", exp, map[string]any{"error.type": "22012", "patterns.export.files": int64(1), "patterns.export.rows": int64(10)})

	byDay := ftByDay(t, e.ended("export day partial"))
	if len(byDay) != 2 {
		t.Fatalf("day spans for %d days, want 2 (the day after the failure never starts)", len(byDay))
	}
	good, bad := byDay["2024-01-01"], byDay["2024-01-02"]
	sfChildOf(t, "good day", good, exp.SpanContext())
	sfChildOf(t, "failed day", bad, exp.SpanContext())
	if good.Status().Code != codes.Unset {
		t.Errorf("good day: status %v", good.Status())
	}
	sfWantAttrs(t, "good day", good, map[string]any{"patterns.export.rows": int64(10), "error.type": nil})
	if st := bad.Status(); st.Code != codes.Error || !strings.Contains(st.Description, "division by zero") {
		t.Errorf("failed day: status %v", st)
	}
	sfWantAttrs(t, "failed day", bad, map[string]any{"error.type": "22012", "patterns.export.rows": nil, "patterns.export.sha256": nil, "patterns.export.unchanged": false})
	if ev := bad.Events(); len(ev) != 1 || ev[0].Name != "exception" {
		t.Errorf("failed day: events %v, want the exception", ev)
	}

	rm := e.metrics(t)
	dataset := attrS("patterns.export.dataset", "partial")
	if n, _ := sfInt(rm, "patterns.export.rows", dataset); n != 10 {
		t.Errorf("patterns.export.rows = %d, want 10", n)
	}
	if n, _ := sfHist(rm, "patterns.export.day.duration", dataset, attrS("patterns.export.outcome", "written")); n != 1 {
		t.Errorf("day.duration{written} count %d, want 1", n)
	}
	if n, _ := sfHist(rm, "patterns.export.day.duration", dataset, attrS("patterns.export.outcome", "failed"), attrS("error.type", "22012")); n != 1 {
		t.Errorf("day.duration{failed} count %d, want 1 (series %v)", n, sfSets(rm, "patterns.export.day.duration"))
	}

	// An export refused before any day (a cancelled context) still ends its span.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ex.Export(cancelled, ds, ftDay(t, "2024-01-01"), ftDay(t, "2024-01-03")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled export: %v", err)
	}
	exports = e.ended("export partial")
	if len(exports) != 2 || exports[1].Status().Code != codes.Error {
		t.Fatalf("cancelled export: %d spans", len(exports))
	}
	sfWantAttrs(t, "cancelled export", exports[1], map[string]any{"error.type": "canceled"})
	if n := len(e.ended("export day partial")); n != 2 {
		t.Errorf("cancelled export started days: %d day spans in all", n)
	}
	if started, ended := len(e.spans.Started()), len(e.spans.Ended()); started != ended {
		t.Errorf("%d spans started, %d ended", started, ended)
	}
}

// Each accessor's value implements its own package's tracers only: given to
// the other package, it is refused.
func TestSharedDBAndFileTransferTracersAreChecked(t *testing.T) {
	tel, err := telemetry.New(telemetry.WithDBQueryText(true))
	if err != nil {
		t.Fatal(err)
	}
	store, err := memory.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := filetransfer.NewExporter((*pgxpool.Pool)(nil), store, filetransfer.WithTracer(tel.SharedDB())); !errors.Is(err, filetransfer.ErrInvalidOption) {
		t.Errorf("filetransfer.WithTracer(tel.SharedDB()): %v, want ErrInvalidOption", err)
	}
	if _, err := filetransfer.NewExporter((*pgxpool.Pool)(nil), store, filetransfer.WithTracer(tel.FileTransfer())); err != nil {
		t.Errorf("filetransfer.WithTracer(tel.FileTransfer()): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := shareddb.New(ctx, "postgres://postgres@127.0.0.1:1/test", shareddb.WithTracer(tel.FileTransfer())); !errors.Is(err, shareddb.ErrInvalidOption) {
		t.Errorf("shareddb.WithTracer(tel.FileTransfer()): %v, want ErrInvalidOption", err)
	}
}
