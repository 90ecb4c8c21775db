package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/hooks"
	"github.com/go-integration/patterns/internal/pgschema"
)

// DefaultTable is the table Add, Migrate and a Relay without WithTable use.
// It is unqualified, so it lives in the connection's search_path.
const DefaultTable = "outbox"

// Buckets is how many ordering buckets the outbox has. Each message goes to
// bucket hash(Key) % Buckets; a relay publishes a bucket only while it holds
// that bucket's lock, so two relays never publish the same key at once. It is
// also the most relays (or workers) that can publish in parallel.
const Buckets = 64

// ErrInvalidTable is returned for a table name that is empty or has more than
// two dot-separated parts.
var ErrInvalidTable = errors.New("outbox: invalid table name")

// Execer is what Add writes through: a pgx.Tx, or anything with the same Exec
// (pgx.Conn, pgxpool.Pool, pgxpool.Conn). Pass the transaction that writes the
// business data, so the messages commit or roll back with it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Table is an outbox table: where Add writes and a Relay reads. Build it with
// NewTable; it is safe for concurrent use.
type Table struct {
	name  string // as given
	ident string // quoted SQL identifier, possibly schema-qualified
	lit   string // ident as a SQL string literal, for ::regclass

	addTracers []AddTracer

	insertSQL string
}

// NewTable returns the outbox table called name: "outbox" or "schema.outbox"
// (case-sensitive; quoted as needed). It returns ErrInvalidTable for an empty
// name or one with more than one dot, and ErrInvalidOption for a bad option.
// Its only option is WithTracer, with an AddTracer: build the table once,
// at start-up, and Add through it to trace the writes (to carry the
// caller's trace context in the rows, with telemetry.Outbox for example).
// Several Table values may name the same table.
func NewTable(name string, opts ...TableOption) (*Table, error) {
	ident, _, err := pgschema.ParseTable(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %q", ErrInvalidTable, name)
	}
	cfg, err := newTableConfig(opts)
	if err != nil {
		return nil, err
	}
	t := &Table{name: name, ident: ident, lit: "'" + strings.ReplaceAll(ident, "'", "''") + "'",
		addTracers: hooks.Pick[AddTracer](cfg.tracers)}
	t.insertSQL = `with ins as (
  insert into ` + t.ident + ` (id, topic, key, bucket, header, payload, priority, event_time)
  select u.id, $1, u.key, u.bucket, u.header::jsonb, u.payload, u.priority, u.event_time
  from unnest($2::text[], $3::text[], $4::int2[], $5::text[], $6::bytea[], $7::int2[], $8::timestamptz[])
    as u(id, key, bucket, header, payload, priority, event_time)
)
select pg_notify('outbox_' || ` + t.lit + `::regclass::oid::text, '')`
	return t, nil
}

var defaultTable = mustTable(DefaultTable)

func mustTable(name string) *Table {
	t, err := NewTable(name)
	if err != nil {
		panic(err)
	}
	return t
}

// Name returns the table name as given to NewTable.
func (t *Table) Name() string { return t.name }

// SQL returns the statements that create the table and its indexes, for
// migration tools that want a file rather than Migrate. They are idempotent
// ("if not exists") and bring a table created by an older version up to date.
//
// Columns: seq orders the outbox (identity); id, topic, key, header (jsonb),
// payload, priority and event_time carry the broker.Message; bucket is
// hash(key) % Buckets; created_at is when the row was written; published_at is
// set once the publisher confirmed it, or refused it as invalid (then error
// holds the reason). Indexes: pending rows by (bucket, seq), partial so it
// stays small however many published rows are kept, which is the only index
// the relay reads pending rows through; and published rows by published_at
// for Cleanup. Older versions also indexed pending rows by seq alone: that
// index is dropped (dropping it takes a brief exclusive lock on the table,
// once).
func (t *Table) Schema() string {
	base := strings.ReplaceAll(t.name, ".", "_")
	idx := func(suffix string) string { return pgx.Identifier{base + "_" + suffix}.Sanitize() }
	// Indexes live in their table's schema: a qualified drop names it.
	schemaIdx := func(suffix string) string {
		if schema, _, ok := strings.Cut(t.name, "."); ok {
			return pgx.Identifier{schema, base + "_" + suffix}.Sanitize()
		}
		return idx(suffix)
	}
	return `create table if not exists ` + t.ident + ` (
  seq          bigint generated always as identity primary key,
  id           text        not null,
  topic        text        not null,
  key          text        not null default '',
  bucket       smallint    not null,
  header       jsonb,
  payload      bytea       not null,
  priority     smallint    not null default 0,
  event_time   timestamptz not null,
  created_at   timestamptz not null default now(),
  published_at timestamptz,
  error        text
);
create index if not exists ` + idx("pending_bucket") + ` on ` + t.ident + ` (bucket, seq) where published_at is null;
create index if not exists ` + idx("published_at") + ` on ` + t.ident + ` (published_at) where published_at is not null;
drop index if exists ` + schemaIdx("pending_seq") + `;
`
}

// migrateKey is the advisory-lock key of Migrate; older versions used the
// same, so old and new instances starting together serialize too.
func (t *Table) migrateKey() string { return "go-integration/patterns/outbox migrate " + t.ident }

// Migrate creates the table and its indexes if they do not exist, and updates
// those of an older version (see SQL). It runs as one implicit transaction
// under an advisory lock, so concurrent Migrate calls (several instances
// starting at once) are safe.
func (t *Table) Migrate(ctx context.Context, db Execer) error {
	if err := pgschema.Apply(ctx, db, t.migrateKey(), t.Schema()); err != nil {
		return fmt.Errorf("outbox: migrate %s: %w", t.name, err)
	}
	return nil
}

// Migrate creates the DefaultTable and its indexes in db's search_path; see Table.Migrate.
func Migrate(ctx context.Context, db Execer) error { return defaultTable.Migrate(ctx, db) }

// Add writes msgs for topic to the DefaultTable through tx; see Table.Add.
// It traces nothing: to trace Add (and carry the caller's trace context in
// the rows), build the table with NewTable(DefaultTable, WithTracer(t)) and
// call its Add.
func Add(ctx context.Context, tx Execer, topic string, msgs ...broker.Message) error {
	return defaultTable.Add(ctx, tx, topic, msgs...)
}

// Add writes msgs for topic to the outbox through tx, in one statement, and
// notifies listening relays when tx commits. Like Publish, it fills empty IDs
// and zero Times on msgs in place: the ID is kept when the relay publishes, so
// consumers can deduplicate redeliveries on it. Messages are published in the
// order given; across transactions, a key's messages are published in the
// order their rows were inserted (seq) when the relay sees them together, and
// in commit order otherwise (see docs/outbox.md).
//
// Message.Time is stored to the microsecond (PostgreSQL timestamptz); Topic,
// Attempt and Raw are not stored. It returns broker.ErrInvalidMessage, without
// touching tx, for an empty topic and for a topic, ID, key or header that is
// not valid UTF-8 or holds a NUL byte (PostgreSQL text cannot store them).
// Add with no messages does nothing.
//
// The table's AddTracers (WithTracer) are called around the insert, and the
// headers they add to their copies of the messages (trace context) are the
// ones stored; msgs' own Header maps are left as they are.
func (t *Table) Add(ctx context.Context, tx Execer, topic string, msgs ...broker.Message) error {
	if err := broker.ValidateTopic(topic); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := checkText("topic", topic); err != nil {
		return err
	}
	for i := range msgs {
		if err := checkMessage(&msgs[i]); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	broker.Prepare(msgs, time.Now())
	if len(t.addTracers) > 0 {
		return t.tracedAdd(ctx, tx, topic, msgs)
	}
	return t.insert(ctx, tx, topic, msgs, nil)
}

// tracedAdd calls the AddTracers around the insert, with copies of msgs
// whose Header maps are the tracers' to add to; those are stored.
func (t *Table) tracedAdd(ctx context.Context, tx Execer, topic string, msgs []broker.Message) error {
	traced := make([]broker.Message, len(msgs))
	copy(traced, msgs)
	for i := range traced {
		h := make(map[string]string, len(msgs[i].Header)+2) // room for traceparent and tracestate
		maps.Copy(h, msgs[i].Header)
		traced[i].Header = h
	}
	start := time.Now()
	for _, tr := range t.addTracers {
		ctx = tr.TraceAddStart(ctx, TraceAddStartData{Table: t.name, Topic: topic, Messages: traced})
	}
	var err error
	for i := range traced {
		if err = checkHeader(traced[i].Header); err != nil {
			err = fmt.Errorf("message %d: added by a tracer: %w", i, err)
			break
		}
	}
	if err == nil {
		err = t.insert(ctx, tx, topic, msgs, traced)
	}
	end := TraceAddEndData{Err: err, Duration: time.Since(start)}
	for _, tr := range t.addTracers {
		tr.TraceAddEnd(ctx, end)
	}
	return err
}

// insert writes msgs in one statement; the headers come from traced when
// it is not nil (the tracers' copies), else from msgs.
func (t *Table) insert(ctx context.Context, tx Execer, topic string, msgs, traced []broker.Message) error {
	if traced == nil {
		traced = msgs
	}
	n := len(msgs)
	ids := make([]string, n)
	keys := make([]string, n)
	buckets := make([]int16, n)
	headers := make([]*string, n) // nil is NULL
	payloads := make([][]byte, n)
	prios := make([]int16, n)
	times := make([]time.Time, n)
	for i := range msgs {
		m := &msgs[i]
		ids[i] = m.ID
		keys[i] = m.Key
		buckets[i] = int16(Bucket(m.Key))
		if h := traced[i].Header; len(h) > 0 {
			b, err := json.Marshal(h)
			if err != nil {
				return fmt.Errorf("%w: header: %v", broker.ErrInvalidMessage, err)
			}
			js := string(b)
			headers[i] = &js
		}
		payloads[i] = m.Payload
		if payloads[i] == nil {
			payloads[i] = []byte{}
		}
		prios[i] = int16(m.Priority)
		times[i] = m.Time
	}
	if _, err := tx.Exec(ctx, t.insertSQL, topic, ids, keys, buckets, headers, payloads, prios, times); err != nil {
		return fmt.Errorf("outbox: add to %s: %w", t.name, err)
	}
	return nil
}

// checkText refuses what PostgreSQL text and jsonb cannot store as given: a
// NUL byte or invalid UTF-8. Refusing it before the insert keeps the caller's
// transaction usable, and keeps JSON encoding from replacing bad bytes silently.
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %q is not valid UTF-8", broker.ErrInvalidMessage, what, s)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%w: %s %q contains a NUL byte", broker.ErrInvalidMessage, what, s)
	}
	return nil
}

func checkMessage(m *broker.Message) error {
	if err := checkText("ID", m.ID); err != nil {
		return err
	}
	if err := checkText("key", m.Key); err != nil {
		return err
	}
	return checkHeader(m.Header)
}

func checkHeader(h map[string]string) error {
	for k, v := range h {
		if err := checkText("header name", k); err != nil {
			return err
		}
		if err := checkText("header "+k, v); err != nil {
			return err
		}
	}
	return nil
}

// Bucket returns the ordering bucket of key: FNV-1a of key modulo Buckets.
func Bucket(key string) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % Buckets)
}
