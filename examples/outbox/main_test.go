package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

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
		"committed order o-1 with event orders.fr.o-1\n",
		"rolled back order o-2: payment declined\n",
		`billing received orders.fr.o-1 {"id":"o-1","total_cents":4200}, same ID as written: true` + "\n",
		// the rolled-back order left neither a row nor an event
		"relay: published 1, pending 0; tables: 1 order, 1 outbox row\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "o-2\"") {
		t.Errorf("the rolled-back order's event was published:\n%s", got)
	}

	// The program dropped its schema.
	m := regexp.MustCompile(`schema (example_outbox_[a-z0-9]+)`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("output does not name the schema:\n%s", got)
	}
	testenv.SchemaGone(t, dsn, m[1])
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
