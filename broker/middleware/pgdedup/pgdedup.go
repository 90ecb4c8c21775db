// Package pgdedup is a middleware.DedupStore in PostgreSQL (pgx/v5): one
// table, shared by any number of consumer processes, so a message ID
// delivered to several of them is handled once.
//
// One row per message ID holds its state (in progress or handled), the owner
// token of the claim and its expiry. A claim is a single
// INSERT ... ON CONFLICT DO UPDATE ... WHERE expired statement, so of many
// concurrent claims in any number of processes exactly one wins; an expired
// row (a claim whose consumer died, or a handled entry past its lifetime) is
// taken over in place under a new token. Done and Release are conditional on
// the token: an owner whose claim was taken over gets
// middleware.ErrStaleClaim and changes nothing. Times come from the database
// clock (now()), so consumers with skewed clocks agree on expiry.
//
// Rows are keyed by the SHA-256 of the ID, so IDs of any length and any bytes
// fit the primary key's index; the ID itself is kept as bytea for people
// reading the table. The table (Migrate makes it under an advisory lock,
// so every instance may call it at start-up; or apply Schema with a
// migration tool):
//
//	create table broker_dedup (
//	    id_hash     bytea primary key,   -- sha256(id)
//	    id          bytea not null,
//	    handled     boolean not null,    -- false: in progress
//	    token       text not null,       -- owner of the claim
//	    expires_at  timestamptz not null,
//	    updated_at  timestamptz not null default now()
//	);
//	create index on broker_dedup (expires_at);
//
// Expired rows do no harm but take space: call Cleanup now and then (a
// ticker in one instance, or a cron job).
package pgdedup

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/go-integration/patterns/broker/middleware"
	"github.com/go-integration/patterns/internal/ids"
	"github.com/go-integration/patterns/internal/pgschema"
)

// DB is what the store needs from PostgreSQL; *pgxpool.Pool satisfies it
// (a single *pgx.Conn does too, but is not safe for concurrent handlers).
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Default values of the options.
const (
	DefaultTable        = "broker_dedup"
	DefaultQueryTimeout = 5 * time.Second
)

// ErrInvalidOption is returned (wrapped) by New for a bad argument or
// option; the error names it.
var ErrInvalidOption = errors.New("pgdedup: invalid option")

// Option configures a Store. Options are made by the WithX functions.
type Option interface{ apply(*config) }

type config struct {
	table    string // quoted for SQL
	rawTable string // last part, for the index name
	timeout  time.Duration
	errs     []error
}

type option func(*config)

func (o option) apply(c *config) { o(c) }

// invalid records a bad value, naming it.
func (c *config) invalid(what string, err error) {
	c.errs = append(c.errs, fmt.Errorf("%w: %s: %w", ErrInvalidOption, what, err))
}

// WithTable sets the table name, optionally schema-qualified ("app.dedup").
// Default DefaultTable, found through the search_path.
func WithTable(name string) Option {
	return option(func(c *config) {
		var err error
		if c.table, c.rawTable, err = pgschema.ParseTable(name); err != nil {
			c.invalid(fmt.Sprintf("WithTable(%q)", name), err)
		}
	})
}

// WithQueryTimeout bounds each query, so a stuck database cannot hold a
// handler forever (Dedup calls Done and Release with a context that is not
// cancelled when the subscription stops). It must be positive; default
// DefaultQueryTimeout.
func WithQueryTimeout(d time.Duration) Option {
	return option(func(c *config) {
		if c.timeout = d; d <= 0 {
			c.invalid(fmt.Sprintf("WithQueryTimeout(%v)", d), errors.New("must be positive"))
		}
	})
}

// Store is a middleware.DedupStore in a PostgreSQL table.
type Store struct {
	db DB
	config

	qClaim, qRead, qDone, qRelease, qCleanup string
}

var _ middleware.DedupStore = (*Store)(nil)

// New returns a Store using db (required). It does no I/O, so it takes no
// context, and does not create the table: call Migrate (at start-up or
// deployment), or apply Schema with a migration tool.
func New(db DB, opts ...Option) (*Store, error) {
	c := config{timeout: DefaultQueryTimeout}
	c.table, c.rawTable, _ = pgschema.ParseTable(DefaultTable)
	if db == nil {
		c.invalid("New", errors.New("nil DB"))
	}
	for _, o := range opts {
		if o == nil {
			c.invalid("New", errors.New("nil option"))
			continue
		}
		o.apply(&c)
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	t := c.table
	return &Store{db: db, config: c,
		qClaim: `insert into ` + t + ` as t (id_hash, id, handled, token, expires_at)
values ($1, $2, false, $3, now() + $4::bigint * interval '1 microsecond')
on conflict (id_hash) do update
set handled = false, token = excluded.token, expires_at = excluded.expires_at, updated_at = now()
where t.expires_at <= now()
returning true`,
		qRead: `select handled from ` + t + ` where id_hash = $1 and expires_at > now()`,
		qDone: `update ` + t + ` set handled = true, expires_at = now() + $3::bigint * interval '1 microsecond', updated_at = now()
where id_hash = $1 and token = $2`,
		qRelease: `delete from ` + t + ` where id_hash = $1 and token = $2 and not handled`,
		qCleanup: `delete from ` + t + ` where expires_at <= now()`,
	}, nil
}

// Schema returns the statements that create the table and its index
// (idempotent: "if not exists"), for migration tools that apply schema
// changes themselves. Migrate applies the same statements.
func (s *Store) Schema() string {
	return `create table if not exists ` + s.table + ` (
    id_hash     bytea primary key,
    id          bytea not null,
    handled     boolean not null,
    token       text not null,
    expires_at  timestamptz not null,
    updated_at  timestamptz not null default now()
);
create index if not exists ` + pgx.Identifier{s.rawTable + "_expires_at"}.Sanitize() + ` on ` + s.table + ` (expires_at);`
}

// Migrate creates the table and its index if they do not exist. It runs
// Schema as one transaction under a transaction-level advisory lock keyed by
// the table name (internal/pgschema), so any number of instances may call it
// at once.
func (s *Store) Migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := pgschema.Apply(ctx, s.db, "go-integration/patterns/broker/middleware/pgdedup create table "+s.table, s.Schema()); err != nil {
		return fmt.Errorf("pgdedup: create table %s: %w", s.table, err)
	}
	return nil
}

func hashID(id string) []byte {
	h := sha256.Sum256([]byte(id))
	return h[:]
}

// Claim implements middleware.DedupStore.
func (s *Store) Claim(ctx context.Context, id string, inProgressTTL time.Duration) (middleware.Claim, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key := hashID(id)
	// The row can expire or be released between the claim and the read:
	// then claim again. Three rounds are plenty; more means something is wrong.
	for range 3 {
		token := ids.Hex()
		var claimed bool
		err := s.db.QueryRow(ctx, s.qClaim, key, []byte(id), token, inProgressTTL.Microseconds()).Scan(&claimed)
		if err == nil {
			return middleware.Claim{Result: middleware.Claimed, Token: token}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return middleware.Claim{}, fmt.Errorf("pgdedup: claim: %w", err)
		}
		var handled bool
		err = s.db.QueryRow(ctx, s.qRead, key).Scan(&handled)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return middleware.Claim{}, fmt.Errorf("pgdedup: read claim: %w", err)
		}
		if handled {
			return middleware.Claim{Result: middleware.Handled}, nil
		}
		return middleware.Claim{Result: middleware.InProgress}, nil
	}
	return middleware.Claim{}, fmt.Errorf("pgdedup: id %.64q changed under us three times", id)
}

// Done implements middleware.DedupStore. A claim past its in-progress
// lifetime that no other delivery has taken over (nor Cleanup deleted) is
// still its owner's, so Done succeeds.
func (s *Store) Done(ctx context.Context, id, token string, handledTTL time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	tag, err := s.db.Exec(ctx, s.qDone, hashID(id), token, handledTTL.Microseconds())
	if err != nil {
		return fmt.Errorf("pgdedup: done: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("pgdedup: done %.64q: %w", id, middleware.ErrStaleClaim)
	}
	return nil
}

// Release implements middleware.DedupStore.
func (s *Store) Release(ctx context.Context, id, token string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	tag, err := s.db.Exec(ctx, s.qRelease, hashID(id), token)
	if err != nil {
		return fmt.Errorf("pgdedup: release: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("pgdedup: release %.64q: %w", id, middleware.ErrStaleClaim)
	}
	return nil
}

// Cleanup deletes expired rows (handled entries past their lifetime and
// abandoned claims) and returns how many. Expired rows do no harm (a claim
// takes them over in place) but take space: run it now and then. An owner
// whose expired claim Cleanup deleted gets ErrStaleClaim from Done.
func (s *Store) Cleanup(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	tag, err := s.db.Exec(ctx, s.qCleanup)
	if err != nil {
		return 0, fmt.Errorf("pgdedup: cleanup: %w", err)
	}
	return tag.RowsAffected(), nil
}
