package filetransfer_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
	"github.com/go-integration/patterns/filetransfer/memory"
	"github.com/go-integration/patterns/internal/testenv"
)

func tctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// db gives t a schema of its own and a pool whose search_path is it.
type db struct {
	schema string
	base   string // database URL without search_path (for psql)
	pool   *pgxpool.Pool
}

func newDB(t testing.TB, maxConns int32) *db {
	t.Helper()
	schema, dsn := testenv.Schema(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &db{schema: schema, base: testenv.DatabaseURL(t), pool: pool}
}

func (d *db) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := d.pool.Exec(tctx(t), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (d *db) ident() string { return pgx.Identifier{d.schema}.Sanitize() }

// psqlCopy returns what psql's \copy prints for query.
func (d *db) psqlCopy(t testing.TB, query string) []byte {
	t.Helper()
	psql, err := exec.LookPath("psql")
	if err != nil {
		testenv.Unavailable(t, "psql (the reference for byte-identical CSV)", err)
	}
	cmd := exec.CommandContext(tctx(t), psql, d.base, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", `\copy (`+query+`) to stdout with (format csv, header)`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("psql: %v: %s", err, stderr.String())
	}
	return out
}

// createEvents makes a table full of values CSV gets wrong easily.
func (d *db) createEvents(t testing.TB) string {
	t.Helper()
	table := d.ident() + ".events"
	d.exec(t, `create table `+table+` (
		id int primary key,
		day date not null,
		at timestamptz not null,
		local_at timestamp,
		name text,
		amount numeric(14,4),
		ratio double precision,
		flag boolean,
		tags text[],
		doc jsonb,
		updated_at timestamptz not null default now())`)
	d.exec(t, `insert into `+table+` (id, day, at, local_at, name, amount, ratio, flag, tags, doc) values
		(1, '2024-01-01', '2024-01-01 00:00:00+00', '2024-01-01 00:00:00', 'plain', 1.5, 0.1, true, '{a,b}', '{"k": "v"}'),
		(2, '2024-01-01', '2024-01-01 23:59:59.999999+00', 'infinity', NULL, NULL, NULL, NULL, NULL, NULL),
		(3, '2024-01-01', '2024-01-01 12:00:00-05', '2024-01-01 12:00:00.5', '', 0, -0.0, false, '{}', 'null'),
		(4, '2024-01-02', '2024-01-02 04:30:00+00', '1999-12-31 23:59:59', 'he said "hi", ok', -12345678.1234, 1e-300, true, '{"x,y","q\"uote"}', '{"a": [1, "two\n"]}'),
		(5, '2024-01-02', '2024-01-02 10:00:00+05:30', NULL, E'line1\nline2\r\nline3', 'NaN', 'Infinity', NULL, '{NULL}', '"str"'),
		(6, '2024-01-02', '2024-01-02 00:00:00+14', NULL, 'naïve ☃ 😀 日本語', 0.0001, 3.141592653589793, NULL, NULL, NULL),
		(7, '2024-01-03', '2024-01-03 12:00:00+00', NULL, E'back\\slash, tab\tand "quotes" and ''single''', 99999999.9999, -1, true, NULL, NULL),
		(8, '2024-01-03', '2024-01-03 12:00:00+00', NULL, ',', 1, 1, true, NULL, NULL),
		(9, '2024-01-03', '2024-01-03 12:00:00+00', NULL, '"', 1, 1, true, NULL, NULL),
		(10, '2024-01-03', '2024-01-03 12:00:00+00', NULL, '\N', 1, 1, true, NULL, NULL)`)
	return table
}

func day(t testing.TB, s string) filetransfer.Day {
	t.Helper()
	d, err := filetransfer.ParseDay(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newMemory(t testing.TB) *memory.Store {
	t.Helper()
	s, err := memory.New()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newExporter(t testing.TB, d *db, s filetransfer.Store, opts ...filetransfer.ExporterOption) *filetransfer.Exporter {
	t.Helper()
	e, err := filetransfer.NewExporter(d.pool, s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func read(t testing.TB, s filetransfer.Store, key string) []byte {
	t.Helper()
	b, err := storeutil.ReadAll(tctx(t), s, key)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func gunzip(t testing.TB, b []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func countRows(t testing.TB, d *db, sql string) int64 {
	t.Helper()
	var n int64
	if err := d.pool.QueryRow(tctx(t), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}
