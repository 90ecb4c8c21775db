// Command shareddb reads another service's PostgreSQL through its streaming
// replica with a ReplicaReader: a schema contract checked at start, a read
// that waits for the replica to replay the owner's write, the status of each
// node, a write refused, and the contract reporting the owner's later drift.
//
// It needs the primary (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test)
// and its replica (REPLICA_DATABASE_URL, default postgres://postgres@127.0.0.1:5433/test),
// and works in a schema of its own, dropped at the end.
//
//	go run ./examples/shareddb
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/shareddb"
)

func main() {
	// Ctrl-C or SIGTERM cancels ctx, so run still cleans up after itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shareddb:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	primaryURL := env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
	replicaURL := env("REPLICA_DATABASE_URL", "postgres://postgres@127.0.0.1:5433/test")
	owner, err := open(ctx, primaryURL, "PostgreSQL")
	if err != nil {
		return err
	}
	defer owner.Close()
	replica, err := open(ctx, replicaURL, "the PostgreSQL replica")
	if err != nil {
		return err
	}
	replica.Close() // the reader opens its own pools; this only checked it answers

	// The owning service's table, in a schema of its own (dropped at the end).
	schema := "example_shareddb_" + strings.ToLower(rand.Text()[:8])
	table := schema + ".orders"
	if _, err := owner.Exec(ctx, "create schema "+schema+"; create table "+table+
		" (id bigint primary key, total numeric(10,2) not null, placed_at timestamptz not null default now());"+
		" insert into "+table+" (id, total) values (1, 12.50), (2, 20.00), (3, 9.50)"); err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, derr := owner.Exec(ctx, "drop schema "+schema+" cascade")
		err = errors.Join(err, derr)
	}()
	fmt.Fprintf(w, "owner wrote 3 orders in %s\n", table)
	written, err := shareddb.CurrentToken(ctx, owner) // the owner's WAL position after its commit
	if err != nil {
		return err
	}

	// The reading service: only the columns it uses, with their types.
	r, err := shareddb.New(ctx, primaryURL, shareddb.WithReplicas(replicaURL),
		shareddb.WithMaxLag(5*time.Second), // older replicas are skipped; reads fall back to the primary
		shareddb.WithContract(&shareddb.Contract{Tables: []shareddb.Table{{Schema: schema, Name: "orders", Columns: []shareddb.Column{
			{Name: "id", Type: "bigint"}, {Name: "total", Type: "numeric"}, {Name: "placed_at", Type: "timestamptz"}}}}}),
	)
	if err != nil {
		return err
	}
	defer r.Close()
	fmt.Fprintln(w, "contract verified")

	var n int
	var sum float64
	var onReplica bool
	err = r.With(shareddb.WithToken(written)).QueryRow(ctx, // wait for a replica that replayed the write
		"select count(*), sum(total)::float8, pg_is_in_recovery() from "+table).Scan(&n, &sum, &onReplica)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "read after the owner's write: %d orders, total %.2f, served by a replica: %t\n", n, sum, onReplica)
	for _, s := range r.Status() {
		fmt.Fprintf(w, "node %-8s role %-7s healthy %-5t in recovery %-5t lag %-6s routed %d\n",
			s.Name, s.Role, s.Healthy, s.InRecovery, s.Lag.Round(time.Millisecond), s.Routed)
	}
	st := r.Stats()
	fmt.Fprintf(w, "stats: routed %d, fell back %d, waited for the token %d\n", st.Routed, st.FellBack, st.Waited)

	err = r.QueryRow(ctx, "delete from "+table+" returning id").Scan(&n)
	fmt.Fprintf(w, "a write through the reader: ErrReadOnly=%t\n", errors.Is(err, shareddb.ErrReadOnly))

	// The owner ships a migration the reader was not told about.
	if _, err := owner.Exec(ctx, "alter table "+table+" rename column placed_at to created_at;"+
		" alter table "+table+" alter column total type text"); err != nil {
		return err
	}
	var drift *shareddb.ContractError
	if err := r.Verify(ctx); !errors.As(err, &drift) {
		if err == nil {
			err = errors.New("no difference found")
		}
		return fmt.Errorf("verify after the owner's migration: %w", err)
	}
	for _, d := range drift.Diffs {
		fmt.Fprintf(w, "contract drift: %s\n", d)
	}
	return nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// open returns a pool on url once the server answers, or says what is missing.
func open(ctx context.Context, url, what string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("needs %s at %s:%d: start it with scripts/services (%w)", what, cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}
