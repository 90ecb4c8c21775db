package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/internal/ids"
	"github.com/go-integration/patterns/webhook"
)

// Dedup is a webhook.DedupStore in the webhook_dedup table, shared by every
// Receiver process that uses the same database. Call Cleanup now and then to
// delete expired entries.
//
// Each claim writes a new owner token to the row's owner column; Done and
// Forget change the row only "where id = $1 and owner = $2", so a handler
// whose lease expired and was taken over cannot overwrite the newer claim.
type Dedup struct {
	pool *pgxpool.Pool
}

var _ webhook.DedupStore = (*Dedup)(nil)

// NewDedup returns a Dedup over pool. Run Migrate first.
func NewDedup(pool *pgxpool.Pool) *Dedup { return &Dedup{pool: pool} }

// Begin implements webhook.DedupStore.
func (d *Dedup) Begin(ctx context.Context, id string, now, until time.Time) (webhook.DedupClaim, error) {
	var inserted bool
	var done *bool
	token := ids.Hex()
	err := d.pool.QueryRow(ctx, `
with ins as (
	insert into webhook_dedup (id, owner, done, expires_at) values ($1, $4, false, $3)
	on conflict (id) do update set owner = excluded.owner, done = false, expires_at = excluded.expires_at
	where webhook_dedup.expires_at <= $2
	returning 1
)
select exists (select 1 from ins), (select done from webhook_dedup where id = $1)`, id, now, until, token).Scan(&inserted, &done)
	switch {
	case err != nil:
		return webhook.DedupClaim{}, fmt.Errorf("pgstore: dedup begin: %w", err)
	case inserted:
		return webhook.DedupClaim{State: webhook.DedupNew, Token: token}, nil
	case done != nil && *done:
		return webhook.DedupClaim{State: webhook.DedupDone}, nil
	default:
		return webhook.DedupClaim{State: webhook.DedupInFlight}, nil
	}
}

// Done implements webhook.DedupStore.
func (d *Dedup) Done(ctx context.Context, id, token string, until time.Time) error {
	tag, err := d.pool.Exec(ctx, `update webhook_dedup set done = true, expires_at = $3 where id = $1 and owner = $2`, id, token, until)
	if err != nil {
		return fmt.Errorf("pgstore: dedup done: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("pgstore: dedup done %.64q: %w", id, webhook.ErrStaleClaim)
	}
	return nil
}

// Forget implements webhook.DedupStore.
func (d *Dedup) Forget(ctx context.Context, id, token string) error {
	tag, err := d.pool.Exec(ctx, `delete from webhook_dedup where id = $1 and owner = $2`, id, token)
	if err != nil {
		return fmt.Errorf("pgstore: dedup forget: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("pgstore: dedup forget %.64q: %w", id, webhook.ErrStaleClaim)
	}
	return nil
}

// Cleanup deletes entries that expired before now and returns how many.
func (d *Dedup) Cleanup(ctx context.Context, now time.Time) (int64, error) {
	tag, err := d.pool.Exec(ctx, `delete from webhook_dedup where expires_at <= $1`, now)
	if err != nil {
		return 0, fmt.Errorf("pgstore: dedup sweep: %w", err)
	}
	return tag.RowsAffected(), nil
}
