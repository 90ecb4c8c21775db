package filetransfer_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // America/New_York below, also on machines without tzdata

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/fs"
)

// Each day's file is byte-identical to what psql's \copy prints for that
// day's rows: NULLs, empty strings, quotes, newlines, unicode, timestamps
// with zones, numerics, infinity, arrays and JSON.
func TestCSVMatchesPsql(t *testing.T) {
	d := newDB(t, 4)
	table := d.createEvents(t)
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			store, err := fs.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			opts := []filetransfer.ExporterOption{filetransfer.WithPrefix("exports/v1")}
			if gz {
				opts = append(opts, filetransfer.WithGzip(gzip.DefaultCompression))
			}
			e := newExporter(t, d, store, opts...)
			// A trailing comment and semicolon must not break the wrapping.
			ds := filetransfer.Dataset{Name: "events", Query: "select * from " + table + " order by id -- by id;\n ; ", DayColumn: "day", UpdatedColumn: "updated_at"}
			m, err := e.Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-03"))
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Files) != 3 {
				t.Fatalf("%d files, want 3", len(m.Files))
			}
			for _, f := range m.Files {
				got := read(t, store, f.Key)
				if sha(got) != f.SHA256 || int64(len(got)) != f.Bytes {
					t.Errorf("%s: manifest says %d bytes sha %s; stored %d bytes sha %s", f.Key, f.Bytes, f.SHA256, len(got), sha(got))
				}
				if gz {
					got = gunzip(t, got)
				}
				if n := countRows(t, d, fmt.Sprintf("select count(*) from %s where day = '%s'", table, f.Day)); f.Rows != n || n < 3 {
					t.Errorf("%s: %d rows, want %d (and at least 3)", f.Key, f.Rows, n)
				}
				want := d.psqlCopy(t, fmt.Sprintf("select * from %s where day = '%s' order by id", table, f.Day))
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs from psql:\n got: %q\nwant: %q", f.Key, got, want)
				}
				if int64(len(got)) != f.CSVBytes {
					t.Errorf("%s: csv_bytes %d, want %d", f.Key, f.CSVBytes, len(got))
				}
			}
		})
	}
}

// A timestamptz day column is cut at midnight in the WithLocation zone, including
// on a 23-hour DST day, and the template form sees the same bounds.
func TestTimestamptzDayColumnAndTemplate(t *testing.T) {
	d := newDB(t, 4)
	table := d.ident() + ".ticks"
	d.exec(t, "create table "+table+" (id int, at timestamptz)")
	// One row per hour around the 2024-03-10 DST change in New York.
	d.exec(t, "insert into "+table+" select g, timestamptz '2024-03-09 12:00:00+00' + g * interval '1 hour' from generate_series(0, 72) g")
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	store := newMemory(t)
	for _, loc := range []*time.Location{time.UTC, ny} {
		e := newExporter(t, d, store, filetransfer.WithLocation(loc))
		byColumn := filetransfer.Dataset{Name: "ticks", Query: "select * from " + table + " order by id", DayColumn: "at"}
		byTemplate := filetransfer.Dataset{Name: "ticks_t", Template: "select * from " + table + " where at >= {from} and at < {to} order by id"}
		for _, ds := range []filetransfer.Dataset{byColumn, byTemplate} {
			m, err := e.Export(tctx(t), ds, day(t, "2024-03-10"), day(t, "2024-03-10"))
			if err != nil {
				t.Fatal(err)
			}
			lo, hi := day(t, "2024-03-10").Start(loc), day(t, "2024-03-11").Start(loc)
			want := d.psqlCopy(t, fmt.Sprintf("select * from %s where at >= '%s' and at < '%s' order by id", table, lo.Format(time.RFC3339), hi.Format(time.RFC3339)))
			got := read(t, store, m.Files[0].Key)
			if !bytes.Equal(got, want) {
				t.Errorf("%s in %s: got %q, want %q", ds.Name, loc, got, want)
			}
			wantRows := int64(hi.Sub(lo) / time.Hour) // 24 in UTC, 23 in New York that day
			if m.Files[0].Rows != wantRows {
				t.Errorf("%s in %s: %d rows, want %d", ds.Name, loc, m.Files[0].Rows, wantRows)
			}
		}
	}
}

func TestLayoutAndManifest(t *testing.T) {
	d := newDB(t, 4)
	table := d.createEvents(t)
	store := newMemory(t)
	e := newExporter(t, d, store, filetransfer.WithGzip(gzip.DefaultCompression), filetransfer.WithPrefix("p"))
	before := time.Now().UTC()
	ds := filetransfer.Dataset{Name: "events", Query: "select id, day, name, amount, at from " + table + " order by id", DayColumn: "day"}
	m, err := e.Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-04"))
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().UTC()
	keys := store.Keys()
	var exportKeys []string
	for _, k := range keys {
		if strings.HasPrefix(k, "p/events/_exports/") {
			exportKeys = append(exportKeys, k)
		}
	}
	want := []string{
		"p/events/dt=2024-01-01/_SUCCESS", "p/events/dt=2024-01-01/events-2024-01-01.csv.gz",
		"p/events/dt=2024-01-02/_SUCCESS", "p/events/dt=2024-01-02/events-2024-01-02.csv.gz",
		"p/events/dt=2024-01-03/_SUCCESS", "p/events/dt=2024-01-03/events-2024-01-03.csv.gz",
		"p/events/dt=2024-01-04/_SUCCESS", "p/events/dt=2024-01-04/events-2024-01-04.csv.gz",
	}
	if got := slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return strings.HasPrefix(k, "p/events/_exports/") }); !slices.Equal(got, want) {
		t.Fatalf("keys:\n%v\nwant\n%v", got, want)
	}
	if len(exportKeys) != 2 || path.Base(exportKeys[0]) != "_SUCCESS" || path.Base(exportKeys[1]) != "manifest.json" || path.Dir(exportKeys[0]) != path.Dir(exportKeys[1]) {
		t.Fatalf("export files %v, want one manifest.json and its _SUCCESS", exportKeys)
	}
	if m.Key != exportKeys[1] {
		t.Errorf("Manifest.Key = %q, want %q", m.Key, exportKeys[1])
	}
	var stored filetransfer.Manifest
	if err := json.Unmarshal(read(t, store, m.Key), &stored); err != nil {
		t.Fatal(err)
	}
	if len(stored.Files) != 4 || stored.Dataset != "events" || !stored.GeneratedAt.Equal(m.GeneratedAt) || m.GeneratedAt.Before(before) || m.GeneratedAt.After(after) || stored.From.String() != "2024-01-01" {
		t.Fatalf("stored manifest: %+v", stored)
	}
	wantCols := []filetransfer.Column{{"id", "integer"}, {"day", "date"}, {"name", "text"}, {"amount", "numeric(14,4)"}, {"at", "timestamp with time zone"}}
	for i, f := range stored.Files {
		n := countRows(t, d, fmt.Sprintf("select count(*) from %s where day = '%s'", table, f.Day))
		body := read(t, store, f.Key)
		csv := gunzip(t, body)
		if f.Rows != n || f.SHA256 != sha(body) || f.Bytes != int64(len(body)) || f.CSVBytes != int64(len(csv)) || !f.Gzip {
			t.Errorf("file %d: %+v; want rows %d, sha %s, bytes %d, csv %d", i, f, n, sha(body), len(body), len(csv))
		}
		if !slices.Equal(f.Columns, wantCols) {
			t.Errorf("columns %v, want %v", f.Columns, wantCols)
		}
		if firstLine(csv) != "id,day,name,amount,at" {
			t.Errorf("header %q", firstLine(csv))
		}
		marker, err := filetransfer.ReadDay(tctx(t), store, e.Layout(), "events", f.Day)
		if err != nil || marker.SHA256 != f.SHA256 || marker.Rows != f.Rows {
			t.Errorf("marker for %s: %+v, %v", f.Day, marker, err)
		}
	}
	// The day without rows still has a file: the header alone.
	if stored.Files[3].Rows != 0 || string(gunzip(t, read(t, store, stored.Files[3].Key))) != "id,day,name,amount,at\n" {
		t.Errorf("empty day: %+v", stored.Files[3])
	}
}

func TestReexportReplacesDay(t *testing.T) {
	d := newDB(t, 4)
	table := d.createEvents(t)
	store := newMemory(t)
	ds := filetransfer.Dataset{Name: "events", Query: "select id, day, name from " + table + " order by id", DayColumn: "day"}
	e := newExporter(t, d, store)
	if _, err := e.Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-01")); err != nil {
		t.Fatal(err)
	}
	d.exec(t, "update "+table+" set name = 'changed' where id = 1")
	// Switching compression replaces the plain file with the .gz one.
	eg := newExporter(t, d, store, filetransfer.WithGzip(gzip.DefaultCompression))
	m, err := eg.Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-01"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(gunzip(t, read(t, store, m.Files[0].Key))), "1,2024-01-01,changed") {
		t.Fatal("re-export did not pick up the change")
	}
	for _, k := range store.Keys() {
		if strings.HasSuffix(k, ".csv") {
			t.Errorf("stale plain file %s left next to the gzip one", k)
		}
	}
}

func TestIncremental(t *testing.T) {
	d := newDB(t, 4)
	table := d.createEvents(t)
	store := newMemory(t)
	e := newExporter(t, d, store)
	ds := filetransfer.Dataset{Name: "events", Query: "select id, day, name, updated_at from " + table + " order by id", DayColumn: "day", UpdatedColumn: "updated_at"}
	from, to := day(t, "2024-01-01"), day(t, "2024-01-03")
	days := func(fs []filetransfer.DayFile) (out []string) {
		for _, f := range fs {
			out = append(out, f.Day.String())
		}
		return out
	}
	m, err := e.ExportChanged(tctx(t), ds, from, to)
	if err != nil || !slices.Equal(days(m.Files), []string{"2024-01-01", "2024-01-02", "2024-01-03"}) {
		t.Fatalf("first run: %v, %v", days(m.Files), err)
	}
	m, err = e.ExportChanged(tctx(t), ds, from, to)
	if err != nil || len(m.Files) != 0 || len(m.Unchanged) != 3 || m.Key != "" {
		t.Fatalf("second run with nothing changed: files %v unchanged %v key %q err %v", days(m.Files), m.Unchanged, m.Key, err)
	}
	d.exec(t, "update "+table+" set name = 'edited', updated_at = now() + interval '1 second' where id = 5")
	d.exec(t, "delete from "+table+" where id = 10") // a delete changes the count
	m, err = e.ExportChanged(tctx(t), ds, from, to)
	if err != nil || !slices.Equal(days(m.Files), []string{"2024-01-02", "2024-01-03"}) {
		t.Fatalf("after an update on the 2nd and a delete on the 3rd: re-exported %v, %v", days(m.Files), err)
	}
	if !strings.Contains(string(read(t, store, m.Files[0].Key)), "5,2024-01-02,edited") {
		t.Error("the re-exported day does not have the edit")
	}
	// Without UpdatedColumn, only missing days are exported.
	plain := ds
	plain.UpdatedColumn = ""
	if err := store.Delete(tctx(t), e.Layout().DayMarkerKey("events", day(t, "2024-01-02"))); err != nil {
		t.Fatal(err)
	}
	m, err = e.ExportChanged(tctx(t), plain, from, to)
	if err != nil || !slices.Equal(days(m.Files), []string{"2024-01-02"}) {
		t.Fatalf("missing-only mode exported %v, %v", days(m.Files), err)
	}
}

func TestCatchupIsIdempotent(t *testing.T) {
	d := newDB(t, 4)
	table := d.createEvents(t)
	store := newMemory(t)
	e := newExporter(t, d, store)
	ds := filetransfer.Dataset{Name: "events", Query: "select * from " + table + " order by id", DayColumn: "day", UpdatedColumn: "updated_at"}
	now := time.Date(2024, 1, 4, 3, 0, 0, 0, time.UTC) // yesterday is 2024-01-03
	m, err := e.Catchup(tctx(t), ds, now, 3)
	if err != nil || len(m.Files) != 3 || m.From.String() != "2024-01-01" || m.To.String() != "2024-01-03" {
		t.Fatalf("first catch-up: %+v, %v", m, err)
	}
	before := len(store.Keys())
	m, err = e.Catchup(tctx(t), ds, now, 3)
	if err != nil || len(m.Files) != 0 || len(store.Keys()) != before {
		t.Fatalf("second catch-up wrote %d files (%d keys, was %d): %v", len(m.Files), len(store.Keys()), before, err)
	}
	m, err = e.Catchup(tctx(t), ds, now.Add(24*time.Hour), 1)
	if err != nil || len(m.Files) != 1 || m.Files[0].Day.String() != "2024-01-04" {
		t.Fatalf("next day's catch-up: %+v, %v", m, err)
	}
}

func TestProgressAndParallelism(t *testing.T) {
	d := newDB(t, 8)
	store := newMemory(t)
	var (
		mu       sync.Mutex
		maxInUse int32
	)
	rec := newRecorder()
	rec.onProgress = func(filetransfer.TraceExportProgressData) {
		mu.Lock()
		defer mu.Unlock()
		maxInUse = max(maxInUse, d.pool.Stat().AcquiredConns())
	}
	e := newExporter(t, d, store, filetransfer.WithParallelism(2), filetransfer.WithProgressEvery(64<<10), filetransfer.WithTracer(rec))
	ds := filetransfer.Dataset{Name: "gen", Template: "select g as id, {day} as day, md5(g::text) as h from generate_series(1, 20000) g order by g"}
	m, err := e.Export(tctx(t), ds, day(t, "2024-05-01"), day(t, "2024-05-06"))
	if err != nil {
		t.Fatal(err)
	}
	if maxInUse > 2 || maxInUse == 0 {
		t.Errorf("up to %d connections in use, want 1..2 (Parallelism 2)", maxInUse)
	}
	rec.checkContexts(t)
	for _, f := range m.Files {
		rs := rec.progressOf(f.Day)
		if len(rs) < 3 {
			t.Fatalf("%s: %d progress reports, want several", f.Day, len(rs))
		}
		if rs[0].Rows >= 20000 {
			t.Errorf("%s: first progress report %+v, want a partial count", f.Day, rs[0])
		}
		end, ok := rec.dayEnd(f.Day)
		if !ok || end.Err != nil || end.Unchanged || end.Rows != 20000 || end.Bytes != f.Bytes || end.CSVBytes != f.CSVBytes || end.SHA256 != f.SHA256 {
			t.Errorf("%s: day end %+v, file %+v", f.Day, end, f)
		}
		for i := 1; i < len(rs); i++ {
			if rs[i].CSVBytes < rs[i-1].CSVBytes || rs[i].Rows < rs[i-1].Rows || rs[i].Bytes < rs[i-1].Bytes {
				t.Errorf("%s: progress went backwards: %+v then %+v", f.Day, rs[i-1], rs[i])
			}
		}
		for _, p := range rs {
			if p.Rows <= 0 || p.Rows > 20000 || p.CSVBytes > f.CSVBytes || p.Dataset != "gen" || p.Key != f.Key {
				t.Errorf("%s: progress report %+v, want a partial count for %s", f.Day, p, f.Key)
			}
		}
	}
}

// A query error (here: division by zero half-way through the COPY) fails the
// day, publishes nothing, and leaves the connection usable.
func TestQueryErrorPublishesNothing(t *testing.T) {
	d := newDB(t, 1)
	store := newMemory(t)
	e := newExporter(t, d, store)
	var pid1 uint32
	if err := d.pool.QueryRow(tctx(t), "select pg_backend_pid()").Scan(&pid1); err != nil {
		t.Fatal(err)
	}
	ds := filetransfer.Dataset{Name: "boom", Template: "select g, 1 / (g - 5000) as x, {day} as day from generate_series(1, 10000) g"}
	_, err := e.Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-01"))
	if err == nil || !strings.Contains(err.Error(), "division by zero") {
		t.Fatalf("err = %v, want division by zero", err)
	}
	if keys := store.Keys(); len(keys) != 0 {
		t.Fatalf("published after a failed COPY: %v", keys)
	}
	// The server ended the COPY cleanly, so the connection is kept.
	var pid2 uint32
	if err := d.pool.QueryRow(tctx(t), "select pg_backend_pid()").Scan(&pid2); err != nil {
		t.Fatalf("pool unusable after a query error: %v", err)
	}
	if pid1 != pid2 {
		t.Errorf("a connection that ended the COPY cleanly was discarded (pid %d, then %d)", pid1, pid2)
	}
	// With UpdatedColumn the day runs in a transaction; the error rolls it back.
	ds.UpdatedColumn = "g"
	if _, err := e.Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-01")); err == nil {
		t.Fatal("no error")
	}
	// (pgxpool destroys a connection released inside a transaction, so the
	// same pid means it was rolled back and kept.)
	c, err := d.pool.Acquire(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	if c.Conn().PgConn().PID() != pid1 || c.Conn().PgConn().TxStatus() != 'I' {
		t.Errorf("after a failed transactional day: pid %d (was %d), status %c", c.Conn().PgConn().PID(), pid1, c.Conn().PgConn().TxStatus())
	}
}

// failingStore fails writes after limit bytes, like a store that goes away
// mid-upload.
type failingStore struct {
	filetransfer.Store
	limit int
}

type failingWriter struct {
	filetransfer.Writer
	left int
}

func (s failingStore) Create(ctx context.Context, key string) (filetransfer.Writer, error) {
	w, err := s.Store.Create(ctx, key)
	return &failingWriter{Writer: w, left: s.limit}, err
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		return 0, errors.New("store went away")
	}
	w.left -= len(p)
	return w.Writer.Write(p)
}

func TestStoreFailureMidCopy(t *testing.T) {
	d := newDB(t, 1)
	mem := newMemory(t)
	e := newExporter(t, d, failingStore{Store: mem, limit: 1 << 20})
	var pid1 uint32
	if err := d.pool.QueryRow(tctx(t), "select pg_backend_pid()").Scan(&pid1); err != nil {
		t.Fatal(err)
	}
	ds := filetransfer.Dataset{Name: "big", Template: "select g, {day} as day, repeat('x', 100) from generate_series(1, 100000) g"}
	_, err := e.Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-01"))
	if err == nil || !strings.Contains(err.Error(), "store went away") {
		t.Fatalf("err = %v, want the store's error", err)
	}
	if keys := mem.Keys(); len(keys) != 0 {
		t.Fatalf("published after a store failure: %v", keys)
	}
	var pid2 uint32
	if err := d.pool.QueryRow(tctx(t), "select pg_backend_pid()").Scan(&pid2); err != nil {
		t.Fatalf("pool unusable after the failure: %v", err)
	}
	if pid1 == pid2 {
		t.Fatal("the connection interrupted mid-COPY went back into the pool")
	}
}

// markerDownStore refuses to write _SUCCESS markers, like a store that goes
// away between a day's file and its marker.
type markerDownStore struct{ filetransfer.Store }

func (s markerDownStore) Create(ctx context.Context, key string) (filetransfer.Writer, error) {
	if path.Base(key) == filetransfer.SuccessName {
		return nil, errors.New("marker store down")
	}
	return s.Store.Create(ctx, key)
}

// A re-export whose marker cannot be written must not leave the old marker
// describing a file that was replaced (or, after a compression switch,
// deleted): the day is unmarked, and ExportChanged redoes it.
func TestFailedMarkerLeavesNoStaleMarker(t *testing.T) {
	d := newDB(t, 2)
	table := d.createEvents(t)
	mem := newMemory(t)
	ds := filetransfer.Dataset{Name: "events", Query: "select id, day, name from " + table + " order by id", DayColumn: "day"}
	d1 := day(t, "2024-01-01")
	if _, err := newExporter(t, d, mem).Export(tctx(t), ds, d1, d1); err != nil {
		t.Fatal(err)
	}
	gz := filetransfer.WithGzip(gzip.DefaultCompression)
	if _, err := newExporter(t, d, markerDownStore{mem}, gz).Export(tctx(t), ds, d1, d1); err == nil || !strings.Contains(err.Error(), "marker store down") {
		t.Fatalf("export with the marker store down: %v", err)
	}
	if f, err := filetransfer.ReadDay(tctx(t), mem, filetransfer.Layout{}, "events", d1); !errors.Is(err, filetransfer.ErrNotFound) {
		t.Fatalf("after a failed marker write the day is still marked (%v): %+v", err, f)
	}
	m, err := newExporter(t, d, mem, gz).ExportChanged(tctx(t), ds, d1, d1)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 1 || len(m.Unchanged) != 0 {
		t.Fatalf("ExportChanged did not redo the unmarked day: files %v, unchanged %v", m.Files, m.Unchanged)
	}
	f, err := filetransfer.ReadDay(tctx(t), mem, filetransfer.Layout{}, "events", d1)
	if err != nil {
		t.Fatal(err)
	}
	if got := sha(read(t, mem, f.Key)); got != f.SHA256 {
		t.Fatalf("marker SHA %s does not match %s (%s)", f.SHA256, f.Key, got)
	}
}

func TestBadInput(t *testing.T) {
	d := newDB(t, 2)
	table := d.createEvents(t)
	store := newMemory(t)
	e := newExporter(t, d, store, filetransfer.WithMaxDays(31))
	good := filetransfer.Dataset{Name: "events", Query: "select * from " + table, DayColumn: "day"}
	d1, d2 := day(t, "2024-01-01"), day(t, "2024-01-02")
	with := func(f func(*filetransfer.Dataset)) filetransfer.Dataset { ds := good; f(&ds); return ds }
	cases := []struct {
		name     string
		ds       filetransfer.Dataset
		from, to filetransfer.Day
		want     error
	}{
		{"traversal name", with(func(ds *filetransfer.Dataset) { ds.Name = "../etc" }), d1, d1, filetransfer.ErrInvalidName},
		{"slash name", with(func(ds *filetransfer.Dataset) { ds.Name = "a/b" }), d1, d1, filetransfer.ErrInvalidName},
		{"dot name", with(func(ds *filetransfer.Dataset) { ds.Name = ".." }), d1, d1, filetransfer.ErrInvalidName},
		{"empty name", with(func(ds *filetransfer.Dataset) { ds.Name = "" }), d1, d1, filetransfer.ErrInvalidName},
		{"reversed", good, d2, d1, filetransfer.ErrInvalidRange},
		{"unbounded from", good, filetransfer.Day{}, d1, filetransfer.ErrInvalidRange},
		{"unbounded to", good, d1, filetransfer.Day{}, filetransfer.ErrInvalidRange},
		{"too long", good, d1, d1.AddDays(31), filetransfer.ErrInvalidRange},
		{"no day column", with(func(ds *filetransfer.Dataset) { ds.Query = "select id, name from " + table }), d1, d1, filetransfer.ErrNoDayColumn},
		{"wrong day column", with(func(ds *filetransfer.Dataset) { ds.DayColumn = "nope" }), d1, d1, filetransfer.ErrNoDayColumn},
		{"day column not a date", with(func(ds *filetransfer.Dataset) { ds.DayColumn = "name" }), d1, d1, filetransfer.ErrNoDayColumn},
		{"DayColumn unset", with(func(ds *filetransfer.Dataset) { ds.DayColumn = "" }), d1, d1, filetransfer.ErrNoDayColumn},
		{"no query", with(func(ds *filetransfer.Dataset) { ds.Query = "" }), d1, d1, filetransfer.ErrInvalidDataset},
		{"query and template", with(func(ds *filetransfer.Dataset) { ds.Template = "select {day}" }), d1, d1, filetransfer.ErrInvalidDataset},
		{"template without bounds", filetransfer.Dataset{Name: "t", Template: "select * from " + table}, d1, d1, filetransfer.ErrInvalidDataset},
		{"parameters", with(func(ds *filetransfer.Dataset) { ds.Query = "select * from " + table + " where id > $1" }), d1, d1, filetransfer.ErrInvalidDataset},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.Export(tctx(t), c.ds, c.from, c.to)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			t.Log(err)
		})
	}
	if keys := store.Keys(); len(keys) != 0 {
		t.Fatalf("bad input published files: %v", keys)
	}
	// Days are parsed strictly.
	for _, s := range []string{"../2024-01-01", "2024-01-01/..", "2024-1-1", "2024-02-30", "20240101", "", "2024-01-01 "} {
		if _, err := filetransfer.ParseDay(s); !errors.Is(err, filetransfer.ErrInvalidDay) {
			t.Errorf("ParseDay(%q) = %v, want ErrInvalidDay", s, err)
		}
	}
}

// A store whose folder is gone fails before the database is touched.
func TestMissingFolder(t *testing.T) {
	d := newDB(t, 1)
	dir := t.TempDir() + "/exports"
	if _, err := fs.New(dir); !errors.Is(err, filetransfer.ErrStoreNotFound) {
		t.Fatalf("fs.New(missing) = %v, want ErrStoreNotFound", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	store, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	e := newExporter(t, d, store)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	_, err = e.Export(tctx(t), filetransfer.Dataset{Name: "x", Template: "select {day} as d"}, day(t, "2024-01-01"), day(t, "2024-01-01"))
	if !errors.Is(err, filetransfer.ErrStoreNotFound) {
		t.Fatalf("export to a removed folder: %v, want ErrStoreNotFound", err)
	}
}

// When one day fails, the days after it are not started, the days before it
// stay published, the failed day publishes nothing, and no export manifest is
// written.
func TestFailedDayStopsTheExport(t *testing.T) {
	d := newDB(t, 2)
	store := newMemory(t)
	e := newExporter(t, d, store, filetransfer.WithParallelism(1))
	ds := filetransfer.Dataset{Name: "partial", Template: "select g, 1 / (case when {day} = DATE '2024-01-02' then 0 else 1 end) as x from generate_series(1, 10) g"}
	m, err := e.Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-03"))
	if err == nil || !strings.Contains(err.Error(), "2024-01-02") || !strings.Contains(err.Error(), "division by zero") || errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want the 2024-01-02 division by zero alone", err)
	}
	if len(m.Files) != 1 || m.Files[0].Day.String() != "2024-01-01" {
		t.Fatalf("manifest files %+v, want 2024-01-01 only", m.Files)
	}
	want := []string{"partial/dt=2024-01-01/_SUCCESS", "partial/dt=2024-01-01/partial-2024-01-01.csv"}
	if keys := store.Keys(); !slices.Equal(keys, want) {
		t.Fatalf("keys %v, want %v", keys, want)
	}
}
