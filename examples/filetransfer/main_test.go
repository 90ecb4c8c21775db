package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/go-integration/patterns/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	dsn := testenv.DatabaseURL(t) // skip, or fail under INTEGRATION=required, without PostgreSQL
	t.Setenv("DATABASE_URL", dsn)
	t.Setenv("TMPDIR", t.TempDir())
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := out.String()
	m := regexp.MustCompile(`working in schema (example_filetransfer_[a-z0-9]+) and folder (\S+)\n`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("output does not name the schema and folder:\n%s", got)
	}
	const want = `exported bookings/dt=2024-03-01/bookings-2024-03-01.csv: 3 rows, 130 bytes
exported bookings/dt=2024-03-02/bookings-2024-03-02.csv: 3 rows, 130 bytes
exported bookings/dt=2024-03-03/bookings-2024-03-03.csv: 4 rows, 168 bytes
links: 3 files, missing [2024-03-04]
downloaded 2024-03-02 (3 rows), sha256 matches: true
id,ref,created_at,amount
4,B-4,2024-03-02 04:00:00+00,42.00
5,B-5,2024-03-02 11:00:00+00,52.50
6,B-6,2024-03-02 18:00:00+00,63.00
a link with a changed expiry: GET /dl/bookings/dt=2024-03-02/bookings-2024-03-02.csv: 403 Forbidden
`
	if rest := strings.TrimPrefix(got, m[0]); rest != want {
		t.Errorf("output after the first line:\n%s\nwant:\n%s", rest, want)
	}

	// The program removed its folder and dropped its schema.
	if _, err := os.Stat(m[2]); !os.IsNotExist(err) {
		t.Errorf("folder %s was left behind (stat: %v)", m[2], err)
	}
	testenv.SchemaGone(t, dsn, m[1])
}

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
