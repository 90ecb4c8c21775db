package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/go-integration/patterns/webhook"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Dedup is a webhook.DedupStore in the webhook_dedup table, shared by every
// Receiver process that uses the same database. Call Sweep now and then to
// delete expired entries.
type Dedup struct {
	pool *pgxpool.Pool
}

var _ webhook.DedupStore = (*Dedup)(nil)

// NewDedup returns a Dedup over pool. Run Migrate first.
func NewDedup(pool *pgxpool.Pool) *Dedup { return &Dedup{pool: pool} }

// Begin implements webhook.DedupStore.
func (d *Dedup) Begin(ctx context.Context, id string, now, until time.Time) (webhook.DedupState, error) {
	var inserted bool
	var done *bool
	err := d.pool.QueryRow(ctx, `
with ins as (
	insert into webhook_dedup (id, done, expires_at) values ($1, false, $3)
	on conflict (id) do update set done = false, expires_at = excluded.expires_at
	where webhook_dedup.expires_at <= $2
	returning 1
)
select exists (select 1 from ins), (select done from webhook_dedup where id = $1)`, id, now, until).Scan(&inserted, &done)
	switch {
	case err != nil:
		return 0, fmt.Errorf("pgstore: dedup begin: %w", err)
	case inserted:
		return webhook.DedupNew, nil
	case done != nil && *done:
		return webhook.DedupDone, nil
	default:
		return webhook.DedupInFlight, nil
	}
}

// Done implements webhook.DedupStore.
func (d *Dedup) Done(ctx context.Context, id string, until time.Time) error {
	_, err := d.pool.Exec(ctx, `
insert into webhook_dedup (id, done, expires_at) values ($1, true, $2)
on conflict (id) do update set done = true, expires_at = excluded.expires_at`, id, until)
	if err != nil {
		return fmt.Errorf("pgstore: dedup done: %w", err)
	}
	return nil
}

// Forget implements webhook.DedupStore.
func (d *Dedup) Forget(ctx context.Context, id string) error {
	if _, err := d.pool.Exec(ctx, `delete from webhook_dedup where id = $1`, id); err != nil {
		return fmt.Errorf("pgstore: dedup forget: %w", err)
	}
	return nil
}

// Sweep deletes entries that expired before now and returns how many.
func (d *Dedup) Sweep(ctx context.Context, now time.Time) (int64, error) {
	tag, err := d.pool.Exec(ctx, `delete from webhook_dedup where expires_at <= $1`, now)
	if err != nil {
		return 0, fmt.Errorf("pgstore: dedup sweep: %w", err)
	}
	return tag.RowsAffected(), nil
}
