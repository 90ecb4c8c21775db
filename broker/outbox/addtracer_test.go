package outbox_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/outbox"
)

// addTracer records Add calls and stamps a header on every message, as a
// propagator injects trace context.
type addTracer struct {
	mu     sync.Mutex
	name   string // the header it adds: "trace-" + name, value the message ID
	starts []outbox.TraceAddStartData
	ends   []outbox.TraceAddEndData
	lost   int               // TraceAddEnd calls without the context of TraceAddStart
	header map[string]string // added to every message besides the stamp
}

type addKey struct{}

func (tr *addTracer) TraceAddStart(ctx context.Context, d outbox.TraceAddStartData) context.Context {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for i := range d.Messages {
		m := &d.Messages[i]
		m.Header["trace-"+tr.name] = m.ID
		for k, v := range tr.header {
			m.Header[k] = v
		}
	}
	// Keep a copy: the slice is not ours to keep.
	c := d
	c.Messages = make([]broker.Message, len(d.Messages))
	for i, m := range d.Messages {
		c.Messages[i] = m
		c.Messages[i].Header = map[string]string{}
		for k, v := range m.Header {
			c.Messages[i].Header[k] = v
		}
	}
	tr.starts = append(tr.starts, c)
	return context.WithValue(ctx, addKey{}, tr.name)
}

func (tr *addTracer) TraceAddEnd(ctx context.Context, d outbox.TraceAddEndData) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if ctx.Value(addKey{}) == nil {
		tr.lost++
	}
	tr.ends = append(tr.ends, d)
}

// allTracer implements the tracer interfaces of both NewTable and NewRelay.
type allTracer struct {
	addTracer
	*tracer
}

// A table's AddTracers see every Add with the messages' IDs filled, add
// headers to copies that are stored and published (the caller's messages
// keep theirs), and run in order around the insert.
func TestAddTracerHeadersAreStoredAndPublished(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tr1, tr2 := &addTracer{name: "one"}, &addTracer{name: "two"}
	tbl, err := outbox.NewTable(outbox.DefaultTable, outbox.WithTracer(tr1), outbox.WithTracer(tr2))
	if err != nil {
		t.Fatal(err)
	}
	c := e.collect(t, 1)
	got := make(chan broker.Message, 16)

	own := map[string]string{"app": "x"}
	msgs := []broker.Message{
		{Key: "a", Payload: []byte("0")},              // nil header
		{Key: "b", Payload: []byte("0"), Header: own}, // a header of the caller's
	}
	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := tbl.Add(ctx, tx, e.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The caller's messages: IDs filled, headers untouched.
	if msgs[0].ID == "" || msgs[1].ID == "" {
		t.Fatalf("IDs not filled: %+v", msgs)
	}
	if msgs[0].Header != nil {
		t.Errorf("the caller's nil header became %v", msgs[0].Header)
	}
	if len(own) != 1 || own["app"] != "x" {
		t.Errorf("the caller's header map was changed: %v", own)
	}
	// The tracers: one Start and one End each, in their context, with the
	// table, the topic, the messages with IDs, and headers never nil.
	for _, tr := range []*addTracer{tr1, tr2} {
		tr.mu.Lock()
		if len(tr.starts) != 1 || len(tr.ends) != 1 || tr.lost != 0 {
			t.Fatalf("tracer %s: %d starts, %d ends, %d lost", tr.name, len(tr.starts), len(tr.ends), tr.lost)
		}
		s, end := tr.starts[0], tr.ends[0]
		tr.mu.Unlock()
		if s.Table != outbox.DefaultTable || s.Topic != e.topic || len(s.Messages) != 2 {
			t.Errorf("tracer %s: start %+v", tr.name, s)
		}
		for i, m := range s.Messages {
			if m.ID != msgs[i].ID || m.Key != msgs[i].Key {
				t.Errorf("tracer %s: message %d is %+v, want ID %s key %s", tr.name, i, m, msgs[i].ID, msgs[i].Key)
			}
		}
		if end.Err != nil || end.Duration <= 0 {
			t.Errorf("tracer %s: end %+v", tr.name, end)
		}
	}
	// The second tracer saw what the first added: they share the copies.
	tr2.mu.Lock()
	if tr2.starts[0].Messages[0].Header["trace-one"] != msgs[0].ID {
		t.Errorf("tracer two did not see tracer one's header: %v", tr2.starts[0].Messages[0].Header)
	}
	tr2.mu.Unlock()

	// Stored in the rows.
	for _, m := range msgs {
		var h map[string]string
		if err := e.db.QueryRow(ctx, `select header from outbox where id = $1`, m.ID).Scan(&h); err != nil {
			t.Fatal(err)
		}
		if h["trace-one"] != m.ID || h["trace-two"] != m.ID {
			t.Errorf("row %s header %v: the tracers' headers are missing", m.ID, h)
		}
		if m.Key == "b" && h["app"] != "x" {
			t.Errorf("row %s header %v: the caller's header is missing", m.ID, h)
		}
	}

	// And published by the relay, to the subscriber.
	pub := &faultyPublisher{Publisher: e.mem, after: func(_ string, ms []broker.Message) {
		for _, m := range ms {
			got <- m
		}
	}}
	run(t, testenv.Pool(t, e.dsn), pub, outbox.WithPollInterval(20*time.Millisecond))
	c.wait(t, 2, 30*time.Second)
	c.check(t, 2)
	for range 2 {
		m := <-got
		if m.Header["trace-one"] != m.ID || m.Header["trace-two"] != m.ID {
			t.Errorf("published message %s header %v: the tracers' headers are missing", m.ID, m.Header)
		}
	}
}

// The package-level Add traces nothing and stores headers as given.
func TestAddWithoutTracerStoresHeadersAsGiven(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ms := []broker.Message{{Key: "k", Header: map[string]string{"a": "1"}}, {Key: "k"}}
	if err := outbox.Add(ctx, e.db, e.topic, ms...); err != nil {
		t.Fatal(err)
	}
	m, n := ms[0], ms[1]
	if len(m.Header) != 1 || n.Header != nil {
		t.Errorf("the caller's headers changed: %v, %v", m.Header, n.Header)
	}
	var h map[string]string
	if err := e.db.QueryRow(ctx, `select header from outbox where id = $1`, m.ID).Scan(&h); err != nil {
		t.Fatal(err)
	}
	if len(h) != 1 || h["a"] != "1" {
		t.Errorf("stored header %v, want a=1", h)
	}
	var null bool
	if err := e.db.QueryRow(ctx, `select header is null from outbox where id = $1`, n.ID).Scan(&null); err != nil || !null {
		t.Errorf("a message without header stored a header (null %v, %v)", null, err)
	}
}

// The tracers' End carries the error of a failed insert, and a header a
// tracer adds that PostgreSQL cannot store is refused before the insert
// (so the caller's transaction stays usable).
func TestAddTracerSeesErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	tr := &addTracer{name: "x"}
	missing, err := outbox.NewTable("missing_outbox", outbox.WithTracer(tr))
	if err != nil {
		t.Fatal(err)
	}
	err = missing.Add(ctx, e.db, e.topic, msg("k", 0))
	if err == nil {
		t.Fatal("Add to a missing table succeeded")
	}
	if len(tr.ends) != 1 || tr.ends[0].Err != err {
		t.Errorf("ends %+v, want the error %v", tr.ends, err)
	}
	// Refused input is not traced.
	if err := missing.Add(ctx, e.db, "", msg("k", 0)); !errors.Is(err, broker.ErrInvalidMessage) {
		t.Errorf("empty topic: %v", err)
	}
	if err := missing.Add(ctx, e.db, e.topic); err != nil {
		t.Errorf("no messages: %v", err)
	}
	if len(tr.starts) != 1 {
		t.Errorf("%d starts; refused input and empty Adds must not be traced", len(tr.starts))
	}

	bad := &addTracer{name: "bad", header: map[string]string{"nul": "a\x00b"}}
	tbl, err := outbox.NewTable(outbox.DefaultTable, outbox.WithTracer(bad))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	err = tbl.Add(ctx, tx, e.topic, msg("k", 0))
	if !errors.Is(err, broker.ErrInvalidMessage) || !strings.Contains(err.Error(), "tracer") {
		t.Errorf("tracer-added NUL: %v, want ErrInvalidMessage naming the tracer", err)
	}
	if len(bad.ends) != 1 || !errors.Is(bad.ends[0].Err, broker.ErrInvalidMessage) {
		t.Errorf("ends %+v, want ErrInvalidMessage", bad.ends)
	}
	if err := outbox.Add(ctx, tx, e.topic, msg("k", 1)); err != nil {
		t.Errorf("the transaction was aborted: %v", err)
	}
}

// addOnly implements only the table's tracer interface.
type addOnly struct{}

func (addOnly) TraceAddStart(ctx context.Context, _ outbox.TraceAddStartData) context.Context {
	return ctx
}
func (addOnly) TraceAddEnd(context.Context, outbox.TraceAddEndData) {}

// WithTracer is checked against the constructor it is given to.
func TestNewTableRejectsBadOptions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bad := []struct {
		opt  outbox.TableOption
		says string
	}{
		{outbox.WithTracer(nil), "WithTracer"},
		{outbox.WithTracer(misspelt{}), "implements none of outbox.AddTracer"},
		{outbox.WithTracer(newTracer()), "implements none of outbox.AddTracer"}, // a relay's tracer
		{outbox.WithTracer(backoffOnly{}), "implements none of outbox.AddTracer"},
		{nil, "nil option"},
	}
	for _, c := range bad {
		if _, err := outbox.NewTable("outbox", c.opt); !errors.Is(err, outbox.ErrInvalidOption) {
			t.Errorf("%s: NewTable = %v, want ErrInvalidOption", c.says, err)
		} else if !strings.Contains(err.Error(), c.says) {
			t.Errorf("NewTable = %v: does not name %s", err, c.says)
		}
	}
	// A bad name is still ErrInvalidTable.
	if _, err := outbox.NewTable("a.b.c", outbox.WithTracer(addOnly{})); !errors.Is(err, outbox.ErrInvalidTable) {
		t.Errorf("bad name with a good option: %v", err)
	}
	// An Add-only tracer is refused by NewRelay.
	if _, err := outbox.NewRelay(e.db, e.mem, outbox.WithTracer(addOnly{})); !errors.Is(err, outbox.ErrInvalidOption) ||
		!strings.Contains(err.Error(), "implements none of outbox.BatchTracer, outbox.BackoffTracer") {
		t.Errorf("NewRelay with an AddTracer: %v", err)
	}
	// One value implementing all three goes to both, through one option value.
	all := outbox.WithTracer(&allTracer{tracer: newTracer()})
	if _, err := outbox.NewTable("outbox", all, outbox.WithTracer(addOnly{})); err != nil {
		t.Errorf("NewTable: %v", err)
	}
	if _, err := outbox.NewRelay(e.db, e.mem, all); err != nil {
		t.Errorf("NewRelay: %v", err)
	}
}

// discardExec accepts every statement without a database.
type discardExec struct{}

func (discardExec) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	return pgconn.CommandTag{}, nil
}

// addAllocsWithoutTracer is what Add allocated before AddTracer existed,
// for the messages of TestAddWithoutTracerAllocatesNothingMore (measured on
// the previous version, go1.26): the tracer hook must cost nothing when
// no tracer is installed.
const addAllocsWithoutTracer = 23

func TestAddWithoutTracerAllocatesNothingMore(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	msgs := []broker.Message{
		{ID: "1", Key: "a", Payload: []byte("x"), Time: now},
		{ID: "2", Key: "b", Payload: []byte("y"), Time: now, Header: map[string]string{"h": "v"}},
	}
	plain, err := outbox.NewTable("outbox")
	if err != nil {
		t.Fatal(err)
	}
	traced, err := outbox.NewTable("outbox", outbox.WithTracer(addOnly{}))
	if err != nil {
		t.Fatal(err)
	}
	add := func(tbl *outbox.Table) func() {
		return func() {
			if err := tbl.Add(ctx, discardExec{}, "topic", msgs...); err != nil {
				t.Fatal(err)
			}
		}
	}
	pkg := testing.AllocsPerRun(100, func() {
		if err := outbox.Add(ctx, discardExec{}, "topic", msgs...); err != nil {
			t.Fatal(err)
		}
	})
	tbl := testing.AllocsPerRun(100, add(plain))
	tr := testing.AllocsPerRun(100, add(traced))
	t.Logf("allocations per Add of 2 messages: package Add %v, Table.Add %v, with a no-op tracer %v", pkg, tbl, tr)
	if pkg > addAllocsWithoutTracer || tbl > addAllocsWithoutTracer {
		t.Errorf("Add without tracer allocates %v (package) and %v (Table), want at most %d as before", pkg, tbl, addAllocsWithoutTracer)
	}
	if tr <= tbl {
		t.Errorf("a tracer costs no allocation (%v <= %v): is it called?", tr, tbl)
	}
	for _, m := range msgs[:1] {
		if m.Header != nil {
			t.Errorf("header of %s became %v", m.ID, m.Header)
		}
	}
}
