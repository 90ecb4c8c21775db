package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/broker/kafka"
)

// cdcRow is the part of a bookings row the occupancy service keeps.
type cdcRow struct {
	ID     string `json:"id"`
	Rental string `json:"rental"`
	Nights int    `json:"nights"`
}

// cdcEvent is the part of a Debezium change event the service reads.
type cdcEvent struct {
	Op     string  `json:"op"`
	Before *cdcRow `json:"before"`
	After  *cdcRow `json:"after"`
}

// changeDataCapture streams the monolith's bookings table to Kafka through
// PostgreSQL logical replication, without touching the monolith's code: a
// snapshot of the rows already there, then every committed change. A new
// occupancy service, started afterwards, replays the topic from the
// beginning and ends with the table's current state.
func changeDataCapture(ctx context.Context, t *tour, e *env) error {
	if err := e.needDB(); err != nil {
		return err
	}
	t.printf("   The monolith's code stays as it is: its bookings table is read from the write-ahead\n")
	t.printf("   log (logical replication) and each committed change goes to Kafka as a Debezium event.\n")
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(3), kfake.Ports(0),
		kfake.GroupMinSessionTimeout(200*time.Millisecond))
	if err != nil {
		return fmt.Errorf("start kfake: %w", err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	quiet := kafka.WithLogger(t.logger())
	pub, err := kafka.NewPublisher(brokers, quiet, kafka.WithCreateTopics(kafka.Topic{Partitions: 3}), kafka.WithTracer(t.tel.Broker()))
	if err != nil {
		return err
	}
	defer pub.Close()

	slot := e.schema // unique per run; dropped at the end
	table := e.schema + ".bookings"
	state := e.schema + ".cdc_state"
	src, err := cdc.New(ctx, e.databaseURL, pub, cdc.WithSlot(slot), cdc.WithPublication(slot), cdc.WithTables(table),
		cdc.WithStateTable(state), cdc.WithTopicPrefix("monolith"), cdc.WithStatusInterval(200*time.Millisecond),
		cdc.WithLogger(t.logger()))
	if errors.Is(err, cdc.ErrWALLevel) || errors.Is(err, cdc.ErrPermission) {
		return errSkip{brief(err)}
	}
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		// A slot left behind keeps WAL on the server forever.
		if err := cdc.DropWithState(ctx, e.databaseURL, slot, slot, state); err != nil {
			t.printf("   could not drop slot %s: %v\n", slot, err)
		}
	}()
	topic := "monolith." + table
	t.printf("   capturing %s through slot %s to topic %s\n", "bookings", slot, "monolith.<schema>.bookings")
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	runDone := make(chan error, 1)
	running.Go(func() { runDone <- src.Run(runCtx) })
	defer func() { _ = src.Close(); stop(); running.Wait() }()

	// Run creates the slot and publishes a snapshot of the rows already
	// there; every transaction that commits after the slot's creation is
	// streamed. Wait for the snapshot, so that the monolith's next changes
	// show up as changes rather than in the snapshot.
	var before int
	if err := e.pool.QueryRow(ctx, `select count(*) from bookings`).Scan(&before); err != nil {
		return err
	}
	if err := waitPublished(ctx, src, runDone, uint64(before)); err != nil {
		return err
	}

	// The monolith goes on, unchanged.
	if _, err := e.pool.Exec(ctx, `begin;
		update bookings set nights = nights + 2 where id = 'b-1002';
		insert into bookings (id, rental, country, town, nights, booked_at) values ('b-1006', 'flat-3', 'france', 'paris', 4, now());
		commit;
		delete from bookings where id = 'b-1003'`); err != nil {
		return err
	}
	t.printf("   the monolith had %d bookings; then it extended b-1002, took b-1006 and cancelled b-1003\n", before)

	// Wait until the source published the three changes too.
	want := uint64(before) + 3
	if err := waitPublished(ctx, src, runDone, want); err != nil {
		return err
	}
	st := src.Stats()
	t.printf("   cdc: %d snapshot rows (op r) and %d changes published to Kafka and confirmed\n", st.SnapshotRows, st.Changes)

	// Months later, an occupancy service starts from nothing: a new group
	// replays the topic from the beginning and rebuilds the table.
	t.printf("   a new occupancy service replays %s from the beginning:\n", "the topic")
	sub, err := kafka.NewSubscriber(brokers, quiet, kafka.WithTracer(t.tel.Broker()),
		kafka.WithGroupTimeouts(time.Second, 5*time.Second, 100*time.Millisecond), kafka.WithCommitInterval(100*time.Millisecond),
		kafka.WithStartAt(kafka.Earliest()))
	if err != nil {
		return err
	}
	defer sub.Close()
	view := map[string]cdcRow{}
	var mu sync.Mutex
	n := uint64(0)
	done := make(chan struct{})
	subCtx, subStop := context.WithCancel(ctx)
	defer subStop()
	subDone := make(chan error, 1)
	go func() {
		subDone <- sub.Subscribe(subCtx, broker.Subscription{Topic: topic, Group: "occupancy"}, func(ctx context.Context, m broker.Message) error {
			var ev cdcEvent
			if err := json.Unmarshal(m.Payload, &ev); err != nil {
				return broker.Permanent(err)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case ev.After != nil:
				view[ev.After.ID] = *ev.After
			case ev.Before != nil:
				delete(view, ev.Before.ID)
			}
			if ev.Op != "r" {
				t.printf("   occupancy: op %s %s\n", ev.Op, describe(ev))
			}
			if n++; n == want {
				close(done)
			}
			return nil
		})
	}()
	select {
	case <-done:
	case err := <-subDone:
		return fmt.Errorf("occupancy stopped: %v", err)
	case <-time.After(15 * time.Second):
		return errors.New("occupancy did not get every event in 15 s")
	}
	subStop()
	if err := <-subDone; err != nil {
		return err
	}

	// Its view is the table.
	rows, err := e.pool.Query(ctx, `select id, rental, nights from bookings order by id`)
	if err != nil {
		return err
	}
	table2 := map[string]cdcRow{}
	for rows.Next() {
		var r cdcRow
		if err := rows.Scan(&r.ID, &r.Rental, &r.Nights); err != nil {
			return err
		}
		table2[r.ID] = r
	}
	if err := rows.Err(); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	if !maps.Equal(view, table2) {
		return fmt.Errorf("occupancy's view %v differs from the table %v", view, table2)
	}
	t.printf("   occupancy's view equals the bookings table: %s\n", strings.Join(slices.Sorted(maps.Keys(view)), ", "))
	return nil
}

// describe is one line about a change.
func describe(ev cdcEvent) string {
	switch {
	case ev.Op == "d" && ev.Before != nil:
		return ev.Before.ID + " deleted"
	case ev.After != nil:
		return fmt.Sprintf("%s %s, %d nights", ev.After.ID, ev.After.Rental, ev.After.Nights)
	}
	return ""
}

// waitPublished waits until src's publisher confirmed n snapshot rows and
// changes in all.
func waitPublished(ctx context.Context, src *cdc.Source, runDone <-chan error, n uint64) error {
	for {
		st := src.Stats()
		if st.SnapshotRows+st.Changes >= n {
			return nil
		}
		select {
		case err := <-runDone:
			return fmt.Errorf("cdc stopped: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("cdc: %d of %d published: %w", st.SnapshotRows+st.Changes, n, ctx.Err())
		case <-time.After(20 * time.Millisecond): // Stats has no signal to wait on
		}
	}
}
