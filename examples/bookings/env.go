package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/shareddb"
)

// Where the services are, overridable from the environment. Kafka (kfake),
// S3 (gofakes3) and the broker of the routed events (memory) run in-process.
const (
	defaultDatabaseURL        = "postgres://postgres@127.0.0.1:5432/test"
	defaultReplicaDatabaseURL = "postgres://postgres@127.0.0.1:5433/test"
	defaultAMQPURL            = "amqp://guest:guest@127.0.0.1:5672/"
)

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// env is what the steps share: the monolith's database, when there is one.
type env struct {
	databaseURL string        // primary, with search_path set to schema
	schema      string        // bookings_tour_<random>, dropped at the end
	pool        *pgxpool.Pool // the monolith's pool; nil without PostgreSQL
	noDB        string        // why there is no database, when pool is nil
	reader      *shareddb.ReplicaReader
}

// needDB returns an errSkip when the step cannot run without PostgreSQL.
func (e *env) needDB() error {
	if e.pool == nil {
		return errSkip{"needs PostgreSQL: " + e.noDB}
	}
	return nil
}

// openDB connects to DATABASE_URL and creates a schema of the tour's own, so
// that runs never collide; closeDB drops it.
func (e *env) openDB(ctx context.Context, t *tour) {
	base := getenv("DATABASE_URL", defaultDatabaseURL)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err == nil {
		err = conn.Ping(ctx)
	}
	if err != nil {
		e.noDB = fmt.Sprintf("DATABASE_URL=%s does not answer", redact(base))
		t.printf("   PostgreSQL: not available, %s: %s\n", e.noDB, brief(err))
		t.printf("   steps that need it (outbox, reporting, daily export, change data capture) will be skipped\n")
		return
	}
	defer conn.Close(ctx)
	e.schema = "bookings_tour_" + randomHex(4)
	if _, err := conn.Exec(ctx, "create schema "+pgx.Identifier{e.schema}.Sanitize()); err != nil {
		e.noDB = fmt.Sprintf("create schema: %v", err)
		t.printf("   PostgreSQL: %s\n", e.noDB)
		return
	}
	e.databaseURL = withSearchPath(base, e.schema)
	pool, err := pgxpool.New(ctx, e.databaseURL)
	if err != nil {
		e.noDB = fmt.Sprintf("pool: %v", err)
		e.dropSchema(base)
		return
	}
	e.pool = pool
	t.printf("   PostgreSQL: %s, schema %s (dropped at the end)\n", redact(base), e.schema)
}

func (e *env) closeDB(t *tour) {
	if e.reader != nil {
		_ = e.reader.Close()
	}
	if e.pool == nil {
		return
	}
	e.pool.Close()
	if err := e.dropSchema(getenv("DATABASE_URL", defaultDatabaseURL)); err != nil {
		t.printf("   could not drop schema %s: %v\n", e.schema, err)
		return
	}
	t.printf("\n   dropped schema %s\n", e.schema)
}

func (e *env) dropSchema(base string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "drop schema if exists "+pgx.Identifier{e.schema}.Sanitize()+" cascade")
	return err
}

// withSearchPath returns databaseURL with search_path set to schema.
func withSearchPath(databaseURL, schema string) string {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return databaseURL
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// brief returns the last line of err's message: pgx lists one line per
// address it tried, each ending with the cause.
func brief(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// redact hides a URL's password before it is printed.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Redacted()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// logger returns a slog.Logger that prints the library's warnings into the
// tour's output, indented like the rest.
func (t *tour) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

type logWriter struct{ t *tour }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.printf("   log: %s", p)
	return len(p), nil
}
