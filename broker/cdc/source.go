package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/hooks"
	"github.com/go-integration/patterns/internal/pgschema"
)

// Stats are the source's counters since New: a snapshot, read without I/O.
type Stats struct {
	// Changes counts streamed changes the publisher confirmed (ops c, u,
	// d, t; an update that changed the primary key counts as its two
	// messages, d then c).
	Changes uint64
	// Transactions counts streamed transactions whose changes were all
	// confirmed (a transaction with no captured change counts too).
	Transactions uint64
	// SnapshotRows counts snapshot rows (op r) the publisher confirmed.
	SnapshotRows uint64
	// Skipped counts streamed changes not published because the snapshot
	// of their table was taken after they committed (see the package doc).
	Skipped uint64
	// Publishes counts successful Publish calls; PublishFailures failed ones.
	Publishes       uint64
	PublishFailures uint64
	// Streams counts the times Run started streaming from the slot, the
	// snapshot done: once it is 1, every transaction committed afterwards is
	// streamed (a reconnection adds one).
	Streams uint64
	// ReceivedLSN is the WAL position of the last message read from the
	// server; ConfirmedLSN the position the source reports to the server as
	// flushed (at the next status update): every change before it was
	// published. A restart resumes at the last position the server heard.
	ReceivedLSN  pglogrepl.LSN
	ConfirmedLSN pglogrepl.LSN
}

// Lag is how far the slot is behind the server, as the server sees it.
type Lag struct {
	// Bytes is pg_current_wal_lsn() - confirmed_flush_lsn: the WAL
	// written since the last position the source confirmed.
	Bytes int64
	// Retained is pg_current_wal_lsn() - restart_lsn: the WAL the slot
	// keeps on the server's disk.
	Retained int64
	// Time is how old the commit of the oldest change received and not yet
	// confirmed is; zero when the source confirmed everything it received
	// (or nothing was received since Run started).
	Time time.Duration
	// Active reports whether a process streams from the slot.
	Active bool
}

// table is what New learnt about a published table.
type table struct {
	schema, name string
	key          []string // primary key, or replica identity index, columns
}

// Source streams the changes of the tables of a publication to a
// broker.Publisher. See the package doc.
type Source struct {
	cfg     config
	pub     broker.Publisher
	log     *slog.Logger
	connCfg *pgx.ConnConfig // normal connections (snapshot)
	replCfg *pgconn.Config  // replication connections
	pool    *pgxpool.Pool   // checks, state, Lag
	db      string
	// serverVersion is server_version_num: 150000 for 15.0.
	serverVersion int
	tables        map[string]*table // by schema.table
	order         []string          // published tables, sorted
	stateID       string            // the state table, quoted
	stateFull     string            // and as schema.table, unquoted

	// Parts of every envelope, encoded once.
	sourceHead, dbJSON []byte

	changes, transactions, snapshotRows, skipped atomic.Uint64
	publishes, publishFailures, streams          atomic.Uint64
	received, confirmed                          atomic.Uint64
	oldestPending                                atomic.Int64 // unix nanos of the oldest unconfirmed commit; 0: none
	lastWarn                                     atomic.Int64 // unix nanos of the last retained-WAL warning

	publishTracers []PublishTracer
	confirmTracers []ConfirmTracer

	mu       sync.Mutex
	closing  chan struct{}
	runDone  chan struct{}
	hardStop context.CancelFunc
	closed   bool
}

// sessionParams make the server's text output predictable for the decoder,
// on the replication connection (pgoutput formats values with them) and on
// the snapshot's.
var sessionParams = map[string]string{
	"DateStyle":          "ISO, YMD",
	"TimeZone":           "UTC",
	"IntervalStyle":      "iso_8601",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
	"application_name":   "patterns-cdc",
}

// New checks the server and the publication and returns a Source; it does
// not stream yet (Run does). connString is a PostgreSQL URL or key=value
// DSN, as pgx takes it; the Source opens from it a replication connection
// (replication=database) for the slot, a connection for the snapshot and a
// pool of two for its other queries. It checks, failing at once with an error
// naming the fix: the server is not a standby (ErrStandby), wal_level is
// logical (ErrWALLevel), the role may
// replicate (ErrPermission), the publication exists or WithTables says
// what to create (ErrNoPublication), every published table has a primary
// key or a replica identity (ErrNoReplicaIdentity), and the slot, when it
// exists, uses pgoutput on this database (ErrSlot) and is not streamed by
// another process (ErrSlotInUse). It creates the publication
// (WithTables) and the snapshot state table (WithStateTable) when missing,
// but not the slot: Run does, so that the snapshot it exports is used at
// once. The Source never closes pub.
func New(ctx context.Context, connString string, pub broker.Publisher, opts ...Option) (*Source, error) {
	if pub == nil {
		return nil, fmt.Errorf("%w: New needs a publisher", ErrInvalidOption)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	connCfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("%w: connection string: %v", ErrInvalidOption, err)
	}
	for k, v := range sessionParams {
		if k == "application_name" && connCfg.RuntimeParams[k] != "" {
			continue // the caller's name wins
		}
		connCfg.RuntimeParams[k] = v
	}
	replCfg := connCfg.Config.Copy()
	replCfg.RuntimeParams["replication"] = "database"
	poolCfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("%w: connection string: %v", ErrInvalidOption, err)
	}
	poolCfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("cdc: connect: %w", err)
	}
	s := &Source{
		cfg: cfg, pub: pub, connCfg: connCfg, replCfg: replCfg, pool: pool,
		log:     cfg.logger.With("cdc_slot", cfg.slot),
		tables:  map[string]*table{},
		closing: make(chan struct{}),

		publishTracers: hooks.Pick[PublishTracer](cfg.tracers),
		confirmTracers: hooks.Pick[ConfirmTracer](cfg.tracers),
	}
	if err := s.check(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func (s *Source) check(ctx context.Context) error {
	var walLevel, user, db string
	var canReplicate, standby bool
	err := s.pool.QueryRow(ctx, `select current_setting('wal_level'), current_user, current_database(),
  coalesce((select rolreplication or rolsuper from pg_roles where rolname = current_user), false),
  current_setting('server_version_num')::int, pg_is_in_recovery()`).Scan(&walLevel, &user, &db, &canReplicate, &s.serverVersion, &standby)
	if err != nil {
		return fmt.Errorf("cdc: connect: %w", err)
	}
	s.db = db
	s.dbJSON = appendString(nil, []byte(db))
	s.sourceHead = append(append([]byte(`,"source":{"version":"`+Version+`","connector":"postgresql","name":`),
		appendString(nil, []byte(s.cfg.topicPrefix))...), `,"ts_ms":`...)
	// Both can be wrong (a standby of a primary without logical wal_level):
	// name both fixes at once.
	var serverErrs []error
	if standby {
		serverErrs = append(serverErrs, fmt.Errorf("%w (read-only, in recovery): connect to the primary", ErrStandby))
	}
	if walLevel != "logical" {
		serverErrs = append(serverErrs, fmt.Errorf("%w: it is %q: set wal_level = logical (ALTER SYSTEM SET wal_level = logical) and restart the server", ErrWALLevel, walLevel))
	}
	if err := errors.Join(serverErrs...); err != nil {
		return err
	}
	if !canReplicate {
		return fmt.Errorf("%w: role %q may not replicate: ALTER ROLE %s REPLICATION", ErrPermission, user, pgx.Identifier{user}.Sanitize())
	}
	if s.cfg.snapshot {
		id, _, _ := pgschema.ParseTable(s.cfg.stateTable)
		s.stateID = id
		ddl := `create table if not exists ` + id + ` (
  slot text not null,
  schema_name text not null,
  table_name text not null,
  snapshot_lsn pg_lsn,
  started boolean not null default false,
  done boolean not null default false,
  primary key (slot, schema_name, table_name))`
		if err := pgschema.Apply(ctx, s.pool, "broker/cdc create table "+id, ddl); err != nil {
			return wrapPermission(fmt.Errorf("cdc: create the snapshot state table %s (WithStateTable): %w", s.cfg.stateTable, err))
		}
		// A publication FOR ALL TABLES holds it too: the source ignores it.
		if err := s.pool.QueryRow(ctx, `select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.oid = to_regclass($1)`, id).Scan(&s.stateFull); err != nil {
			return fmt.Errorf("cdc: the snapshot state table %s: %w", s.cfg.stateTable, err)
		}
	}
	if err := s.checkPublication(ctx); err != nil {
		return err
	}
	if err := s.checkTables(ctx); err != nil {
		return err
	}
	if err := s.checkSlot(ctx); err != nil {
		return err
	}
	// The replication connection itself: pg_hba.conf may refuse it.
	rc, err := pgconn.ConnectConfig(ctx, s.replCfg)
	if err != nil {
		return fmt.Errorf("%w: replication connection refused (allow it in pg_hba.conf: host replication ...): %w", ErrPermission, err)
	}
	_, err = pglogrepl.IdentifySystem(ctx, rc)
	rc.Close(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("cdc: identify system: %w", err)
	}
	return nil
}

// wrapPermission adds ErrPermission to a PostgreSQL insufficient_privilege error.
func wrapPermission(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42501" {
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	return err
}

func (s *Source) checkPublication(ctx context.Context) error {
	var exists bool
	if err := s.pool.QueryRow(ctx, `select exists(select 1 from pg_publication where pubname = $1)`, s.cfg.publication).Scan(&exists); err != nil {
		return fmt.Errorf("cdc: publication: %w", err)
	}
	if exists {
		return nil
	}
	if len(s.cfg.tables) == 0 {
		return fmt.Errorf("%w: publication %q does not exist: CREATE PUBLICATION %s FOR TABLE <tables>, or pass WithTables to create it",
			ErrNoPublication, s.cfg.publication, pgx.Identifier{s.cfg.publication}.Sanitize())
	}
	idents := make([]string, len(s.cfg.tables))
	for i, t := range s.cfg.tables {
		id, _, err := pgschema.ParseTable(t)
		if err != nil {
			return fmt.Errorf("%w: WithTables(%q): %v", ErrInvalidOption, t, err)
		}
		idents[i] = id
	}
	ddl := `create publication ` + pgx.Identifier{s.cfg.publication}.Sanitize() + ` for table ` + strings.Join(idents, ", ")
	if err := pgschema.Apply(ctx, s.pool, "broker/cdc create publication "+s.cfg.publication, `do $$ begin
if not exists (select 1 from pg_publication where pubname = `+pgschema.Literal(s.cfg.publication)+`) then execute `+pgschema.Literal(ddl)+`; end if;
end $$`); err != nil {
		return wrapPermission(fmt.Errorf("cdc: %s: %w", ddl, err))
	}
	return nil
}

func (s *Source) checkTables(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, `select n.nspname::text, c.relname::text, c.relreplident::text,
  coalesce((select array_agg(a.attname::text order by array_position(i.indkey::int2[], a.attnum))
    from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey::int2[])
    where i.indrelid = c.oid and i.indisprimary), '{}') as pk,
  coalesce((select array_agg(a.attname::text order by array_position(i.indkey::int2[], a.attnum))
    from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey::int2[])
    where i.indrelid = c.oid and i.indisreplident), '{}') as ident
from pg_publication_tables pt
join pg_namespace n on n.nspname = pt.schemaname
join pg_class c on c.relnamespace = n.oid and c.relname = pt.tablename
where pt.pubname = $1
order by 1, 2`, s.cfg.publication)
	if err != nil {
		return fmt.Errorf("cdc: publication tables: %w", err)
	}
	var bad []string
	for rows.Next() {
		var schema, name, ident string
		var pk, identCols []string
		if err := rows.Scan(&schema, &name, &ident, &pk, &identCols); err != nil {
			rows.Close()
			return fmt.Errorf("cdc: publication tables: %w", err)
		}
		if schema+"."+name == s.stateFull {
			continue
		}
		t := &table{schema: schema, name: name, key: pk}
		switch {
		case ident == "n" || (ident == "d" && len(pk) == 0):
			bad = append(bad, pgx.Identifier{schema, name}.Sanitize())
			continue
		case ident == "i" && len(pk) == 0:
			t.key = identCols
		}
		full := schema + "." + name
		s.tables[full] = t
		s.order = append(s.order, full)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("cdc: publication tables: %w", err)
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s: updates and deletes of these rows cannot be identified: add a primary key, or ALTER TABLE %s REPLICA IDENTITY FULL",
			ErrNoReplicaIdentity, strings.Join(bad, ", "), bad[0])
	}
	if len(s.tables) == 0 {
		return fmt.Errorf("%w: publication %q publishes no table: ALTER PUBLICATION %s ADD TABLE <table>",
			ErrNoPublication, s.cfg.publication, pgx.Identifier{s.cfg.publication}.Sanitize())
	}
	return nil
}

func (s *Source) checkSlot(ctx context.Context) error {
	var plugin, db *string
	var active bool
	var pid *int32
	err := s.pool.QueryRow(ctx, `select plugin::text, database::text, active, active_pid from pg_replication_slots where slot_name = $1`, s.cfg.slot).Scan(&plugin, &db, &active, &pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cdc: replication slot: %w", err)
	}
	if plugin == nil || *plugin != "pgoutput" || db == nil || *db != s.db {
		return fmt.Errorf("%w: slot %q exists but is not a pgoutput slot of database %q: use another slot (WithSlot), or drop it (cdc.Drop)", ErrSlot, s.cfg.slot, s.db)
	}
	if active {
		p := int32(0)
		if pid != nil {
			p = *pid
		}
		return fmt.Errorf("%w: slot %q is streamed by the process with pid %d: stop it (select pg_terminate_backend(%d)) or use another slot (WithSlot)", ErrSlotInUse, s.cfg.slot, p, p)
	}
	return nil
}

// Stats returns the source's counters.
func (s *Source) Stats() Stats {
	return Stats{
		Changes:         s.changes.Load(),
		Transactions:    s.transactions.Load(),
		SnapshotRows:    s.snapshotRows.Load(),
		Skipped:         s.skipped.Load(),
		Publishes:       s.publishes.Load(),
		PublishFailures: s.publishFailures.Load(),
		Streams:         s.streams.Load(),
		ReceivedLSN:     pglogrepl.LSN(s.received.Load()),
		ConfirmedLSN:    pglogrepl.LSN(s.confirmed.Load()),
	}
}

// Lag reads the slot's position from the server: it fails when the slot
// does not exist yet (Run creates it), and with ErrClosed after Close.
func (s *Source) Lag(ctx context.Context) (Lag, error) {
	if s.isClosed() {
		return Lag{}, ErrClosed
	}
	var l Lag
	err := s.pool.QueryRow(ctx, `select coalesce(pg_current_wal_lsn() - confirmed_flush_lsn, 0)::int8,
  coalesce(pg_current_wal_lsn() - restart_lsn, 0)::int8, active
from pg_replication_slots where slot_name = $1`, s.cfg.slot).Scan(&l.Bytes, &l.Retained, &l.Active)
	if errors.Is(err, pgx.ErrNoRows) {
		return Lag{}, fmt.Errorf("cdc: slot %q does not exist (yet: Run creates it)", s.cfg.slot)
	}
	if err != nil {
		return Lag{}, fmt.Errorf("cdc: lag: %w", err)
	}
	if o := s.oldestPending.Load(); o != 0 {
		l.Time = max(0, time.Since(time.Unix(0, o)))
	}
	return l, nil
}

// Drop drops the replication slot (when it exists; it fails with
// ErrSlotInUse while a process streams from it), the snapshot progress of
// the slot in the default state table (DefaultStateTable) when it exists,
// and the publication when publication is not empty (when it exists). A
// slot left behind keeps WAL on the server forever: drop the slots you no
// longer read.
func Drop(ctx context.Context, connString, slot, publication string) error {
	return DropWithState(ctx, connString, slot, publication, DefaultStateTable)
}

// DropWithState is Drop for a source that used WithStateTable(stateTable).
func DropWithState(ctx context.Context, connString, slot, publication, stateTable string) error {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return fmt.Errorf("cdc: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var active bool
	var pid *int32
	err = conn.QueryRow(ctx, `select active, active_pid from pg_replication_slots where slot_name = $1`, slot).Scan(&active, &pid)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return fmt.Errorf("cdc: drop slot %q: %w", slot, err)
	case active:
		p := int32(0)
		if pid != nil {
			p = *pid
		}
		return fmt.Errorf("%w: cannot drop slot %q: the process with pid %d streams from it", ErrSlotInUse, slot, p)
	default:
		if _, err := conn.Exec(ctx, `select pg_drop_replication_slot($1)`, slot); err != nil {
			return wrapPermission(fmt.Errorf("cdc: drop slot %q: %w", slot, err))
		}
	}
	if id, _, err := pgschema.ParseTable(stateTable); err == nil {
		var exists bool
		if err := conn.QueryRow(ctx, `select to_regclass($1) is not null`, id).Scan(&exists); err == nil && exists {
			if _, err := conn.Exec(ctx, `delete from `+id+` where slot = $1`, slot); err != nil {
				return fmt.Errorf("cdc: forget the snapshot of slot %q: %w", slot, err)
			}
		}
	}
	if publication != "" {
		if _, err := conn.Exec(ctx, `drop publication if exists `+pgx.Identifier{publication}.Sanitize()); err != nil {
			return wrapPermission(fmt.Errorf("cdc: drop publication %q: %w", publication, err))
		}
	}
	return nil
}

// Close stops the source: Run stops reading, lets the Publish call in
// flight finish for at most the drain timeout (WithDrainTimeout), then
// cancels it, confirms to the server what was published, closes its
// connections and returns ErrClosed; Close then closes the pool, and Lag
// and Run fail with ErrClosed. Changes read but not published are
// read again by the next Run on the slot. Close waits for Run to return
// and may be called more than once; it never closes the publisher.
func (s *Source) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	done, hardStop := s.runDone, s.hardStop
	s.mu.Unlock()
	if done != nil {
		t := time.NewTimer(s.cfg.drainTimeout)
		select {
		case <-done:
		case <-t.C:
			hardStop()
			<-done
		}
		t.Stop()
	}
	s.pool.Close()
	return nil
}

func (s *Source) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
