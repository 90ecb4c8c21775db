// Command filetransfer exports a small bookings table to one CSV file per day
// in a folder, serves the links API over it, and downloads one day's file
// through its expiring link, checking its SHA-256.
//
// It needs PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test),
// and works in a schema and a temporary folder of its own, removed at the end.
//
//	go run ./examples/filetransfer
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/fs"
)

func main() {
	// Ctrl-C or SIGTERM cancels ctx, so run still cleans up after itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "filetransfer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, schema, drop, err := connect(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, drop()) }()
	// Ten bookings, one every 7 hours from 2024-03-01: 3, 3 and 4 a day.
	if _, err := pool.Exec(ctx, `create table bookings (id bigint primary key, ref text, created_at timestamptz, amount numeric(10,2));
		insert into bookings select i, 'B-' || i, timestamptz '2024-03-01 00:00Z' + i * interval '7 hours', i * 10.5
		from generate_series(1, 10) i`); err != nil {
		return err
	}

	// The folder store, and a server for the links API and the downloads.
	dir, err := os.MkdirTemp("", "exports-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(w, "working in schema %s and folder %s\n", schema, dir)
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(mux) // in a service: http.ListenAndServe(addr, mux)
	base := "http://" + srv.Listener.Addr().String()
	store, err := fs.New(dir, fs.WithBaseURL(base+"/dl/"), fs.WithSecret([]byte(rand.Text())))
	if err != nil {
		return err
	}
	defer store.Close()
	links, err := filetransfer.NewLinksHandler(store, filetransfer.WithLinkTTL(time.Hour))
	if err != nil {
		return err
	}
	mux.Handle("GET /exports/{dataset}", links)
	mux.Handle("/dl/", store.Handler())
	srv.Start()
	defer srv.Close()

	exporter, err := filetransfer.NewExporter(pool, store)
	if err != nil {
		return err
	}
	ds := filetransfer.Dataset{Name: "bookings", Query: "select * from bookings order by id", DayColumn: "created_at"}
	m, err := exporter.Export(ctx, ds, filetransfer.NewDay(2024, 3, 1), filetransfer.NewDay(2024, 3, 3))
	if err != nil {
		return err
	}
	for _, f := range m.Files {
		fmt.Fprintf(w, "exported %s: %d rows, %d bytes\n", f.Key, f.Rows, f.Bytes)
	}

	// A client asks for a range and gets one link per exported day.
	body, err := get(ctx, srv.Client(), base+"/exports/bookings?from=2024-03-01&to=2024-03-04")
	if err != nil {
		return err
	}
	var got filetransfer.Links
	if err := json.Unmarshal(body, &got); err != nil {
		return err
	}
	fmt.Fprintf(w, "links: %d files, missing %v\n", len(got.Files), got.Missing)
	if len(got.Files) != len(m.Files) {
		return fmt.Errorf("links for %d days, exported %d", len(got.Files), len(m.Files))
	}
	day := got.Files[1]
	if body, err = get(ctx, srv.Client(), day.URL); err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	fmt.Fprintf(w, "downloaded %s (%d rows), sha256 matches: %t\n%s", day.Day, day.Rows, hex.EncodeToString(sum[:]) == day.SHA256, body)
	_, err = get(ctx, srv.Client(), strings.Replace(day.URL, "expires=", "expires=9", 1))
	fmt.Fprintf(w, "a link with a changed expiry: %v\n", err)
	return nil
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", req.URL.Path, resp.Status)
	}
	return body, err
}

// connect opens a pool whose connections work in a schema of its own, in UTC
// (COPY prints timestamptz in the session's time zone), and returns a
// function that drops the schema and closes the pool.
func connect(ctx context.Context) (pool *pgxpool.Pool, schema string, drop func() error, err error) {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/test"
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, "", nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	schema = "example_filetransfer_" + strings.ToLower(rand.Text()[:8])
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	if pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, "", nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, "", nil, fmt.Errorf("needs PostgreSQL at %s:%d: start it with scripts/services (%w)", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	if _, err := pool.Exec(ctx, "create schema "+schema); err != nil {
		pool.Close()
		return nil, "", nil, err
	}
	return pool, schema, func() error {
		defer pool.Close()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "drop schema "+schema+" cascade"); err != nil {
			return fmt.Errorf("drop schema %s: %w", schema, err)
		}
		return nil
	}, nil
}
