package cdc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/pgschema"
)

// errDrainTimeout cancels the Publish call in flight once Close's drain
// timeout passed.
var errDrainTimeout = errors.New("cdc: drain timeout")

// errStopped ends a session because Run is stopping (Close or ctx).
var errStopped = errors.New("cdc: stopping")

// Run takes the initial snapshot when it is due, then streams changes from
// the slot to the publisher until ctx ends (it returns nil), Close is
// called (ErrClosed) or a fatal error: the publisher rejected a change
// (ErrRejected), the publisher was closed (an error wrapping
// broker.ErrClosed), or the server refused something retrying cannot fix.
// It creates the slot when it does not exist. A lost connection is
// reopened, with backoff, and streaming resumes from the last confirmed
// position; a failing Publish is retried, with backoff, without reading
// further (the slot keeps the WAL meanwhile, and the source logs how much).
// A slot another process took after New is waited for the same way: Run
// retries until it is free. Run returns ErrRunning when the source already
// runs.
func (s *Source) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.runDone != nil {
		s.mu.Unlock()
		return ErrRunning
	}
	done := make(chan struct{})
	hard, stop := context.WithCancelCause(ctx)
	s.runDone = done
	s.hardStop = func() { stop(errDrainTimeout) }
	s.mu.Unlock()

	soft, softStop := context.WithCancel(hard)
	watch := make(chan struct{})
	go func() {
		defer close(watch)
		select {
		case <-s.closing:
			softStop()
		case <-soft.Done():
		}
	}()
	err := s.run(hard, soft)
	softStop()
	<-watch
	stop(nil)

	s.mu.Lock()
	s.runDone, s.hardStop = nil, nil
	closed := s.closed
	s.mu.Unlock()
	close(done)
	switch {
	case err != nil:
		return err
	case closed:
		return ErrClosed
	}
	return nil
}

func (s *Source) run(hard, soft context.Context) error {
	for n := 0; ; {
		streams := s.streams.Load()
		err := s.session(hard, soft)
		if soft.Err() != nil {
			return nil
		}
		if err == nil || fatal(err) {
			return err
		}
		if s.streams.Load() > streams {
			n = 0 // it streamed: a new failure, not the same one again
		}
		n++
		s.log.Warn("cdc: replication session failed; reconnecting", "attempt", n, "error", err)
		if !s.cfg.backoff.Sleep(soft, nil, n) {
			return nil
		}
	}
}

// fatal tells the errors Run stops with from those a new session may fix
// (a lost connection, a server restarting, the slot still held by the
// session before this one).
func fatal(err error) bool {
	if errors.Is(err, ErrRejected) || errors.Is(err, ErrSlotLost) || errors.Is(err, broker.ErrClosed) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "57"), strings.HasPrefix(pe.Code, "53"),
			pe.Code == "55006", pe.Code == "40001", pe.Code == "40P01":
			return false
		}
		return true
	}
	return false
}

// session runs one replication connection: slot, snapshot, stream.
func (s *Source) session(hard, soft context.Context) error {
	rconn, err := pgconn.ConnectConfig(soft, s.replCfg)
	if err != nil {
		return fmt.Errorf("cdc: replication connection: %w", err)
	}
	defer closeConn(rconn)

	var start pglogrepl.LSN
	var exists bool
	// The snapshot LSN of each table whose snapshot is done: the stream
	// skips the changes committed before it.
	skip := map[string]pglogrepl.LSN{}
	err = s.pool.QueryRow(soft, `select confirmed_flush_lsn from pg_replication_slots where slot_name = $1`, s.cfg.slot).Scan(&start)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return fmt.Errorf("cdc: read slot: %w", err)
	default:
		exists = true
	}
	if !exists {
		if err := s.checkLost(soft); err != nil {
			return err
		}
		if s.cfg.snapshot {
			// Recorded before the slot exists: a crash between the two
			// leaves tables pending, which the next session snapshots.
			schemas, names := make([]string, len(s.order)), make([]string, len(s.order))
			for i, full := range s.order {
				schemas[i], names[i] = s.tables[full].schema, s.tables[full].name
			}
			if _, err := s.pool.Exec(soft, `insert into `+s.stateID+` (slot, schema_name, table_name)
select $1, t.s, t.n from unnest($2::text[], $3::text[]) as t(s, n)
on conflict (slot, schema_name, table_name) do update set snapshot_lsn = null, started = false, done = false`, s.cfg.slot, schemas, names); err != nil {
				return fmt.Errorf("cdc: record snapshot state: %w", err)
			}
		}
		action := "NOEXPORT_SNAPSHOT"
		if s.cfg.snapshot {
			action = "EXPORT_SNAPSHOT"
		}
		res, err := pglogrepl.CreateReplicationSlot(soft, rconn, s.cfg.slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{SnapshotAction: action, Mode: pglogrepl.LogicalReplication})
		if err != nil {
			return wrapPermission(fmt.Errorf("cdc: create slot %q: %w", s.cfg.slot, err))
		}
		if start, err = pglogrepl.ParseLSN(res.ConsistentPoint); err != nil {
			return fmt.Errorf("cdc: create slot %q: consistent point: %w", s.cfg.slot, err)
		}
		s.log.Info("cdc: created replication slot", "consistent_point", start)
		if s.cfg.snapshot {
			// The exported snapshot lives while rconn stays idle: use it now.
			pending, err := s.readState(soft, skip)
			if err != nil {
				return err
			}
			if err := s.snapshot(hard, soft, res.SnapshotName, start, pending, skip); err != nil {
				return err
			}
		}
	} else if s.cfg.snapshot {
		if err := s.resumeSnapshot(hard, soft, skip); err != nil {
			return err
		}
	}
	if c := pglogrepl.LSN(s.confirmed.Load()); start > c {
		s.confirmed.Store(uint64(start))
	}
	return s.stream(hard, soft, rconn, skip)
}

// checkLost returns ErrSlotLost when the slot is missing but was there
// before: this source received from it, or an earlier one recorded a
// snapshot started under it. With WithRecreateLostSlot it logs that at
// Error and returns nil, so that the caller creates a new slot.
func (s *Source) checkLost(ctx context.Context) error {
	had := s.received.Load() != 0 || s.confirmed.Load() != 0
	if !had && s.cfg.snapshot {
		if err := s.pool.QueryRow(ctx, `select exists (select 1 from `+s.stateID+` where slot = $1 and (started or done))`, s.cfg.slot).Scan(&had); err != nil {
			return fmt.Errorf("cdc: read snapshot state: %w", err)
		}
	}
	if !had {
		return nil
	}
	last := pglogrepl.LSN(s.confirmed.Load())
	if !s.cfg.recreateLost {
		return fmt.Errorf("%w: slot %q does not exist any more (dropped, or a failover to a server without it: PostgreSQL before 17 does not copy logical slots to standbys); the changes after %s cannot be read: start over with a new slot and a full snapshot (WithRecreateLostSlot, or DropWithState and Run again)", ErrSlotLost, s.cfg.slot, last)
	}
	s.log.Error("cdc: the replication slot is gone; creating a new one and taking a new snapshot: changes made while no slot existed are not published, consumers must treat the snapshot as a full resync",
		"last_confirmed", last)
	return nil
}

// closeConn closes a replication connection, waiting at most 5 s for the
// server.
func closeConn(c *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

// resumeSnapshot snapshots the tables whose snapshot did not finish, from
// a fresh snapshot exported by a temporary slot: its consistent point
// says which streamed changes that snapshot already holds. It fills skip
// as readState does.
func (s *Source) resumeSnapshot(hard, soft context.Context, skip map[string]pglogrepl.LSN) error {
	tables, err := s.readState(soft, skip)
	if err != nil {
		return err
	}
	if len(tables) == 0 {
		return nil
	}
	tmp, err := pgconn.ConnectConfig(soft, s.replCfg)
	if err != nil {
		return fmt.Errorf("cdc: replication connection: %w", err)
	}
	defer closeConn(tmp)
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	res, err := pglogrepl.CreateReplicationSlot(soft, tmp, "cdc_snap_"+hex.EncodeToString(rnd[:]), "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication})
	if err != nil {
		return wrapPermission(fmt.Errorf("cdc: create a temporary slot to resume the snapshot: %w", err))
	}
	at, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return fmt.Errorf("cdc: temporary slot: consistent point: %w", err)
	}
	s.log.Info("cdc: resuming the snapshot", "tables", len(tables), "snapshot_lsn", at)
	return s.snapshot(hard, soft, res.SnapshotName, at, tables, skip)
}

// snapshot publishes every row of tables (the pending ones) as read by the
// exported snapshot name, taken at LSN at, marks each table done once all
// its rows are confirmed and adds its snapshot LSN to skip.
func (s *Source) snapshot(hard, soft context.Context, name string, at pglogrepl.LSN, tables [][2]string, skip map[string]pglogrepl.LSN) error {
	// A table some of whose rows were published keeps the LSN of that
	// first snapshot: the stream replays its changes from there (see the
	// package doc); the others take this snapshot's.
	if _, err := s.pool.Exec(soft, `update `+s.stateID+` set snapshot_lsn = $2 where slot = $1 and not done and not started`, s.cfg.slot, at); err != nil {
		return fmt.Errorf("cdc: record snapshot state: %w", err)
	}
	conn, err := pgx.ConnectConfig(soft, s.connCfg)
	if err != nil {
		return fmt.Errorf("cdc: snapshot connection: %w", err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(soft, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("cdc: snapshot: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(soft, `set transaction snapshot `+pgschema.Literal(name)); err != nil {
		return fmt.Errorf("cdc: import snapshot %s: %w", name, err)
	}
	for _, t := range tables {
		if err := s.snapshotTable(hard, soft, tx, t[0], t[1], at); err != nil {
			return err
		}
		var done *pglogrepl.LSN // at, or a started table's earlier snapshot LSN
		if err := s.pool.QueryRow(soft, `update `+s.stateID+` set done = true where slot = $1 and schema_name = $2 and table_name = $3 returning snapshot_lsn`, s.cfg.slot, t[0], t[1]).Scan(&done); err != nil {
			return fmt.Errorf("cdc: record snapshot state: %w", err)
		}
		if done != nil {
			skip[t[0]+"."+t[1]] = *done
		}
	}
	s.log.Info("cdc: snapshot done", "tables", len(tables), "snapshot_lsn", at)
	return tx.Commit(soft)
}

// readState reads the slot's snapshot state in one query: it returns the
// tables whose snapshot is not done, as (schema, table) sorted by
// schema.table, and puts the snapshot LSN of the done ones in skip.
func (s *Source) readState(ctx context.Context, skip map[string]pglogrepl.LSN) ([][2]string, error) {
	rows, err := s.pool.Query(ctx, `select schema_name, table_name, snapshot_lsn, done from `+s.stateID+` where slot = $1`, s.cfg.slot)
	if err != nil {
		return nil, fmt.Errorf("cdc: read snapshot state: %w", err)
	}
	var pending [][2]string
	var t [2]string
	var at *pglogrepl.LSN
	var done bool
	_, err = pgx.ForEachRow(rows, []any{&t[0], &t[1], &at, &done}, func() error {
		switch {
		case !done:
			pending = append(pending, t)
		case at != nil:
			skip[t[0]+"."+t[1]] = *at
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cdc: read snapshot state: %w", err)
	}
	slices.SortFunc(pending, func(a, b [2]string) int { return strings.Compare(a[0]+"."+a[1], b[0]+"."+b[1]) })
	return pending, nil
}

func (s *Source) snapshotTable(hard, soft context.Context, tx pgx.Tx, schema, name string, at pglogrepl.LSN) error {
	var key []string
	if t, ok := s.tables[schema+"."+name]; ok {
		key = t.key
	}
	query, err := s.snapshotQuery(soft, tx, schema, name)
	if err != nil {
		return err
	}
	rows, err := tx.Query(soft, query, pgx.QueryResultFormats{pgx.TextFormatCode})
	if err != nil {
		return fmt.Errorf("cdc: snapshot %s.%s: %w", schema, name, err)
	}
	defer rows.Close()
	fds := rows.FieldDescriptions()
	cols := make([]column, len(fds))
	for i, fd := range fds {
		cols[i] = column{raw: fd.Name, name: fieldName(fd.Name), conv: converter(fd.DataTypeOID, fd.TypeModifier, s.cfg.decimal)}
	}
	rel := s.newRelation(schema, name, cols, key)
	batch := make([]broker.Message, 0, s.cfg.maxBatch)
	started := false
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if !started {
			// Recorded before the first row goes out: a table with rows
			// published must never have its earlier changes skipped.
			if _, err := s.pool.Exec(soft, `update `+s.stateID+` set started = true where slot = $1 and schema_name = $2 and table_name = $3`, s.cfg.slot, schema, name); err != nil {
				return fmt.Errorf("cdc: record snapshot state: %w", err)
			}
			started = true
		}
		if err := s.publish(hard, soft, rel.topic, batch, true); err != nil {
			return err
		}
		s.snapshotRows.Add(uint64(len(batch)))
		batch = make([]broker.Message, 0, s.cfg.maxBatch)
		return nil
	}
	for rows.Next() {
		raw := rows.RawValues()
		row := make([]tupleCol, len(raw))
		buf := make([]byte, 0, rawLen(raw))
		for i, v := range raw {
			if v == nil {
				row[i].kind = 'n'
				continue
			}
			start := len(buf)
			buf = append(buf, v...)
			row[i] = tupleCol{kind: 't', data: buf[start:len(buf):len(buf)]}
		}
		now := time.Now()
		c := change{op: 'r', rel: rel, after: row, commit: at, lsn: at, ts: now, snapshot: true}
		batch = append(batch, s.message(&c, rel.keyOf(row), 0, now))
		if len(batch) >= s.cfg.maxBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("cdc: snapshot %s.%s: %w", schema, name, err)
	}
	return flush()
}

// snapshotQuery reads what pgoutput sends of a table: the columns it
// publishes (not generated ones; on PostgreSQL 15 and later, the
// publication's column list) and the rows it publishes (from 15, the
// publication's row filter), so that snapshot rows look like the changes
// that follow them.
func (s *Source) snapshotQuery(ctx context.Context, tx pgx.Tx, schema, name string) (string, error) {
	var cols []string
	var filter *string
	var err error
	if s.serverVersion >= 150000 {
		err = tx.QueryRow(ctx, `select coalesce((select array_agg(a.attname::text order by a.attnum) from pg_attribute a
    where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and a.attgenerated = '' and a.attname = any(pt.attnames)), '{}'),
  pt.rowfilter
from pg_publication_tables pt
join pg_namespace n on n.nspname = pt.schemaname
join pg_class c on c.relnamespace = n.oid and c.relname = pt.tablename
where pt.pubname = $1 and pt.schemaname = $2 and pt.tablename = $3`, s.cfg.publication, schema, name).Scan(&cols, &filter)
	} else {
		err = tx.QueryRow(ctx, `select coalesce(array_agg(a.attname::text order by a.attnum), '{}') from pg_attribute a
where a.attrelid = $1::regclass and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''`,
			pgx.Identifier{schema, name}.Sanitize()).Scan(&cols)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("cdc: snapshot %s.%s: the table is no longer in publication %q", schema, name, s.cfg.publication)
	}
	if err != nil {
		return "", fmt.Errorf("cdc: snapshot %s.%s: columns: %w", schema, name, err)
	}
	if len(cols) == 0 {
		return "", fmt.Errorf("cdc: snapshot %s.%s: no column to read", schema, name)
	}
	idents := make([]string, len(cols))
	for i, c := range cols {
		idents[i] = pgx.Identifier{c}.Sanitize()
	}
	q := `select ` + strings.Join(idents, ", ") + ` from ` + pgx.Identifier{schema, name}.Sanitize()
	if filter != nil && *filter != "" {
		q += ` where ` + *filter
	}
	return q, nil
}

func rawLen(raw [][]byte) int {
	n := 0
	for _, v := range raw {
		n += len(v)
	}
	return n
}

// publish publishes msgs, retrying with backoff while the publisher fails
// with an error a retry may fix. The call runs on hard (Close lets it
// finish); the waits between attempts end with soft.
func (s *Source) publish(hard, soft context.Context, topic string, msgs []broker.Message, snapshot bool) error {
	for n := 1; ; n++ {
		err := s.tracedPublish(hard, topic, msgs, snapshot, n)
		if err == nil {
			s.publishes.Add(1)
			if n > 1 {
				s.log.Info("cdc: publishing again", "after_failures", n-1)
			}
			return nil
		}
		s.publishFailures.Add(1)
		switch {
		case hard.Err() != nil:
			return errStopped
		case errors.Is(err, broker.ErrInvalidMessage), errors.Is(err, broker.ErrUnroutable), broker.IsPermanent(err):
			return fmt.Errorf("%w: topic %q, message %s (key %q): %w; the slot stays before it: fix the cause and run again",
				ErrRejected, topic, msgs[0].ID, msgs[0].Key, err)
		case errors.Is(err, broker.ErrClosed):
			return fmt.Errorf("cdc: the publisher was closed: %w", err)
		}
		s.warnRetained(soft, n, err)
		if !s.cfg.backoff.Sleep(soft, nil, n) {
			return errStopped
		}
	}
}

func (s *Source) tracedPublish(ctx context.Context, topic string, msgs []broker.Message, snapshot bool, attempt int) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.publishTimeout)
	defer cancel()
	if len(s.publishTracers) == 0 {
		return s.pub.Publish(ctx, topic, msgs...)
	}
	start := time.Now()
	for _, t := range s.publishTracers {
		ctx = t.TracePublishStart(ctx, TracePublishStartData{Topic: topic, Messages: msgs, Snapshot: snapshot, Attempt: attempt})
	}
	err := s.pub.Publish(ctx, topic, msgs...)
	for _, t := range s.publishTracers {
		t.TracePublishEnd(ctx, TracePublishEndData{Err: err, Duration: time.Since(start)})
	}
	return err
}

// warnRetained logs a failed Publish, with the WAL the slot retains at most
// once per retained interval.
func (s *Source) warnRetained(ctx context.Context, failures int, err error) {
	now := time.Now()
	last := s.lastWarn.Load()
	if last != 0 && now.Sub(time.Unix(0, last)) < s.cfg.retainedInterval {
		return
	}
	s.lastWarn.Store(now.UnixNano())
	var retained int64
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	qerr := s.pool.QueryRow(qctx, `select coalesce(pg_current_wal_lsn() - restart_lsn, 0)::int8 from pg_replication_slots where slot_name = $1`, s.cfg.slot).Scan(&retained)
	level := slog.LevelWarn
	if retained > s.cfg.retainedWarning {
		level = slog.LevelError
	}
	args := []any{"failures", failures, "error", err, "wal_retained_bytes", retained}
	if qerr != nil {
		args = append(args, "wal_retained_error", qerr)
	}
	s.log.Log(ctx, level, "cdc: publish failed; not reading further, the slot retains WAL", args...)
}

// item passes from the reader to the sink: a pgoutput message, or (msg
// nil) a position the server has sent everything before, outside any
// transaction.
type item struct {
	msg any // *rowChange or a pglogrepl.Message
	lsn pglogrepl.LSN
}

// chunkSize is how many items the reader hands over at once: one channel
// operation per message would cost more than decoding it.
const chunkSize = 64

// stream reads the slot on rconn (reader, this goroutine) and publishes
// (sink, another goroutine); the reader stops reading when the sink falls
// behind, but keeps telling the server how far the sink confirmed.
func (s *Source) stream(hard, soft context.Context, rconn *pgconn.PgConn, skip map[string]pglogrepl.LSN) error {
	err := pglogrepl.StartReplication(soft, rconn, s.cfg.slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'",
			"publication_names " + pgschema.Literal(s.cfg.publication)},
	})
	if err != nil {
		return fmt.Errorf("cdc: start replication: %w", err)
	}
	s.streams.Add(1)
	// At most about 4 batches wait between the reader and the sink.
	chunks := make(chan []item, max(2, 4*s.cfg.maxBatch/chunkSize))
	readCtx, stopRead := context.WithCancel(soft)
	sinkErr := make(chan error, 1)
	go func() {
		err := s.sink(hard, soft, chunks, skip)
		stopRead()
		sinkErr <- err
	}()
	rerr := s.read(readCtx, rconn, chunks)
	close(chunks)
	serr := <-sinkErr
	stopRead()
	if !rconn.IsClosed() {
		s.endCopy(rconn)
	}
	switch {
	case serr != nil && !errors.Is(serr, errStopped):
		return serr
	case rerr != nil:
		return rerr
	}
	return nil
}

// endCopy tells the server the last confirmed position and ends the
// stream cleanly: closing the socket with unread data would reset the
// connection, and the server could drop the status update unread.
func (s *Source) endCopy(rconn *pgconn.PgConn) {
	nc := rconn.Conn()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	defer func() { _ = nc.SetDeadline(time.Time{}) }()
	c := pglogrepl.LSN(s.confirmed.Load())
	if err := pglogrepl.SendStandbyStatusUpdate(context.Background(), rconn, pglogrepl.StandbyStatusUpdate{WALWritePosition: c, WALFlushPosition: c, WALApplyPosition: c}); err != nil {
		return
	}
	buf, err := (&pgproto3.CopyDone{}).Encode(nil)
	if err != nil {
		return
	}
	if err := rconn.Frontend().SendUnbufferedEncodedCopyData(buf); err != nil {
		return
	}
	// The server reads what came before CopyDone, answers with its own, and
	// ends the command; skip the changes it sent meanwhile.
	for {
		msg, err := rconn.ReceiveMessage(context.Background())
		if err != nil {
			return
		}
		switch msg.(type) {
		case *pgproto3.ReadyForQuery, *pgproto3.ErrorResponse:
			return
		}
	}
}

// read receives from the server and hands the messages to the sink, in
// chunks: a chunk goes when it is full, at each commit and keepalive, and
// at each status update (so a large transaction's first changes wait at
// most a status interval when the server produces them slowly).
func (s *Source) read(ctx context.Context, rconn *pgconn.PgConn, chunks chan<- []item) error {
	// Deadlines go on the socket, not through a context per message (which
	// costs a timer and a goroutine hand-off each); ctx ending sets one in
	// the past.
	nc := rconn.Conn()
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Now()); close(fired) })
	defer func() {
		if !stop() {
			<-fired // endCopy sets deadlines next: this one must not come after
		}
	}()
	next := time.Now().Add(s.cfg.statusInterval)
	status := func() error {
		next = time.Now().Add(s.cfg.statusInterval)
		c := pglogrepl.LSN(s.confirmed.Load())
		return pglogrepl.SendStandbyStatusUpdate(ctx, rconn, pglogrepl.StandbyStatusUpdate{WALWritePosition: c, WALFlushPosition: c, WALApplyPosition: c})
	}
	var inTx bool
	var lastMark pglogrepl.LSN
	chunk := make([]item, 0, chunkSize)
	// send hands the chunk over, answering the server meanwhile when the
	// sink is behind (the publisher is slow or down).
	send := func() error {
		if len(chunk) == 0 {
			return nil
		}
		select {
		case chunks <- chunk:
			chunk = make([]item, 0, chunkSize)
			return nil
		default:
		}
		for {
			t := time.NewTimer(time.Until(next))
			select {
			case chunks <- chunk:
				t.Stop()
				chunk = make([]item, 0, chunkSize)
				return nil
			case <-t.C:
				if err := status(); err != nil {
					return fmt.Errorf("cdc: send status: %w", err)
				}
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
	}
	deadline := time.Time{}
	for {
		if !time.Now().Before(next) {
			if err := send(); err != nil {
				return nilIfDone(ctx, err)
			}
			if err := status(); err != nil {
				return fmt.Errorf("cdc: send status: %w", err)
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if !deadline.Equal(next) {
			deadline = next
			if err := nc.SetReadDeadline(deadline); err != nil {
				return fmt.Errorf("cdc: set deadline: %w", err)
			}
			if ctx.Err() != nil { // ended between the check and the new deadline
				return nil
			}
		}
		raw, err := rconn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if pgconn.Timeout(err) {
				if err := send(); err != nil {
					return nilIfDone(ctx, err)
				}
				continue
			}
			return fmt.Errorf("cdc: receive: %w", err)
		}
		var m *pgproto3.CopyData
		switch r := raw.(type) {
		case *pgproto3.CopyData:
			m = r
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("cdc: replication: %w", pgconn.ErrorResponseToPgError(r))
		default:
			continue
		}
		if len(m.Data) == 0 {
			continue
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return fmt.Errorf("cdc: keepalive: %w", err)
			}
			if !inTx && ka.ServerWALEnd > lastMark {
				// Everything before it was sent: once the sink confirmed what
				// came before, the slot may move there. Dropped when the sink
				// is behind: a later keepalive says the same.
				if len(chunk) < chunkSize {
					chunk = append(chunk, item{lsn: ka.ServerWALEnd})
					lastMark = ka.ServerWALEnd
				}
				select {
				case chunks <- chunk:
					chunk = make([]item, 0, chunkSize)
				default:
				}
			}
			if ka.ReplyRequested {
				if err := status(); err != nil {
					return fmt.Errorf("cdc: send status: %w", err)
				}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return fmt.Errorf("cdc: xlogdata: %w", err)
			}
			if uint64(xld.WALStart) > s.received.Load() {
				s.received.Store(uint64(xld.WALStart))
			}
			if len(xld.WALData) == 0 {
				continue
			}
			// The receive buffer is reused: the decoded message keeps slices of it.
			data := append([]byte(nil), xld.WALData...)
			var msg any
			switch data[0] {
			case 'I', 'U', 'D':
				msg, err = parseRow(data)
			default:
				msg, err = pglogrepl.Parse(data)
			}
			if err != nil {
				return fmt.Errorf("cdc: decode pgoutput message at %s: %w", xld.WALStart, err)
			}
			chunk = append(chunk, item{msg: msg, lsn: xld.WALStart})
			flush := len(chunk) == chunkSize
			switch msg.(type) {
			case *pglogrepl.BeginMessage:
				inTx = true
			case *pglogrepl.CommitMessage:
				inTx = false
				flush = true
			}
			if flush {
				if err := send(); err != nil {
					return nilIfDone(ctx, err)
				}
			}
		}
	}
}

func nilIfDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
