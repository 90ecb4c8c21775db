package cdc_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/internal/testenv"
)

// TestSlotLost: a slot that disappears (dropped here, as a failover to a
// standby without it does on PostgreSQL before 17) stops a running source
// and a new one with ErrSlotLost, naming the way forward, instead of
// silently starting over; WithRecreateLostSlot starts over with a new slot
// and a full snapshot.
func TestSlotLost(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table items (id int primary key, name text)`)
	e.exec(t, `insert into items values (1, 'one'), (2, 'two')`)
	ctx := context.Background()
	r := newRecorder(t)
	s, err := cdc.New(ctx, e.dsn, r, e.opts(t, cdc.WithTables("items"))...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	e.streaming(t, s)
	e.exec(t, `insert into items values (3, 'three')`)
	testenv.Eventually(t, 10*time.Second, "the snapshot and a change", func() bool { return r.len() == 3 })

	// The slot goes while the source streams: its walsender is terminated
	// and the slot dropped before the source reconnects.
	testenv.Eventually(t, 10*time.Second, "the slot dropped", func() bool {
		_, err := e.db.Exec(ctx, `select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = $1 and active_pid is not null`, e.slot)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.db.Exec(ctx, `select pg_drop_replication_slot($1)`, e.slot)
		return err == nil
	})
	select {
	case err := <-done:
		if !errors.Is(err, cdc.ErrSlotLost) || !strings.Contains(err.Error(), "WithRecreateLostSlot") {
			t.Fatalf("Run after the slot was dropped: %v, want ErrSlotLost naming the fix", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop after its slot was dropped")
	}
	_ = s.Close()
	e.exec(t, `delete from items where id = 2`) // while no slot exists

	// A new process finds the snapshot state of the lost slot: the same.
	s2, err := cdc.New(ctx, e.dsn, r, e.opts(t, cdc.WithTables("items"))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Run(ctx); !errors.Is(err, cdc.ErrSlotLost) {
		t.Fatalf("Run of a new source on the lost slot: %v, want ErrSlotLost", err)
	}
	_ = s2.Close()

	// Starting over on request: a new slot, a full snapshot, then changes.
	before := r.len()
	s3, _ := e.start(t, r, cdc.WithTables("items"), cdc.WithRecreateLostSlot())
	e.streaming(t, s3)
	e.exec(t, `insert into items values (4, 'four')`)
	testenv.Eventually(t, 10*time.Second, "the new snapshot (2 rows) and a change", func() bool { return r.len() == before+3 })
	ops := ""
	for _, m := range r.all()[before:] {
		ops += m.m.Header[cdc.HeaderOp]
	}
	if ops != "rrc" {
		t.Errorf("ops after starting over %q, want rrc", ops)
	}
}
