package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/go-integration/patterns/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	dsn := testenv.DatabaseURL(t) // skips, or fails under INTEGRATION=required, without PostgreSQL
	t.Setenv("DATABASE_URL", dsn)
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		`warehouse got op r of orders: before null, after {"id":"o-1","status":"new","total_cents":4200}`,
		`warehouse got op r of orders: before null, after {"id":"o-2","status":"new","total_cents":990}`,
		`warehouse got op u of orders: before null, after {"id":"o-1","status":"paid","total_cents":4200}` + "\n" +
			`warehouse got op c of orders: before null, after {"id":"o-3","status":"new","total_cents":15000}` + "\n" +
			`warehouse got op d of orders: before {"id":"o-2","status":null,"total_cents":null}, after null`,
		"source: 2 snapshot rows and 3 changes published and confirmed\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}

	// The program dropped its schema, its slot and its publication.
	m := regexp.MustCompile(`schema (example_cdc_[a-z0-9]+)`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("output does not name the schema:\n%s", got)
	}
	testenv.SchemaGone(t, dsn, m[1])
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var left int
	if err := conn.QueryRow(context.Background(), `select (select count(*) from pg_replication_slots where slot_name = $1)
		+ (select count(*) from pg_publication where pubname = $1)`, m[1]).Scan(&left); err != nil || left != 0 {
		t.Errorf("slot or publication %s left behind (%d, %v)", m[1], left, err)
	}
}

// Without PostgreSQL the program says what it needs and how to start it.
func TestRunWithoutPostgres(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:1/test?connect_timeout=2")
	var out bytes.Buffer
	err := run(context.Background(), &out)
	if err == nil || !strings.Contains(err.Error(), "needs PostgreSQL at 127.0.0.1:1: start it with scripts/services") {
		t.Fatalf("run without PostgreSQL: %v, want an error naming PostgreSQL and scripts/services", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed before failing:\n%s", out.String())
	}
}
