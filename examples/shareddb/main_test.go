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
	primary := testenv.DatabaseURL(t) // skip, or fail under INTEGRATION=required, without the servers
	t.Setenv("DATABASE_URL", primary)
	t.Setenv("REPLICA_DATABASE_URL", testenv.ReplicaDatabaseURL(t))
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := out.String()
	m := regexp.MustCompile(`owner wrote 3 orders in (example_shareddb_[a-z0-9]+)\.orders`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("output does not name the schema:\n%s", got)
	}
	schema := m[1]
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^contract verified$`),
		// the read saw the owner's write, on the replica
		regexp.MustCompile(`(?m)^read after the owner's write: 3 orders, total 42\.00, served by a replica: true$`),
		regexp.MustCompile(`(?m)^node primary +role primary +healthy true +in recovery false .* routed 0$`),
		regexp.MustCompile(`(?m)^node replica1 +role replica +healthy true +in recovery true .* routed 1$`),
		regexp.MustCompile(`(?m)^stats: routed 1, fell back 0, waited for the token [01]$`),
		regexp.MustCompile(`(?m)^a write through the reader: ErrReadOnly=true$`),
		// the owner's migration: both differences, named
		regexp.MustCompile(`(?m)^contract drift: column ` + schema + `\.orders\.total: type text, want numeric$`),
		regexp.MustCompile(`(?m)^contract drift: missing column ` + schema + `\.orders\.placed_at \(want timestamptz\)$`),
	} {
		if !want.MatchString(got) {
			t.Errorf("output does not match %s:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "contract drift:"); n != 2 {
		t.Errorf("%d drift lines, want 2:\n%s", n, got)
	}

	testenv.SchemaGone(t, primary, schema)
}

// Without the primary, or without the replica, the program names what it needs.
func TestRunWithoutServers(t *testing.T) {
	const down = "postgres://postgres@127.0.0.1:1/test?connect_timeout=2"
	t.Run("primary", func(t *testing.T) {
		t.Setenv("DATABASE_URL", down)
		err := run(context.Background(), new(bytes.Buffer))
		if err == nil || !strings.Contains(err.Error(), "needs PostgreSQL at 127.0.0.1:1: start it with scripts/services") {
			t.Fatalf("run without the primary: %v", err)
		}
	})
	t.Run("replica", func(t *testing.T) {
		t.Setenv("DATABASE_URL", testenv.DatabaseURL(t))
		t.Setenv("REPLICA_DATABASE_URL", down)
		var out bytes.Buffer
		err := run(context.Background(), &out)
		if err == nil || !strings.Contains(err.Error(), "needs the PostgreSQL replica at 127.0.0.1:1: start it with scripts/services") {
			t.Fatalf("run without the replica: %v", err)
		}
		if out.Len() != 0 {
			t.Errorf("wrote before failing (and may have left a schema):\n%s", out.String())
		}
	})
}
