package filetransfer_test

import (
	"context"
	"errors"
	"path"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/internal/testenv"
)

// A Template that writes (a DELETE ... RETURNING, or a DELETE hidden in a
// WITH) is refused before it runs: the rows stay, nothing is published. With
// the check bypassed, the READ ONLY transaction every COPY runs in refuses it.
func TestWritingTemplateIsRefused(t *testing.T) {
	d := newDB(t, 2)
	table := d.ident() + ".t"
	d.exec(t, "create table "+table+" (id int, d date)")
	d.exec(t, "insert into "+table+" values (1, '2024-01-01'), (2, '2024-01-01'), (3, '2024-01-02')")
	store := newMemory(t)
	e := newExporter(t, d, store)
	d1 := day(t, "2024-01-01")
	intact := func(t *testing.T, what string) {
		t.Helper()
		if n := countRows(t, d, "select count(*) from "+table); n != 3 {
			t.Fatalf("%s: %d rows left, want 3", what, n)
		}
		if keys := store.Keys(); len(keys) != 0 {
			t.Fatalf("%s: published %v", what, keys)
		}
	}
	for name, tmpl := range map[string]string{
		"delete":         "delete from " + table + " where d >= {day} and d < {next_day} returning *",
		"delete in with": "with x as (delete from " + table + " where d >= {day} and d < {next_day} returning *) select * from x",
	} {
		t.Run(name, func(t *testing.T) {
			ds := filetransfer.Dataset{Name: "t", Template: tmpl}
			_, err := e.Export(tctx(t), ds, d1, d1)
			if !errors.Is(err, filetransfer.ErrInvalidTemplate) || !errors.Is(err, filetransfer.ErrInvalidDataset) {
				t.Fatalf("Export: %v, want ErrInvalidTemplate", err)
			}
			t.Log(err)
			intact(t, "Export")

			_, err = filetransfer.ExportDayUnchecked(tctx(t), e, ds, d1)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "25006" { // read_only_sql_transaction
				t.Fatalf("unchecked COPY: %v, want SQLSTATE 25006", err)
			}
			intact(t, "unchecked COPY")
		})
	}
}

func TestTemplateCheck(t *testing.T) {
	d := newDB(t, 2)
	table := d.ident() + ".t"
	d.exec(t, "create table "+table+" (id int, d date)")
	d.exec(t, "insert into "+table+" values (1, '2024-01-01')")
	e := newExporter(t, d, newMemory(t))
	d1 := day(t, "2024-01-01")
	for _, tmpl := range []string{
		"select * from " + table + " where d = {day}",
		"  -- a comment; with a semicolon\n/* block /* nested; */ delete */ SELECT * from " + table + " where d = {day};\n ; ",
		"with x as (select * from " + table + " where d = {day}) select * from x",
		`with x as (select 'delete; insert' as "update", {day} as d) select * from x`,
		"with x as (select $q$ ; merge $q$ as s, E'\\'; delete' as e, {day}) select * from x",
		"values (1, {day})",
		"table " + table + " -- {day}",
		"(select {day} as d) union all (select {day})",
	} {
		if _, err := e.Export(tctx(t), filetransfer.Dataset{Name: "ok", Template: tmpl}, d1, d1); err != nil {
			t.Errorf("%q: %v", tmpl, err)
		}
	}
	for _, tmpl := range []string{
		"delete from " + table + " where d = {day} returning *",
		"/* hide */ -- it\n UPDATE " + table + " set id = 2 where d = {day} returning *",
		"insert into " + table + " values (2, {day}) returning *",
		"merge into " + table + " using (select {day}) s on false when not matched then do nothing",
		"with x as (insert into " + table + " values (2, {day}) returning *) select * from x",
		"with x as (select 1) update " + table + " set id = 2 where d = {day} returning *",
		"WITH x AS MATERIALIZED (Delete FROM " + table + " WHERE d = {day} RETURNING *) SELECT * FROM x",
		"select {day}; delete from " + table,
		"select {day}; select 1",
		"select {day} /* unterminated",
		"select '{day}",
		"copy " + table + " to stdout -- {day}",
		"call p({day})",
		"",
	} {
		_, err := e.Export(tctx(t), filetransfer.Dataset{Name: "bad", Template: tmpl}, d1, d1)
		if !errors.Is(err, filetransfer.ErrInvalidTemplate) && (tmpl != "" || !errors.Is(err, filetransfer.ErrInvalidDataset)) {
			t.Errorf("%q: %v, want ErrInvalidTemplate", tmpl, err)
		}
	}
	if n := countRows(t, d, "select count(*) from "+table+" where id = 1"); n != 1 {
		t.Fatalf("a refused template changed the table: %d rows", n)
	}
}

// hookStore calls created before a writer for a key is made and committed
// after a writer commits.
type hookStore struct {
	filetransfer.Store
	created   func(key string)
	committed func(key string)
}

type hookWriter struct {
	filetransfer.Writer
	key string
	s   *hookStore
}

func (s *hookStore) Create(ctx context.Context, key string) (filetransfer.Writer, error) {
	if s.created != nil {
		s.created(key)
	}
	w, err := s.Store.Create(ctx, key)
	return &hookWriter{Writer: w, key: key, s: s}, err
}

func (w *hookWriter) Commit() error {
	err := w.Writer.Commit()
	if err == nil && w.s.committed != nil {
		w.s.committed(w.key)
	}
	return err
}

// queryStarted calls fn with the SQL of each query a pool starts.
type queryStarted func(sql string)

func (f queryStarted) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	f(d.SQL)
	return ctx
}

func (queryStarted) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Two exporters of the same day at once: A commits its file, the data
// changes, B starts; A writes its marker only once B has either published
// its own file and marker (no day lock: A's marker then describes A's run
// while the stored file is B's) or is waiting for the day's lock. Whatever
// the order, the final marker describes the stored file.
func TestConcurrentExportersAgree(t *testing.T) {
	d := newDB(t, 2)
	table := d.ident() + ".t"
	d.exec(t, "create table "+table+" (id int, d date)")
	d.exec(t, "insert into "+table+" select g, '2024-01-01' from generate_series(1, 3) g")
	mem := newMemory(t)
	ctx := tctx(t)
	ds := filetransfer.Dataset{Name: "t", Query: "select * from " + table + " order by id", DayColumn: "d"}
	d1 := day(t, "2024-01-01")
	isMarker := func(key string) bool {
		return path.Base(key) == filetransfer.SuccessName && strings.Contains(key, "/dt=")
	}

	startB, bAtLock, bMarked := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var onceStart, onceLock, onceMarked sync.Once
	storeA := &hookStore{Store: mem,
		committed: func(key string) {
			if !isMarker(key) && !strings.Contains(key, "/_exports/") {
				onceStart.Do(func() {
					d.exec(t, "insert into "+table+" values (4, '2024-01-01')")
					close(startB)
				})
			}
		},
		created: func(key string) {
			if isMarker(key) {
				select {
				case <-bMarked:
				case <-bAtLock:
				case <-ctx.Done():
				}
			}
		},
	}
	storeB := &hookStore{Store: mem, committed: func(key string) {
		if isMarker(key) {
			onceMarked.Do(func() { close(bMarked) })
		}
	}}
	cfg, err := pgxpool.ParseConfig(testenv.WithSearchPath(d.base, d.schema))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 2
	cfg.ConnConfig.Tracer = queryStarted(func(sql string) {
		if strings.Contains(sql, "pg_advisory_lock") {
			onceLock.Do(func() { close(bAtLock) })
		}
	})
	poolB, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer poolB.Close()
	a := newExporter(t, d, storeA)
	b, err := filetransfer.NewExporter(poolB, storeB)
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	var errA, errB error
	doneA := make(chan struct{})
	wg.Go(func() { defer close(doneA); _, errA = a.Export(ctx, ds, d1, d1) })
	select {
	case <-startB:
	case <-doneA:
		t.Fatalf("A finished before committing its file: %v", errA)
	}
	wg.Go(func() { _, errB = b.Export(ctx, ds, d1, d1) })
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("A: %v; B: %v", errA, errB)
	}

	f, err := filetransfer.ReadDay(ctx, mem, filetransfer.Layout{}, "t", d1)
	if err != nil {
		t.Fatal(err)
	}
	body := read(t, mem, f.Key)
	rows := int64(strings.Count(string(body), "\n") - 1)
	if f.SHA256 != sha(body) || f.Bytes != int64(len(body)) || f.Rows != rows {
		t.Fatalf("marker says %d rows, %d bytes, sha %s; stored file has %d rows, %d bytes, sha %s",
			f.Rows, f.Bytes, f.SHA256, rows, len(body), sha(body))
	}
	if rows != 4 {
		t.Errorf("the last run exported %d rows, want 4 (it ran after the insert)", rows)
	}
}
