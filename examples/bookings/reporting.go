package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/go-integration/patterns/shareddb"
)

// reporting is a service that reads the monolith's bookings table directly,
// through the streaming replica, under a schema contract that says which
// columns it depends on.
func reporting(ctx context.Context, t *tour, e *env) error {
	if err := e.needDB(); err != nil {
		return err
	}
	t.printf("   The reporting service reads the monolith's bookings table itself, on the replica,\n")
	t.printf("   so its heavy queries never slow down the monolith's writes.\n")

	contract := &shareddb.Contract{Tables: []shareddb.Table{{
		Schema: e.schema,
		Name:   "bookings",
		Columns: []shareddb.Column{
			{Name: "id", Type: "text"},
			{Name: "town", Type: "text"},
			{Name: "nights", Type: "integer"},
			{Name: "booked_at", Type: "timestamptz"},
		},
	}}}
	opts := []shareddb.Option{
		shareddb.WithContract(contract),
		shareddb.WithCheckInterval(200 * time.Millisecond),
		shareddb.WithLogger(t.logger()),
		shareddb.WithTracer(t.tel.SharedDB()),
	}
	replicaURL := getenv("REPLICA_DATABASE_URL", defaultReplicaDatabaseURL)
	if err := pingReplica(ctx, replicaURL); err != nil {
		t.printf("   the replica (REPLICA_DATABASE_URL=%s) does not answer: %s\n", redact(replicaURL), brief(err))
		t.printf("   so zero replicas: every read goes to the primary (read-only connections), with a warning:\n")
	} else {
		opts = append(opts, shareddb.WithReplicas(withSearchPath(replicaURL, e.schema)))
		t.printf("   replica: %s\n", redact(replicaURL))
	}
	reader, err := shareddb.New(ctx, e.databaseURL, opts...)
	if err != nil {
		return fmt.Errorf("shareddb.New: %w", err)
	}
	e.reader = reader // the daily export reads through it too; closed at the end
	t.printf("   the schema contract holds (checked by shareddb.New: bookings has id, town, nights, booked_at)\n")

	// A contract that asks for a column the monolith does not have fails at
	// deploy time, listing every difference, instead of at 3 a.m.
	stricter := &shareddb.Contract{Tables: []shareddb.Table{{
		Schema: e.schema, Name: "bookings",
		Columns: []shareddb.Column{
			{Name: "id", Type: "text"},
			{Name: "nights", Type: "text"},        // the monolith has integer
			{Name: "price_cents", Type: "bigint"}, // the monolith has no such column
		},
	}}}
	err = stricter.Verify(ctx, e.pool)
	var ce *shareddb.ContractError
	if !errors.As(err, &ce) || len(ce.Diffs) != 2 {
		return fmt.Errorf("verifying a contract the table breaks: %v, want 2 differences", err)
	}
	for _, d := range ce.Diffs {
		t.printf("   a newer reporting version would not deploy: %s\n", d)
	}

	// The monolith takes a new booking; the reporting service must see it.
	late := booking{ID: "b-1004", Rental: "chalet-17", Country: "france", Town: "nevache", Nights: 3, BookedAt: at("2026-07-03T10:30:00Z")}
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error { return insertBooking(ctx, tx, late) }); err != nil {
		return err
	}
	token, err := shareddb.CurrentToken(ctx, e.pool)
	if err != nil {
		return err
	}
	t.printf("   the monolith writes booking %s; its WAL position %s travels as a read-your-writes token\n", late.ID, token)

	// Reads given the token wait for a replica that has replayed that far (or read the primary).
	fresh := reader.With(shareddb.WithToken(token))
	rows, err := fresh.Query(ctx, `select town, count(*), sum(nights) from bookings group by town order by town`)
	if err != nil {
		return err
	}
	var lines []string
	var total int64
	for rows.Next() {
		var town string
		var n, nights int64
		if err := rows.Scan(&town, &n, &nights); err != nil {
			rows.Close()
			return err
		}
		total += n
		lines = append(lines, fmt.Sprintf("%s: %d booking(s), %d nights", town, n, nights))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	t.printf("   report: %s\n", strings.Join(lines, "; "))
	if want := int64(len(sampleBookings) + 1); total != want {
		return fmt.Errorf("report counts %d bookings, want %d", total, want)
	}

	// Read-only for real, even on the primary.
	var id string
	err = reader.QueryRow(ctx, `insert into bookings (id, rental, country, town, nights, booked_at) values ('b-6666', 'x', 'x', 'x', 1, now()) returning id`).Scan(&id)
	if !errors.Is(err, shareddb.ErrReadOnly) {
		return fmt.Errorf("a write through the reader: %v, want ErrReadOnly", err)
	}
	t.printf("   a write through the reader fails: %v\n", err)

	for _, st := range reader.Status() {
		if st.Routed > 0 {
			t.printf("   %s (%s) served %d read(s)\n", st.Name, st.Role, st.Routed)
		}
	}
	s := reader.Stats()
	t.printf("   routing: %d routed, %d fell back to the primary, %d waited for the token\n", s.Routed, s.FellBack, s.Waited)
	return nil
}

// pingReplica reports whether the replica answers and is in recovery.
func pingReplica(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var inRecovery bool
	if err := conn.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return err
	}
	if !inRecovery {
		return errors.New("it is not in recovery (a primary, not a replica)")
	}
	return nil
}
