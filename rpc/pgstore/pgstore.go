// Package pgstore is an rpc.IdempotencyStore in PostgreSQL (pgx/v5): one
// table, safe for any number of server processes sharing it.
//
// A key is claimed with a single INSERT ... ON CONFLICT DO UPDATE ... WHERE
// expired, so of many concurrent claims on any number of servers exactly one
// wins; the others read the row back (running: 409, done: replay). Expired
// rows are taken over in place and may be deleted in bulk with Cleanup.
//
// The table (Migrate makes it under an advisory lock, so every instance
// may call it at start-up; or apply Schema with a migration tool):
//
//	create table rpc_idempotency (
//	    key         text primary key,
//	    owner       text,        -- the claim's owner token
//	    fingerprint text not null,
//	    status      int,         -- null while the first request runs
//	    header      jsonb,
//	    body        bytea,
//	    expires_at  timestamptz not null,
//	    created_at  timestamptz not null default now()
//	);
//	create index on rpc_idempotency (expires_at);
//
// Each claim writes a new owner token; Complete and Release update the row
// only "where key = $1 and owner = $2", so a request whose lock lapsed and
// was taken over cannot overwrite the newer owner's claim. Schema and
// Migrate add the owner column to a table made by an older version
// ("alter table ... add column if not exists owner text").
//
// Times come from the database clock (now()), so servers with skewed clocks
// agree on expiry.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/go-integration/patterns/internal/ids"
	"github.com/go-integration/patterns/internal/pgschema"
	"github.com/go-integration/patterns/rpc"
)

// DB is what the store needs from PostgreSQL; *pgxpool.Pool satisfies it
// (a single *pgx.Conn does too, but is not safe for concurrent requests).
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Default values of the options.
const (
	DefaultTable        = "rpc_idempotency"
	DefaultQueryTimeout = 5 * time.Second
)

// ErrInvalidOption is returned (wrapped) by New for a bad option or
// argument; the message names it.
var ErrInvalidOption = errors.New("pgstore: invalid option")

// Option configures a Store. Options are made by the WithX functions.
type Option interface{ apply(*Store) error }

type optionFunc func(*Store) error

func (f optionFunc) apply(s *Store) error { return f(s) }

// WithTable sets the table name, optionally schema-qualified ("app.idem").
// Default "rpc_idempotency" (found through the search_path).
func WithTable(name string) Option {
	return optionFunc(func(s *Store) error {
		table, raw, err := pgschema.ParseTable(name)
		if err != nil {
			return fmt.Errorf("%w: WithTable(%q): %v", ErrInvalidOption, name, err)
		}
		s.table, s.rawTable = table, raw
		return nil
	})
}

// WithQueryTimeout bounds each query, so a stuck database cannot hold a
// request forever (the middleware stores responses with a context that is
// not cancelled when the client leaves). Default 5s.
func WithQueryTimeout(d time.Duration) Option {
	return optionFunc(func(s *Store) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithQueryTimeout(%v): must be positive", ErrInvalidOption, d)
		}
		s.timeout = d
		return nil
	})
}

// Store is an rpc.IdempotencyStore in a PostgreSQL table.
type Store struct {
	db       DB
	table    string // sanitized
	rawTable string
	timeout  time.Duration

	qClaim, qRead, qComplete, qRelease, qDelete string
}

var _ rpc.IdempotencyStore = (*Store)(nil)

// New returns a Store using db. It does no I/O, so it takes no context: it
// does not create the table. Call Migrate once (for example at start-up
// or deployment), or apply Schema with a migration tool.
func New(db DB, opts ...Option) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: New: nil DB", ErrInvalidOption)
	}
	s := &Store{db: db, table: pgx.Identifier{DefaultTable}.Sanitize(), rawTable: DefaultTable, timeout: DefaultQueryTimeout}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil Option", ErrInvalidOption)
		}
		if err := o.apply(s); err != nil {
			return nil, err
		}
	}
	t := s.table
	s.qClaim = `insert into ` + t + ` as t (key, owner, fingerprint, expires_at)
values ($1, $4, $2, now() + $3::bigint * interval '1 microsecond')
on conflict (key) do update
set owner = excluded.owner, fingerprint = excluded.fingerprint, status = null, header = null, body = null,
    expires_at = excluded.expires_at, created_at = now()
where t.expires_at <= now()
returning true`
	s.qRead = `select fingerprint, status, header, body from ` + t + ` where key = $1 and expires_at > now()`
	s.qComplete = `update ` + t + ` set status = $2, header = $3, body = $4,
expires_at = now() + $5::bigint * interval '1 microsecond' where key = $1 and owner = $6`
	// released: the running claim was deleted; completed: token completed
	// the key (nothing to release).
	s.qRelease = `with d as (delete from ` + t + ` where key = $1 and owner = $2 and status is null returning 1)
select exists (select 1 from d),
       exists (select 1 from ` + t + ` where key = $1 and owner = $2 and status is not null)`
	s.qDelete = `delete from ` + t + ` where expires_at <= now()`
	return s, nil
}

// Schema returns the statements that create the table and its index, and
// add the owner column to a table made by an older version (the DDL,
// idempotent: "if not exists"), for migration tools that apply schema
// changes themselves. Migrate applies the same statements.
func (s *Store) Schema() string {
	return `create table if not exists ` + s.table + ` (
    key         text primary key,
    owner       text,
    fingerprint text not null,
    status      int,
    header      jsonb,
    body        bytea,
    expires_at  timestamptz not null,
    created_at  timestamptz not null default now()
);
alter table ` + s.table + ` add column if not exists owner text;
create index if not exists ` + pgx.Identifier{s.rawTable + "_expires_at"}.Sanitize() + ` on ` + s.table + ` (expires_at);`
}

// Migrate creates the table and its index if they do not exist. It runs
// Schema as one transaction under a transaction-level advisory lock keyed by
// the table name, so any number of instances may call it at once.
func (s *Store) Migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := pgschema.Apply(ctx, s.db, "go-integration/patterns/rpc/pgstore create table "+s.table, s.Schema()); err != nil {
		return fmt.Errorf("pgstore: create table %s: %w", s.table, err)
	}
	return nil
}

// Begin implements rpc.IdempotencyStore.
func (s *Store) Begin(ctx context.Context, key, fingerprint string, lock time.Duration) (rpc.Claim, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// A row can expire or be released between the claim and the read: then
	// claim again. Three rounds are plenty; more means something is wrong.
	for range 3 {
		var claimed bool
		token := ids.Hex()
		err := s.db.QueryRow(ctx, s.qClaim, key, fingerprint, lock.Microseconds(), token).Scan(&claimed)
		if err == nil {
			return rpc.Claim{Token: token}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return rpc.Claim{}, fmt.Errorf("pgstore: claim key: %w", err)
		}
		var (
			rec    rpc.Record
			status *int32
			header []byte
			body   []byte
		)
		err = s.db.QueryRow(ctx, s.qRead, key).Scan(&rec.Fingerprint, &status, &header, &body)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return rpc.Claim{}, fmt.Errorf("pgstore: read key: %w", err)
		}
		if status != nil {
			resp := &rpc.StoredResponse{StatusCode: int(*status), Header: http.Header{}, Body: body}
			if len(header) > 0 {
				if err := json.Unmarshal(header, &resp.Header); err != nil {
					return rpc.Claim{}, fmt.Errorf("pgstore: decode stored header: %w", err)
				}
			}
			rec.Response = resp
		}
		return rpc.Claim{Record: &rec}, nil
	}
	return rpc.Claim{}, fmt.Errorf("pgstore: key %q changed under us three times", key)
}

// Complete implements rpc.IdempotencyStore.
func (s *Store) Complete(ctx context.Context, key, token string, resp *rpc.StoredResponse, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	hdr := resp.Header
	if hdr == nil {
		hdr = http.Header{}
	}
	header, err := json.Marshal(hdr)
	if err != nil {
		return fmt.Errorf("pgstore: encode header: %w", err)
	}
	body := resp.Body
	if body == nil {
		body = []byte{}
	}
	tag, err := s.db.Exec(ctx, s.qComplete, key, resp.StatusCode, header, body, ttl.Microseconds(), token)
	if err != nil {
		return fmt.Errorf("pgstore: store response: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("pgstore: store response of key %.64q: %w", key, rpc.ErrStaleClaim)
	}
	return nil
}

// Release implements rpc.IdempotencyStore.
func (s *Store) Release(ctx context.Context, key, token string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var released, completed bool
	if err := s.db.QueryRow(ctx, s.qRelease, key, token).Scan(&released, &completed); err != nil {
		return fmt.Errorf("pgstore: release key: %w", err)
	}
	if !released && !completed {
		return fmt.Errorf("pgstore: release key %.64q: %w", key, rpc.ErrStaleClaim)
	}
	return nil
}

// Cleanup deletes expired rows and returns how many. Expired rows do
// no harm (they are taken over in place) but take space: run it now and then.
func (s *Store) Cleanup(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	tag, err := s.db.Exec(ctx, s.qDelete)
	if err != nil {
		return 0, fmt.Errorf("pgstore: delete expired: %w", err)
	}
	return tag.RowsAffected(), nil
}
