package shareddb

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is one test's schema on the primary, seen from both servers.
type env struct {
	schema     string
	primaryURL string // with search_path
	replicaURL string // with search_path
	admin      *pgx.Conn
}

// setup gives the test its own schema and an admin connection to the primary
// (which may write), and runs ddl there.
func setup(t *testing.T, ddl ...string) *env {
	t.Helper()
	replica := testenv.ReplicaDatabaseURL(t)
	schema, primaryURL := testenv.Schema(t)
	e := &env{schema: schema, primaryURL: primaryURL, replicaURL: testenv.WithSearchPath(replica, schema)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, primaryURL)
	if err != nil {
		t.Fatalf("connect admin: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	e.admin = c
	for _, s := range ddl {
		e.exec(t, s)
	}
	return e
}

func (e *env) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.admin.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitReplica waits until the replica has replayed everything the primary has now.
func (e *env) waitReplica(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	tok, err := CurrentToken(ctx, e.admin)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctx, e.replicaURL)
	if err != nil {
		t.Fatalf("connect replica: %v", err)
	}
	defer c.Close(context.Background())
	for {
		var l int64
		if err := c.QueryRow(ctx, "select pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8").Scan(&l); err != nil {
			t.Fatalf("replica replay position: %v", err)
		}
		if LSN(l) >= tok.LSN() {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("replica did not replay up to %v within 15 s (at %v): is replay paused?", tok, LSN(l))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// options are quick checks, small pools and a quiet logger, followed by opts.
func (e *env) options(opts ...Option) []Option {
	return append([]Option{
		// Quick, but with room for a loaded machine: a check that times out marks the node down.
		WithCheckInterval(500 * time.Millisecond),
		WithCheckTimeout(500 * time.Millisecond),
		WithPoolConfig(func(_ string, c *pgxpool.Config) { c.MaxConns = 4 }),
		WithLogger(slog.New(slog.DiscardHandler)),
	}, opts...)
}

// reader is a ReplicaReader on the test's primary with e.options(opts...),
// closed when the test ends.
func (e *env) reader(t *testing.T, opts ...Option) *ReplicaReader {
	t.Helper()
	return e.readerAt(t, e.primaryURL, opts...)
}

// readerAt is reader with another URL for the primary (another role).
func (e *env) readerAt(t *testing.T, primaryURL string, opts ...Option) *ReplicaReader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := New(ctx, primaryURL, e.options(opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// onReplica reports whether the read was served by a server in recovery.
func onReplica(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var rec bool
	if err := q.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&rec); err != nil {
		t.Fatalf("select pg_is_in_recovery(): %v", err)
	}
	return rec
}

// withUser returns databaseURL connecting as user.
func withUser(t *testing.T, databaseURL, user string) string {
	t.Helper()
	u, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

// logBuffer is a slog handler target safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// recorder is a tracer recording everything it is told.
type recorder struct {
	mu      sync.Mutex
	starts  []TraceQueryStartData
	ends    []TraceQueryEndData
	retries []TraceQueryRetryData
	checks  []TraceCheckData
	changes []TraceNodeChangeData
	lost    int // Ends and Retries that did not get the context their Start returned
}

func (h *recorder) TraceQueryStart(ctx context.Context, d TraceQueryStartData) context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.starts = append(h.starts, d)
	return context.WithValue(ctx, h, true) // each recorder its own key
}

func (h *recorder) TraceQueryEnd(ctx context.Context, d TraceQueryEndData) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ends = append(h.ends, d)
	if ctx.Value(h) == nil {
		h.lost++
	}
}

func (h *recorder) TraceQueryRetry(ctx context.Context, d TraceQueryRetryData) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.retries = append(h.retries, d)
	if ctx.Value(h) == nil {
		h.lost++
	}
}

func (h *recorder) TraceCheck(_ context.Context, d TraceCheckData) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, d)
}

func (h *recorder) TraceNodeChange(_ context.Context, d TraceNodeChangeData) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.changes = append(h.changes, d)
}

// snapshot returns copies of what was recorded so far.
func (h *recorder) snapshot() recorder {
	h.mu.Lock()
	defer h.mu.Unlock()
	return recorder{
		starts:  append([]TraceQueryStartData(nil), h.starts...),
		ends:    append([]TraceQueryEndData(nil), h.ends...),
		retries: append([]TraceQueryRetryData(nil), h.retries...),
		checks:  append([]TraceCheckData(nil), h.checks...),
		changes: append([]TraceNodeChangeData(nil), h.changes...),
		lost:    h.lost,
	}
}
