package filetransfer

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
	"github.com/go-integration/patterns/internal/ids"
)

// Conns hands out database connections. *pgxpool.Pool satisfies it; so can a
// replica-aware reader (for example one from the shareddb package) that
// returns a connection to a streaming replica, which is where big exports
// belong. The Exporter holds at most WithParallelism connections at once,
// releases each when its day is done, and closes instead of releasing any
// connection a failure or cancellation left in an unknown state.
type Conns interface {
	Acquire(ctx context.Context) (*pgxpool.Conn, error)
}

// Dataset is what to export. Give either Query and DayColumn, or Template.
type Dataset struct {
	// Name names the files and folders: 1 to 128 bytes of [A-Za-z0-9_-],
	// starting with a letter or digit (ErrInvalidName otherwise).
	Name string
	// Query is a SELECT (no parameters, no trailing semicolon needed) with a
	// column named DayColumn of type date, timestamp or timestamptz. Each
	// day's file is
	//   select * from (Query) q where q.DayColumn >= <day start> and q.DayColumn < <next day start>
	// Put an ORDER BY inside Query for a stable row order.
	Query     string
	DayColumn string
	// Template is a SELECT taking the day's bounds through placeholders, for
	// queries where the filter must sit inside (an index on an expression, a
	// join, an aggregate). Placeholders: {from} and {to} (timestamptz
	// literals: the day's start and the next day's start in the WithLocation
	// time zone),
	// {day} and {next_day} (date literals). It must use {from} and {to}, or {day}.
	// It must be one plain query: it starts with SELECT, WITH, VALUES or TABLE
	// (after comments and opening parentheses), has no second statement, and
	// a WITH query names no INSERT, UPDATE, DELETE or MERGE (not even as an
	// unquoted column name); anything else fails with ErrInvalidTemplate
	// before the database is touched. Every export also runs in a READ ONLY
	// transaction, so a write that slips past the check (a function that
	// writes, say) fails too.
	Template string
	// UpdatedColumn, when set, names a column of the query holding each
	// row's last-modified time. Incremental exports (ExportChanged, Catchup)
	// then re-export a day already exported when its row count or greatest
	// UpdatedColumn differs from what the day's _SUCCESS marker recorded;
	// without it they only export missing days. The count and the CSV come
	// from the same repeatable-read snapshot.
	UpdatedColumn string
}

func (d Dataset) validate() error {
	if err := validateName(d.Name); err != nil {
		return err
	}
	switch {
	case d.Query == "" && d.Template == "":
		return fmt.Errorf("%w: %s: Query or Template is required", ErrInvalidDataset, d.Name)
	case d.Query != "" && d.Template != "":
		return fmt.Errorf("%w: %s: set Query or Template, not both", ErrInvalidDataset, d.Name)
	case d.Query != "" && d.DayColumn == "":
		return fmt.Errorf("%w: %s: Query needs DayColumn", ErrNoDayColumn, d.Name)
	case d.Template != "" && !(strings.Contains(d.Template, "{from}") && strings.Contains(d.Template, "{to}")) && !strings.Contains(d.Template, "{day}"):
		return fmt.Errorf("%w: %s: Template must use {from} and {to}, or {day}", ErrInvalidDataset, d.Name)
	}
	if d.Template != "" {
		if err := checkTemplate(d.Template); err != nil {
			return fmt.Errorf("%w: %s: %w: %v", ErrInvalidDataset, d.Name, ErrInvalidTemplate, err)
		}
	}
	return nil
}

// Exporter writes daily CSV files from PostgreSQL to a Store with
// COPY ... TO STDOUT, streaming: memory stays flat whatever the file size.
// It is safe for concurrent use.
type Exporter struct {
	db     Conns
	store  Store
	cfg    exporterConfig
	layout Layout
	tr     tracers
}

// NewExporter returns an Exporter reading through db and writing to store.
// It does no I/O. Without options it writes plain CSV under the store's
// root, DefaultParallelism days at a time, ranges of at most DefaultMaxDays
// days, calendar days in UTC. A nil db or store, or an option it cannot use,
// is an error wrapping ErrInvalidOption.
func NewExporter(db Conns, store Store, opts ...ExporterOption) (*Exporter, error) {
	if db == nil || store == nil {
		return nil, invalid("NewExporter: db and store are required (db nil: %t, store nil: %t)", db == nil, store == nil)
	}
	cfg, err := newExporterConfig(opts)
	if err != nil {
		return nil, err
	}
	return &Exporter{db: db, store: store, cfg: cfg, layout: Layout{Prefix: cfg.prefix}, tr: newTracers(cfg.tracers)}, nil
}

// Layout returns the key layout the Exporter writes.
func (e *Exporter) Layout() Layout { return e.layout }

// Export writes one file per day from from to to (both included), replacing
// days exported before. Each day is published atomically: its CSV is
// committed, then its _SUCCESS marker; a day that fails before its CSV is
// committed leaves its previous version in place. The previous marker is
// removed just before the commit, so a day that fails after it is left
// without a marker (ExportChanged exports it again), never with a marker
// that describes another file. The first failure cancels the days not yet done; the
// returned Manifest lists the days that were written either way, and is
// stored (with a _SUCCESS after it) only when every day succeeded.
//
// Each day is read in a READ ONLY transaction, and under a PostgreSQL
// advisory lock for its prefix, dataset and day: another exporter of the same
// day (on the same database server) waits until this one has written its
// marker, so a day's file and marker always come from one run.
func (e *Exporter) Export(ctx context.Context, ds Dataset, from, to Day) (*Manifest, error) {
	return e.run(ctx, ds, from, to, false)
}

// ExportChanged is the incremental mode: it writes only the days from from to
// to that have no complete export yet, or (with Dataset.UpdatedColumn) whose
// data changed since they were exported. Days found up to date are listed in
// Manifest.Unchanged.
func (e *Exporter) ExportChanged(ctx context.Context, ds Dataset, from, to Day) (*Manifest, error) {
	return e.run(ctx, ds, from, to, true)
}

// Catchup is the hook for a scheduled job: it exports yesterday (relative to
// now, in the WithLocation time zone) and any of the lookback-1 days before it that are
// missing or changed. It is idempotent: a second run with nothing changed
// writes nothing. lookback < 1 means 1 (yesterday only).
func (e *Exporter) Catchup(ctx context.Context, ds Dataset, now time.Time, lookback int) (*Manifest, error) {
	if lookback < 1 {
		lookback = 1
	}
	to := DayOf(now.In(e.cfg.location)).AddDays(-1)
	return e.run(ctx, ds, to.AddDays(-(lookback - 1)), to, true)
}

type dayResult struct {
	file      DayFile
	unchanged bool
	done      bool
}

// run traces one export call around export.
func (e *Exporter) run(ctx context.Context, ds Dataset, from, to Day, changedOnly bool) (*Manifest, error) {
	if len(e.tr.export) == 0 {
		return e.export(ctx, ds, from, to, changedOnly)
	}
	start := time.Now()
	ctx = e.tr.exportStart(ctx, TraceExportStartData{Dataset: ds.Name, From: from, To: to, Incremental: changedOnly, Prefix: e.cfg.prefix})
	m, err := e.export(ctx, ds, from, to, changedOnly)
	d := TraceExportEndData{Err: err, Duration: time.Since(start)}
	if m != nil {
		d.Files, d.Unchanged, d.ManifestKey = len(m.Files), len(m.Unchanged), m.Key
		for _, f := range m.Files {
			d.Rows += f.Rows
			d.Bytes += f.Bytes
		}
	}
	e.tr.exportEnd(ctx, d)
	return m, err
}

func (e *Exporter) export(ctx context.Context, ds Dataset, from, to Day, changedOnly bool) (*Manifest, error) {
	if err := ds.validate(); err != nil {
		return nil, err
	}
	days, err := Days(from, to, e.cfg.maxDays)
	if err != nil {
		return nil, err
	}
	if c, ok := e.store.(Checker); ok {
		if err := c.Check(ctx); err != nil {
			return nil, fmt.Errorf("filetransfer: export %s: %w", ds.Name, err)
		}
	}
	m := &Manifest{Dataset: ds.Name, From: from, To: to, GeneratedAt: time.Now().UTC()}

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]dayResult, len(days))
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	next := make(chan int)
	workers := min(e.cfg.parallelism, len(days))
	for range workers {
		wg.Go(func() {
			for i := range next {
				if ctx.Err() != nil {
					// The feeder may still hand out a day after the
					// cancellation: such a day is never started.
					continue
				}
				f, unchanged, err := e.exportDay(ctx, ds, days[i], changedOnly)
				if err != nil {
					mu.Lock()
					// Days we cancelled because another day failed are not
					// worth reporting next to that day's error.
					if len(errs) == 0 || parent.Err() != nil || !errors.Is(err, context.Canceled) {
						errs = append(errs, fmt.Errorf("filetransfer: export %s %s: %w", ds.Name, days[i], err))
					}
					mu.Unlock()
					cancel()
					continue
				}
				results[i] = dayResult{file: f, unchanged: unchanged, done: true}
			}
		})
	}
feed:
	for i := range days {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()

	for i, r := range results {
		switch {
		case !r.done:
		case r.unchanged:
			m.Unchanged = append(m.Unchanged, days[i])
		default:
			m.Files = append(m.Files, r.file)
		}
	}
	if len(errs) > 0 {
		return m, errors.Join(errs...)
	}
	if err := ctx.Err(); err != nil {
		return m, err
	}
	if len(m.Files) == 0 {
		return m, nil
	}
	if err := e.writeManifest(ctx, m); err != nil {
		return m, err
	}
	return m, nil
}

func (e *Exporter) writeManifest(ctx context.Context, m *Manifest) error {
	run := m.GeneratedAt.Format("20060102T150405.000Z") + "-" + ids.Hex()[:8]
	dir := e.layout.ExportDir(m.Dataset, run)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	key := path.Join(dir, ManifestName)
	if err := storeutil.Put(ctx, e.store.Create, key, b); err != nil {
		return fmt.Errorf("filetransfer: write manifest: %w", err)
	}
	if err := storeutil.Put(ctx, e.store.Create, path.Join(dir, SuccessName), []byte("{}\n")); err != nil {
		return fmt.Errorf("filetransfer: write manifest marker: %w", err)
	}
	m.Key = key
	return nil
}

// exportDay traces one day around doDay.
func (e *Exporter) exportDay(ctx context.Context, ds Dataset, day Day, changedOnly bool) (DayFile, bool, error) {
	if len(e.tr.day) == 0 {
		return e.doDay(ctx, ds, day, changedOnly)
	}
	start := time.Now()
	ctx = e.tr.dayStart(ctx, TraceExportDayStartData{Dataset: ds.Name, Day: day, Key: e.layout.DataKey(ds.Name, day, e.cfg.gzip), Incremental: changedOnly})
	f, unchanged, err := e.doDay(ctx, ds, day, changedOnly)
	d := TraceExportDayEndData{Unchanged: unchanged, Err: err, Duration: time.Since(start)}
	if err == nil && !unchanged {
		d.Rows, d.Bytes, d.CSVBytes, d.SHA256 = f.Rows, f.Bytes, f.CSVBytes, f.SHA256
	}
	e.tr.dayEnd(ctx, d)
	return f, unchanged, err
}

// doDay writes one day. It returns the day's DayFile, and unchanged=true
// (with the previous DayFile) when changedOnly found the day up to date.
//
// One connection does the whole day, and holds the day's advisory lock
// (see dayLockKey) from before the marker is read until after the new marker
// is written, so two exporters of the same day run one after the other and
// the marker always describes the stored file. The lock is a session lock:
// it is released explicitly before the connection goes back to the pool,
// and by the server when the connection is closed (a failure or
// cancellation closes it) or lost.
func (e *Exporter) doDay(ctx context.Context, ds Dataset, day Day, changedOnly bool) (DayFile, bool, error) {
	key := e.layout.DataKey(ds.Name, day, e.cfg.gzip)
	if changedOnly && ds.UpdatedColumn == "" {
		// Fast path: a marked day is done, whoever is exporting it now;
		// no need for a connection or the lock.
		p, err := ReadDay(ctx, e.store, e.layout, ds.Name, day)
		switch {
		case err == nil:
			return p, true, nil
		case !isNotFound(err):
			return DayFile{}, false, fmt.Errorf("read marker: %w", err)
		}
	}

	conn, err := e.db.Acquire(ctx)
	if err != nil {
		return DayFile{}, false, fmt.Errorf("acquire connection: %w", err)
	}
	lock := dayLockKey(e.layout.DayMarkerKey(ds.Name, day))
	healthy, locked := false, false
	defer func() {
		if healthy && locked {
			var ok bool
			if uerr := conn.QueryRow(ctx, "select pg_advisory_unlock($1)", lock).Scan(&ok); uerr != nil || !ok {
				healthy = false // closing the connection releases the lock
			}
		}
		if healthy {
			conn.Release()
			return
		}
		// A cancelled or failed COPY leaves the connection mid-protocol:
		// take it out of the pool and close it so it is never reused.
		c := conn.Hijack()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = c.Close(cctx)
	}()

	// reusable reports whether the connection may go back to the pool after
	// an error: never after a cancellation (it may have struck mid-protocol),
	// never while busy or closed; an open transaction is rolled back first.
	reusable := func() bool {
		pc := conn.Conn().PgConn()
		if ctx.Err() != nil || pc.IsClosed() || pc.IsBusy() {
			return false
		}
		if pc.TxStatus() != 'I' {
			if _, err := conn.Exec(ctx, "rollback"); err != nil {
				return false
			}
		}
		return pc.TxStatus() == 'I'
	}
	fail := func(err error) (DayFile, bool, error) {
		healthy = reusable()
		return DayFile{}, false, err
	}

	// Waits while another exporter has the same day.
	if _, err := conn.Exec(ctx, "select pg_advisory_lock($1)", lock); err != nil {
		return fail(fmt.Errorf("lock day: %w", err))
	}
	locked = true

	var prev *DayFile
	if changedOnly {
		p, err := ReadDay(ctx, e.store, e.layout, ds.Name, day)
		switch {
		case err == nil:
			prev = &p
			if ds.UpdatedColumn == "" {
				healthy = true
				return p, true, nil
			}
		case !isNotFound(err):
			return fail(fmt.Errorf("read marker: %w", err))
		}
	}

	// Every export reads in a READ ONLY transaction, so a Template that
	// writes fails instead of deleting or changing rows. With UpdatedColumn
	// it is also REPEATABLE READ: the count and the CSV see one snapshot.
	begin := "begin read only"
	if ds.UpdatedColumn != "" {
		begin = "begin isolation level repeatable read read only"
	}
	if _, err := conn.Exec(ctx, begin); err != nil {
		return fail(err)
	}
	q, err := e.dayQuery(ctx, conn, ds, day)
	if err != nil {
		return fail(err)
	}
	var state *SourceState
	if ds.UpdatedColumn != "" {
		state, err = sourceState(ctx, conn, q.sql, ds.UpdatedColumn)
		if err != nil {
			return fail(err)
		}
		if prev != nil && prev.Source != nil && *prev.Source == *state {
			if _, err := conn.Exec(ctx, "rollback"); err != nil {
				return fail(err)
			}
			healthy = true
			return *prev, true, nil
		}
	}

	w, err := e.store.Create(ctx, key)
	if err != nil {
		return fail(fmt.Errorf("store: %w", err))
	}
	p := e.newPipe(ctx, w, ds.Name, day, key)
	tag, err := conn.Conn().PgConn().CopyTo(ctx, p, "COPY ("+q.sql+"\n) TO STDOUT WITH (FORMAT csv, HEADER)")
	if err == nil {
		err = p.close()
	}
	if err == nil {
		// Once the new file is committed the old marker would describe a file
		// that is gone or different: remove it first, so a failure before the
		// new marker leaves the day unmarked (ExportChanged redoes it), never
		// marked with the wrong file.
		if derr := e.store.Delete(ctx, e.layout.DayMarkerKey(ds.Name, day)); derr != nil {
			err = fmt.Errorf("delete old marker: %w", derr)
		}
	}
	if err == nil {
		err = w.Commit()
		if err != nil {
			err = fmt.Errorf("store: commit %s: %w", key, err)
		}
	} else if aerr := w.Abort(); aerr != nil {
		e.cfg.logger.WarnContext(ctx, "filetransfer: could not discard a failed file", "key", key, "error", aerr, "cause", err)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		// A server error (ReadyForQuery received) leaves the connection
		// usable; a store error or cancellation mid-COPY does not.
		return fail(err)
	}
	if _, err := conn.Exec(ctx, "commit"); err != nil {
		return fail(err)
	}
	f := DayFile{
		Dataset:     ds.Name,
		Day:         day,
		Key:         key,
		Rows:        tag.RowsAffected(),
		Bytes:       p.out.n,
		CSVBytes:    p.raw,
		SHA256:      hex.EncodeToString(p.out.h.Sum(nil)),
		Gzip:        e.cfg.gzip,
		Columns:     q.cols,
		GeneratedAt: time.Now().UTC(),
		Source:      state,
	}
	// A previous export with the other compression setting would otherwise
	// leave a second file in the partition.
	if err := e.store.Delete(ctx, e.layout.DataKey(ds.Name, day, !e.cfg.gzip)); err != nil {
		return fail(fmt.Errorf("delete stale file: %w", err))
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fail(err)
	}
	if err := storeutil.Put(ctx, e.store.Create, e.layout.DayMarkerKey(ds.Name, day), b); err != nil {
		return fail(fmt.Errorf("write marker: %w", err))
	}
	healthy = true
	return f, false, nil
}

// dayLockKey is the advisory lock key of one day: the first 8 bytes of the
// SHA-256 of "filetransfer:" and the day's marker key (prefix, dataset and
// day). Exporters of different prefixes or datasets never wait for each
// other; a hash collision only makes two days take turns.
func dayLockKey(markerKey string) int64 {
	h := sha256.Sum256([]byte("filetransfer:" + markerKey))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

func sourceState(ctx context.Context, conn *pgxpool.Conn, sql, updated string) (*SourceState, error) {
	var (
		s   SourceState
		max *string
	)
	err := conn.QueryRow(ctx, "select count(*), max(q."+pgx.Identifier{updated}.Sanitize()+")::text from ("+sql+"\n) q").Scan(&s.Rows, &max)
	if err != nil {
		return nil, fmt.Errorf("source state (UpdatedColumn %q): %w", updated, err)
	}
	if max != nil {
		s.MaxUpdated = *max
	}
	return &s, nil
}

type dayQuery struct {
	sql  string
	cols []Column
}

// PostgreSQL type OIDs accepted for a day column.
const (
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
)

func (e *Exporter) dayQuery(ctx context.Context, conn *pgxpool.Conn, ds Dataset, day Day) (dayQuery, error) {
	loc := e.cfg.location
	start, end := day.Start(loc), day.AddDays(1).Start(loc)
	var sql string
	if ds.Template != "" {
		sql = strings.NewReplacer(
			"{from}", "TIMESTAMPTZ '"+start.Format(time.RFC3339)+"'",
			"{to}", "TIMESTAMPTZ '"+end.Format(time.RFC3339)+"'",
			"{day}", "DATE '"+day.String()+"'",
			"{next_day}", "DATE '"+day.AddDays(1).String()+"'",
		).Replace(trimQuery(ds.Template))
	} else {
		inner := trimQuery(ds.Query)
		sd, err := describe(ctx, conn, inner)
		if err != nil {
			return dayQuery{}, err
		}
		var (
			found bool
			oid   uint32
			names []string
		)
		for _, f := range sd.Fields {
			names = append(names, f.Name)
			if f.Name == ds.DayColumn {
				found, oid = true, f.DataTypeOID
			}
		}
		if !found {
			return dayQuery{}, fmt.Errorf("%w: %s: no column %q among %v", ErrNoDayColumn, ds.Name, ds.DayColumn, names)
		}
		var lo, hi string
		switch oid {
		case oidDate:
			lo, hi = "DATE '"+day.String()+"'", "DATE '"+day.AddDays(1).String()+"'"
		case oidTimestamp:
			lo, hi = "TIMESTAMP '"+day.String()+" 00:00:00'", "TIMESTAMP '"+day.AddDays(1).String()+" 00:00:00'"
		case oidTimestamptz:
			lo, hi = "TIMESTAMPTZ '"+start.Format(time.RFC3339)+"'", "TIMESTAMPTZ '"+end.Format(time.RFC3339)+"'"
		default:
			typ := fmt.Sprintf("oid %d", oid)
			if cols, err := columnTypes(ctx, conn, sd.Fields); err == nil {
				typ = cols[slices.IndexFunc(cols, func(c Column) bool { return c.Name == ds.DayColumn })].Type
			}
			return dayQuery{}, fmt.Errorf("%w: %s: column %q is %s; want date, timestamp or timestamptz", ErrNoDayColumn, ds.Name, ds.DayColumn, typ)
		}
		col := "q." + pgx.Identifier{ds.DayColumn}.Sanitize()
		sql = "select * from (" + inner + "\n) q where " + col + " >= " + lo + " and " + col + " < " + hi
	}
	sd, err := describe(ctx, conn, sql)
	if err != nil {
		return dayQuery{}, err
	}
	cols, err := columnTypes(ctx, conn, sd.Fields)
	if err != nil {
		return dayQuery{}, err
	}
	return dayQuery{sql: sql, cols: cols}, nil
}

func trimQuery(q string) string {
	return strings.TrimRight(strings.TrimSpace(q), "; \t\r\n")
}

func describe(ctx context.Context, conn *pgxpool.Conn, sql string) (*pgconn.StatementDescription, error) {
	sd, err := conn.Conn().PgConn().Prepare(ctx, "", sql, nil)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	if len(sd.ParamOIDs) > 0 {
		return nil, fmt.Errorf("%w: the query takes $n parameters, which COPY cannot bind", ErrInvalidDataset)
	}
	if len(sd.Fields) == 0 {
		return nil, fmt.Errorf("%w: the query returns no columns", ErrInvalidDataset)
	}
	return sd, nil
}

func columnTypes(ctx context.Context, conn *pgxpool.Conn, fields []pgconn.FieldDescription) ([]Column, error) {
	oids := make([]uint32, len(fields))
	mods := make([]int32, len(fields))
	for i, f := range fields {
		oids[i], mods[i] = f.DataTypeOID, f.TypeModifier
	}
	rows, err := conn.Query(ctx, "select format_type(o, nullif(m, -1)) from unnest($1::oid[], $2::int4[]) with ordinality as t(o, m, n) order by n", oids, mods)
	if err != nil {
		return nil, fmt.Errorf("column types: %w", err)
	}
	types, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("column types: %w", err)
	}
	cols := make([]Column, len(fields))
	for i, f := range fields {
		cols[i] = Column{Name: f.Name, Type: types[i]}
	}
	return cols, nil
}

// pipe is where COPY writes: it counts rows (PostgreSQL sends one CopyData
// message, so one Write, per row, the header included) and CSV bytes,
// buffers, optionally compresses, and hashes and counts what reaches the store.
type pipe struct {
	ctx      context.Context
	e        *Exporter
	dataset  string
	day      Day
	key      string
	writes   int64
	raw      int64
	nextTick int64
	head     *bufio.Writer
	gz       *gzip.Writer
	gzBuf    *bufio.Writer
	out      *hashCounter
}

func (e *Exporter) newPipe(ctx context.Context, w io.Writer, dataset string, day Day, key string) *pipe {
	p := &pipe{ctx: ctx, e: e, dataset: dataset, day: day, key: key, nextTick: e.cfg.progressEvery}
	p.out = &hashCounter{w: w, h: sha256.New()}
	if e.cfg.gzip {
		p.gzBuf = bufio.NewWriterSize(p.out, 256<<10)
		p.gz, _ = gzip.NewWriterLevel(p.gzBuf, e.cfg.gzipLevel) // level checked by WithGzip
		p.head = bufio.NewWriterSize(p.gz, 256<<10)
	} else {
		p.head = bufio.NewWriterSize(p.out, 256<<10)
	}
	return p
}

func (p *pipe) Write(b []byte) (int, error) {
	p.writes++
	p.raw += int64(len(b))
	n, err := p.head.Write(b)
	if p.raw >= p.nextTick && len(p.e.tr.progress) > 0 {
		p.nextTick = p.raw + p.e.cfg.progressEvery
		p.e.tr.progressed(p.ctx, TraceExportProgressData{Dataset: p.dataset, Day: p.day, Key: p.key, Rows: max(p.writes-1, 0), CSVBytes: p.raw, Bytes: p.out.n})
	}
	return n, err
}

func (p *pipe) close() error {
	if err := p.head.Flush(); err != nil {
		return err
	}
	if p.gz != nil {
		if err := p.gz.Close(); err != nil {
			return err
		}
		return p.gzBuf.Flush()
	}
	return nil
}

type hashCounter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *hashCounter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.h.Write(b[:n])
	c.n += int64(n)
	return n, err
}
