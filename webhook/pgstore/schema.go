package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/internal/pgschema"
)

const schemaSQL = `
create table if not exists webhook_endpoints (
	id              text primary key,
	url             text not null,
	secrets         text[] not null,
	event_types     text[] not null default '{}',
	disabled        boolean not null default false,
	disabled_reason text not null default '',
	failing_since   timestamptz,
	updated_at      timestamptz not null default now()
);
create table if not exists webhook_messages (
	id         text primary key,
	type       text not null,
	payload    bytea not null,
	created_at timestamptz not null
);
create table if not exists webhook_deliveries (
	id              bigint generated always as identity primary key,
	message_id      text not null references webhook_messages (id) on delete cascade,
	endpoint_id     text not null references webhook_endpoints (id) on delete cascade,
	state           text not null default 'pending' check (state in ('pending', 'succeeded', 'failed')),
	attempts        int not null default 0,
	next_attempt_at timestamptz not null,
	lease_token     text,
	lease_until     timestamptz,
	last_error      text not null default '',
	unique (message_id, endpoint_id)
);
create index if not exists webhook_deliveries_due on webhook_deliveries (next_attempt_at, id) where state = 'pending';
create index if not exists webhook_deliveries_endpoint on webhook_deliveries (endpoint_id, state);
create table if not exists webhook_attempts (
	id              bigint generated always as identity primary key,
	delivery_id     bigint not null references webhook_deliveries (id) on delete cascade,
	number          int not null,
	started_at      timestamptz not null,
	duration_us     bigint not null,
	status_code     int not null default 0,
	response_body   bytea not null default '',
	error           text not null default '',
	state           text not null,
	next_attempt_at timestamptz
);
create index if not exists webhook_attempts_delivery on webhook_attempts (delivery_id, id);
create table if not exists webhook_dedup (
	id         text primary key,
	owner      text,
	done       boolean not null,
	expires_at timestamptz not null
);
alter table webhook_dedup add column if not exists owner text;
create index if not exists webhook_dedup_expires on webhook_dedup (expires_at);
`

// Schema returns the statements that create the tables and indexes of Store
// and Dedup, and add the columns of newer versions to existing tables (the DDL, idempotent: "if not exists", unqualified names, so they
// land in the search_path), for migration tools that apply schema changes
// themselves. Migrate applies the same statements.
func Schema() string { return schemaSQL }

// Migrate creates the tables and indexes of Store and Dedup in the pool's
// search_path if they do not exist, and adds the columns of newer versions
// (webhook_dedup.owner) to existing tables. It runs Schema as one transaction under a
// transaction-level advisory lock, so it is safe to run from several
// processes at once.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if err := pgschema.Apply(ctx, pool, "patterns/webhook/pgstore.Migrate", schemaSQL); err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	return nil
}
