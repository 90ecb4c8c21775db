package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/outbox"
	"github.com/go-integration/patterns/rpc"
)

// tracedBooking is the booking whose trace the tour prints at the end.
const tracedBooking = "b-1001"

const bookingsDDL = `create table bookings (
	id        text primary key,
	rental    text not null,
	country   text not null,
	town      text not null,
	nights    integer not null,
	booked_at timestamptz not null
)`

// insertBooking writes one booking row through tx.
func insertBooking(ctx context.Context, tx pgx.Tx, b booking) error {
	_, err := tx.Exec(ctx, `insert into bookings (id, rental, country, town, nights, booked_at) values ($1, $2, $3, $4, $5, $6)`,
		b.ID, b.Rental, b.Country, b.Town, b.Nights, b.BookedAt)
	return err
}

// monolithOutbox writes each booking and its booking_created event in one
// transaction; a relay publishes the committed events to a broker. A booking
// whose transaction rolls back never announces itself.
func monolithOutbox(ctx context.Context, t *tour, e *env) error {
	if err := e.needDB(); err != nil {
		return err
	}
	t.printf("   The monolith stores a booking and the event announcing it in ONE transaction:\n")
	t.printf("   no event without its booking, no booking without its event.\n")
	if _, err := e.pool.Exec(ctx, bookingsDDL); err != nil {
		return fmt.Errorf("create bookings: %w", err)
	}
	if err := outbox.Migrate(ctx, e.pool); err != nil {
		return fmt.Errorf("migrate outbox: %w", err)
	}
	t.printf("   created tables bookings and outbox (outbox.Migrate)\n")
	// Adding through a Table with the telemetry tracer stores the request's
	// trace context in the row: the relay's publish continues that trace.
	table, err := outbox.NewTable(outbox.DefaultTable, outbox.WithTracer(t.tel.Outbox()))
	if err != nil {
		return err
	}

	// Each booking comes in as a request to POST /bookings (played here
	// without a network: its server span is what an HTTP middleware makes).
	write := func(b booking, commit bool) (err error) {
		ctx, span := t.obs.startRequest(ctx, nil, "POST /bookings", bookingIDKey.String(b.ID))
		status := http.StatusCreated
		if !commit {
			status = http.StatusPaymentRequired
		}
		defer func() {
			if err != nil {
				status = http.StatusInternalServerError
			}
			endRequest(span, status)
		}()
		tx, err := e.pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if err := insertBooking(ctx, tx, b); err != nil {
			return fmt.Errorf("insert %s: %w", b.ID, err)
		}
		payload, err := json.Marshal(b)
		if err != nil {
			return err
		}
		if err := table.Add(ctx, tx, "booking_created", broker.Message{Key: b.key(), Payload: payload}); err != nil {
			return fmt.Errorf("outbox.Add %s: %w", b.ID, err)
		}
		if !commit {
			return tx.Rollback(ctx)
		}
		return tx.Commit(ctx)
	}
	for _, b := range sampleBookings {
		if err := write(b, true); err != nil {
			return err
		}
		t.printf("   committed booking %s (%s, %d nights) + booking_created in one transaction\n", b.ID, b.Rental, b.Nights)
	}
	declined := booking{ID: "b-1099", Rental: "chalet-17", Country: "france", Town: "nevache", Nights: 3, BookedAt: at("2026-07-01T12:00:00Z")}
	if err := write(declined, false); err != nil {
		return err
	}
	var rows, events int
	if err := e.pool.QueryRow(ctx, `select (select count(*) from bookings), (select count(*) from outbox)`).Scan(&rows, &events); err != nil {
		return err
	}
	if rows != len(sampleBookings) || events != len(sampleBookings) {
		return fmt.Errorf("%d bookings and %d outbox rows, want %d of each", rows, events, len(sampleBookings))
	}
	t.printf("   booking %s: payment declined, transaction rolled back: still %d bookings, %d events in the outbox\n", declined.ID, rows, events)

	// The relay publishes committed outbox rows to any broker.Publisher; here
	// the in-memory broker, where a notifications service listens.
	b := memory.MustNew(memory.WithTracer(t.tel.Broker()))
	defer b.Close()
	sub := broker.Subscription{Topic: "booking_created", Group: "notifications"}
	if err := b.Provision(ctx, sub); err != nil {
		return err
	}
	relay, err := outbox.NewRelay(e.pool, b, outbox.WithPollInterval(50*time.Millisecond), outbox.WithLogger(t.logger()),
		outbox.WithTracer(t.tel.Outbox()))
	if err != nil {
		return err
	}
	stopBacklog, err := t.tel.ObserveBacklog(relay) // patterns.outbox.pending and oldest_pending.age
	if err != nil {
		return err
	}
	defer stopBacklog()
	runCtx, stop := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(runCtx) }()
	defer func() {
		stop()
		<-relayDone
	}()
	t.printf("   relay started (outbox.NewRelay -> memory broker)\n")

	// For each booking, notifications asks the guest-messaging service (over
	// HTTP, with the rpc client) to email the guest: the call is part of the
	// booking's trace.
	messaging := httptest.NewServer(t.obs.serve("POST /emails", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	})))
	defer messaging.Close()
	client, err := rpc.NewClient(rpc.WithTracer(t.tel.RPC()))
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	email := func(ctx context.Context, bk booking) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, messaging.URL+"/emails", strings.NewReader(`{"booking":"`+bk.ID+`"}`))
		if err != nil {
			return "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		return resp.Status, nil
	}

	type notified struct {
		booking
		email string
	}
	got := make(chan notified, 16) // buffered: the handler never blocks
	subCtx, stopSub := context.WithCancel(ctx)
	subDone := make(chan error, 1)
	go func() {
		subDone <- b.Subscribe(subCtx, sub, func(ctx context.Context, m broker.Message) error {
			var bk booking
			if err := json.Unmarshal(m.Payload, &bk); err != nil {
				return broker.Permanent(err)
			}
			status, err := email(ctx, bk)
			if err != nil {
				return err // redelivered
			}
			got <- notified{bk, status}
			return nil
		})
	}()
	defer func() {
		stopSub()
		<-subDone
	}()
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < len(sampleBookings) {
		select {
		case bk := <-got:
			seen[bk.ID] = true
			t.printf("   notifications received booking_created %s for %s, asked guest-messaging to email the guest: %s\n", bk.ID, bk.Rental, bk.email)
		case <-wait.Done():
			return fmt.Errorf("relay published %d of %d events in 10 s", len(seen), len(sampleBookings))
		}
	}
	if seen[declined.ID] {
		return errors.New("the rolled-back booking was published")
	}
	// The relay marks rows published once the broker confirmed them, in the
	// transaction that claimed them, and counts them after that commit: wait for it.
	var st outbox.Stats
	var backlog outbox.Backlog
	for {
		var err error
		if backlog, err = relay.Backlog(ctx); err != nil {
			return err
		}
		if st = relay.Stats(); backlog.Pending == 0 && st.Published == uint64(len(sampleBookings)) {
			break
		}
		select {
		case <-wait.Done():
			return fmt.Errorf("relay stats: %d published, %d pending; want %d and 0", st.Published, backlog.Pending, len(sampleBookings))
		case <-time.After(20 * time.Millisecond):
		}
	}
	// Nothing else may arrive: the declined booking's event never existed.
	select {
	case bk := <-got:
		return fmt.Errorf("unexpected event for %s", bk.ID)
	case <-time.After(100 * time.Millisecond):
	}
	t.printf("   relay: %d published, %d pending; %s was never announced\n", st.Published, backlog.Pending, declined.ID)
	return nil
}
