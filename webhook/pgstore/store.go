package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/go-integration/patterns/internal/ids"
	"github.com/go-integration/patterns/webhook"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store is a webhook.Store in PostgreSQL: endpoints, the delivery queue and
// the attempt log survive restarts, and several Sender processes share the
// queue. Delivery IDs are the decimal form of a bigint identity.
type Store struct {
	pool *pgxpool.Pool
}

var _ webhook.Store = (*Store)(nil)

// New returns a Store over pool. Run Migrate first.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Querier is what EnqueueTx needs: a pgx.Tx, a *pgx.Conn or a *pgxpool.Pool.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func wrap(op string, err error) error { return fmt.Errorf("pgstore: %s: %w", op, err) }

// SaveEndpoint implements webhook.Store.
func (s *Store) SaveEndpoint(ctx context.Context, e webhook.Endpoint) error {
	if e.ID == "" || e.URL == "" || len(e.Secrets) == 0 {
		return fmt.Errorf("pgstore: endpoint needs an ID, a URL and a secret (got ID %q, URL %q, %d secrets)", e.ID, e.URL, len(e.Secrets))
	}
	types := e.EventTypes
	if types == nil {
		types = []string{}
	}
	_, err := s.pool.Exec(ctx, `
insert into webhook_endpoints (id, url, secrets, event_types, disabled, disabled_reason)
values ($1, $2, $3, $4, $5, $6)
on conflict (id) do update set url = excluded.url, secrets = excluded.secrets, event_types = excluded.event_types,
	disabled = excluded.disabled, disabled_reason = excluded.disabled_reason, updated_at = now()`,
		e.ID, e.URL, e.Secrets, types, e.Disabled, e.DisabledReason)
	if err != nil {
		return wrap("save endpoint", err)
	}
	return nil
}

// Endpoint implements webhook.Store.
func (s *Store) Endpoint(ctx context.Context, id string) (webhook.Endpoint, error) {
	var e webhook.Endpoint
	var failing *time.Time
	err := s.pool.QueryRow(ctx, `
select id, url, secrets, event_types, disabled, disabled_reason, failing_since
from webhook_endpoints where id = $1`, id).Scan(&e.ID, &e.URL, &e.Secrets, &e.EventTypes, &e.Disabled, &e.DisabledReason, &failing)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, fmt.Errorf("%w: endpoint %q", webhook.ErrNotFound, id)
	}
	if err != nil {
		return e, wrap("endpoint", err)
	}
	if failing != nil {
		e.FailingSince = *failing
	}
	return e, nil
}

// DisableEndpoint implements webhook.Store.
func (s *Store) DisableEndpoint(ctx context.Context, id, reason string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `update webhook_endpoints set disabled = true, disabled_reason = $2, updated_at = now() where id = $1`, id, reason)
		if err != nil {
			return wrap("disable endpoint", err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: endpoint %q", webhook.ErrNotFound, id)
		}
		_, err = tx.Exec(ctx, `
update webhook_deliveries set state = 'failed', last_error = 'endpoint disabled: ' || $2, lease_token = null, lease_until = null
where endpoint_id = $1 and state = 'pending'`, id, reason)
		if err != nil {
			return wrap("disable endpoint", err)
		}
		return nil
	})
}

// EnableEndpoint implements webhook.Store.
func (s *Store) EnableEndpoint(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `
update webhook_endpoints set disabled = false, disabled_reason = '', failing_since = null, updated_at = now() where id = $1`, id)
	if err != nil {
		return wrap("enable endpoint", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: endpoint %q", webhook.ErrNotFound, id)
	}
	return nil
}

// Enqueue implements webhook.Store.
func (s *Store) Enqueue(ctx context.Context, m webhook.Message, at time.Time) (int, error) {
	return EnqueueTx(ctx, s.pool, m, at)
}

// EnqueueTx is Enqueue on q, typically the caller's transaction, so the
// webhook is stored if and only if the transaction commits (a transactional
// outbox). The message needs an ID (webhook.NewID; one that is empty or
// contains '.' gives webhook.ErrInvalidMessageID) and a Time; the Sender
// running elsewhere picks the deliveries up on its next poll.
func EnqueueTx(ctx context.Context, q Querier, m webhook.Message, at time.Time) (int, error) {
	if err := webhook.ValidateMessageID(m.ID); err != nil {
		return 0, fmt.Errorf("pgstore: enqueue: %w", err)
	}
	if m.Time.IsZero() {
		m.Time = at
	}
	payload := m.Payload
	if payload == nil {
		payload = []byte{}
	}
	tag, err := q.Exec(ctx, `
with msg as (
	insert into webhook_messages (id, type, payload, created_at) values ($1, $2, $3, $4)
	on conflict (id) do nothing
)
insert into webhook_deliveries (message_id, endpoint_id, next_attempt_at)
select $1, e.id, $5 from webhook_endpoints e
where not e.disabled and (cardinality(e.event_types) = 0 or $2 = any (e.event_types))
order by e.id
on conflict (message_id, endpoint_id) do nothing`, m.ID, m.Type, payload, m.Time, at)
	if err != nil {
		return 0, wrap("enqueue", err)
	}
	return int(tag.RowsAffected()), nil
}

const deliveryColumns = `d.id, d.state, d.attempts, d.next_attempt_at, d.last_error, coalesce(d.lease_token, ''),
	m.id, m.type, m.payload, m.created_at,
	e.id, e.url, e.secrets, e.event_types, e.disabled, e.disabled_reason, e.failing_since`

func scanDelivery(row pgx.Row) (webhook.Delivery, error) {
	var d webhook.Delivery
	var id int64
	var state string
	var failing *time.Time
	err := row.Scan(&id, &state, &d.Attempts, &d.NextAttempt, &d.LastError, &d.Lease,
		&d.Message.ID, &d.Message.Type, &d.Message.Payload, &d.Message.Time,
		&d.Endpoint.ID, &d.Endpoint.URL, &d.Endpoint.Secrets, &d.Endpoint.EventTypes, &d.Endpoint.Disabled, &d.Endpoint.DisabledReason, &failing)
	d.ID, d.State = strconv.FormatInt(id, 10), webhook.DeliveryState(state)
	if failing != nil {
		d.Endpoint.FailingSince = *failing
	}
	return d, err
}

// Claim implements webhook.Store with FOR UPDATE SKIP LOCKED: concurrent
// claimers in any process skip each other's rows instead of waiting.
func (s *Store) Claim(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]webhook.Delivery, error) {
	rows, err := s.pool.Query(ctx, `
with due as (
	select d.id from webhook_deliveries d
	join webhook_endpoints e on e.id = d.endpoint_id
	where d.state = 'pending' and d.next_attempt_at <= $1
		and (d.lease_until is null or d.lease_until <= $1) and not e.disabled
	order by d.next_attempt_at, d.id
	limit $3
	for update of d skip locked
), claimed as (
	update webhook_deliveries d set lease_token = $4 || '-' || d.id, lease_until = $2
	from due where d.id = due.id
	returning d.*
)
select `+deliveryColumns+`
from claimed d
join webhook_messages m on m.id = d.message_id
join webhook_endpoints e on e.id = d.endpoint_id
order by d.next_attempt_at, d.id`, now, now.Add(lease), limit, ids.Hex())
	if err != nil {
		return nil, wrap("claim", err)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (webhook.Delivery, error) { return scanDelivery(r) })
	if err != nil {
		return nil, wrap("claim", err)
	}
	return ds, nil
}

// Record implements webhook.Store in one transaction.
func (s *Store) Record(ctx context.Context, d webhook.Delivery, a webhook.Attempt) (time.Time, error) {
	id, err := strconv.ParseInt(d.ID, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: delivery %q", webhook.ErrNotFound, d.ID)
	}
	var next *time.Time
	if a.State == webhook.DeliveryPending {
		next = &a.NextAttempt
	}
	body := a.ResponseBody
	if body == nil {
		body = []byte{}
	}
	var failing *time.Time
	var moved bool
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
insert into webhook_attempts (delivery_id, number, started_at, duration_us, status_code, response_body, error, state, next_attempt_at)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			id, a.Number, a.Start, a.Duration.Microseconds(), a.StatusCode, body, a.Error, string(a.State), next)
		if err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "23503" { // foreign_key_violation
				return fmt.Errorf("%w: delivery %q", webhook.ErrNotFound, d.ID)
			}
			return wrap("record attempt", err)
		}
		tag, err := tx.Exec(ctx, `
update webhook_deliveries set state = $3, attempts = $4, next_attempt_at = coalesce($5, next_attempt_at),
	last_error = $6, lease_token = null, lease_until = null
where id = $1 and lease_token = $2 and state = 'pending'`, id, d.Lease, string(a.State), a.Number, next, a.Error)
		if err != nil {
			return wrap("record attempt", err)
		}
		moved = tag.RowsAffected() == 1
		err = tx.QueryRow(ctx, `
update webhook_endpoints e set failing_since = case when $2 then null else coalesce(e.failing_since, $3) end
from webhook_deliveries d where d.id = $1 and e.id = d.endpoint_id
returning e.failing_since`, id, a.State == webhook.DeliverySucceeded, a.Start).Scan(&failing)
		if err != nil {
			return wrap("record endpoint health", err)
		}
		return nil
	})
	var since time.Time
	if failing != nil {
		since = *failing
	}
	if err != nil {
		return since, err
	}
	if !moved {
		return since, fmt.Errorf("%w: delivery %s", webhook.ErrLeaseLost, d.ID)
	}
	return since, nil
}

// Resend implements webhook.Store.
func (s *Store) Resend(ctx context.Context, messageID, endpointID string, now time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `
update webhook_deliveries set state = 'pending', attempts = 0, next_attempt_at = $3, last_error = '', lease_token = null, lease_until = null
where message_id = $1 and ($2 = '' or endpoint_id = $2)`, messageID, endpointID, now)
	if err != nil {
		return 0, wrap("resend", err)
	}
	if tag.RowsAffected() == 0 {
		return 0, fmt.Errorf("%w: deliveries of message %q", webhook.ErrNotFound, messageID)
	}
	return int(tag.RowsAffected()), nil
}

// ResendFailed implements webhook.Store.
func (s *Store) ResendFailed(ctx context.Context, endpointID string, now time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `
update webhook_deliveries set state = 'pending', attempts = 0, next_attempt_at = $2, last_error = '', lease_token = null, lease_until = null
where endpoint_id = $1 and state = 'failed'`, endpointID, now)
	if err != nil {
		return 0, wrap("resend failed", err)
	}
	return int(tag.RowsAffected()), nil
}

// Deliveries implements webhook.Store.
func (s *Store) Deliveries(ctx context.Context, messageID string) ([]webhook.Delivery, error) {
	rows, err := s.pool.Query(ctx, `
select `+deliveryColumns+`
from webhook_deliveries d
join webhook_messages m on m.id = d.message_id
join webhook_endpoints e on e.id = d.endpoint_id
where d.message_id = $1 order by e.id`, messageID)
	if err != nil {
		return nil, wrap("deliveries", err)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (webhook.Delivery, error) { return scanDelivery(r) })
	if err != nil {
		return nil, wrap("deliveries", err)
	}
	for i := range ds {
		ds[i].Lease = ""
	}
	return ds, nil
}

// Attempts implements webhook.Store.
func (s *Store) Attempts(ctx context.Context, deliveryID string) ([]webhook.Attempt, error) {
	id, err := strconv.ParseInt(deliveryID, 10, 64)
	if err != nil {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `
select number, started_at, duration_us, status_code, response_body, error, state, next_attempt_at
from webhook_attempts where delivery_id = $1 order by id`, id)
	if err != nil {
		return nil, wrap("attempts", err)
	}
	as, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (webhook.Attempt, error) {
		a := webhook.Attempt{DeliveryID: deliveryID}
		var us int64
		var state string
		var next *time.Time
		err := r.Scan(&a.Number, &a.Start, &us, &a.StatusCode, &a.ResponseBody, &a.Error, &state, &next)
		a.Duration, a.State = time.Duration(us)*time.Microsecond, webhook.DeliveryState(state)
		if next != nil {
			a.NextAttempt = *next
		}
		return a, err
	})
	if err != nil {
		return nil, wrap("attempts", err)
	}
	return slices.Clip(as), nil
}

// Purge deletes the messages created before cutoff that have no pending
// delivery, with their deliveries and attempt logs, and returns how many
// messages it deleted. Run it periodically to bound the tables.
func (s *Store) Purge(ctx context.Context, cutoff time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
delete from webhook_messages m where m.created_at < $1
and not exists (select 1 from webhook_deliveries d where d.message_id = m.id and d.state = 'pending')`, cutoff)
	if err != nil {
		return 0, wrap("purge", err)
	}
	return tag.RowsAffected(), nil
}
