package cdc_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/internal/testenv"
)

// newQuick calls New with a deadline: bad input must fail at once, not
// after retries.
func newQuick(t *testing.T, dsn string, opts ...cdc.Option) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	s, err := cdc.New(ctx, dsn, newRecorder(t), opts...)
	if err == nil {
		_ = s.Close()
		t.Fatal("New succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("New took %v to fail", d)
	}
	t.Logf("%v", err)
	return err
}

func TestBadInput(t *testing.T) {
	t.Run("wal_level", func(t *testing.T) {
		// The replica runs with wal_level = replica.
		err := newQuick(t, testenv.ReplicaDatabaseURL(t), cdc.WithTables("x"))
		if !errors.Is(err, cdc.ErrWALLevel) || !strings.Contains(err.Error(), "wal_level = logical") {
			t.Errorf("got %v, want ErrWALLevel naming the fix", err)
		}
		// It is also a standby: a logical standby (PostgreSQL 16 decodes
		// there) would still refuse the publication and state table.
		if !errors.Is(err, cdc.ErrStandby) || !strings.Contains(err.Error(), "connect to the primary") {
			t.Errorf("got %v, want ErrStandby too, naming the fix", err)
		}
	})
	t.Run("no publication", func(t *testing.T) {
		e := newEnv(t)
		err := newQuick(t, e.dsn, e.opts(t)...)
		if !errors.Is(err, cdc.ErrNoPublication) || !strings.Contains(err.Error(), "CREATE PUBLICATION") {
			t.Errorf("got %v, want ErrNoPublication naming the fix", err)
		}
	})
	t.Run("no primary key", func(t *testing.T) {
		e := newEnv(t)
		e.exec(t, `create table keyless (v int)`)
		e.exec(t, `create table ok (id int primary key)`)
		err := newQuick(t, e.dsn, e.opts(t, cdc.WithTables("ok", "keyless"))...)
		if !errors.Is(err, cdc.ErrNoReplicaIdentity) || !strings.Contains(err.Error(), "REPLICA IDENTITY FULL") || !strings.Contains(err.Error(), "keyless") {
			t.Errorf("got %v, want ErrNoReplicaIdentity naming the table and the fix", err)
		}
		e.exec(t, `alter table keyless replica identity full`)
		s, err := cdc.New(context.Background(), e.dsn, newRecorder(t), e.opts(t)...)
		if err != nil {
			t.Fatalf("with REPLICA IDENTITY FULL: %v", err)
		}
		_ = s.Close()
	})
	t.Run("replica identity nothing", func(t *testing.T) {
		e := newEnv(t)
		e.exec(t, `create table nothing (id int primary key)`)
		e.exec(t, `alter table nothing replica identity nothing`)
		err := newQuick(t, e.dsn, e.opts(t, cdc.WithTables("nothing"))...)
		if !errors.Is(err, cdc.ErrNoReplicaIdentity) {
			t.Errorf("got %v, want ErrNoReplicaIdentity", err)
		}
	})
	t.Run("slot in use", func(t *testing.T) {
		e := newEnv(t)
		e.exec(t, `create table items (id int primary key)`)
		s, _ := e.start(t, newRecorder(t), cdc.WithTables("items"))
		e.streaming(t, s)
		e.exec(t, `insert into items values (1)`)
		testenv.Eventually(t, 10*time.Second, "the change is published", func() bool { return s.Stats().Changes == 1 })
		err := newQuick(t, e.dsn, e.opts(t)...)
		if !errors.Is(err, cdc.ErrSlotInUse) || !strings.Contains(err.Error(), "pid") || !strings.Contains(err.Error(), "pg_terminate_backend") {
			t.Errorf("got %v, want ErrSlotInUse naming the pid", err)
		}
	})
	t.Run("permission", func(t *testing.T) {
		e := newEnv(t)
		e.exec(t, `create table items (id int primary key)`)
		role := testenv.Name(t, "role")
		e.exec(t, `create role `+role+` login nosuperuser noreplication`)
		t.Cleanup(func() { e.exec(t, `drop role `+role) })
		u, err := url.Parse(e.dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.User(role)
		err = newQuick(t, u.String(), e.opts(t, cdc.WithTables("items"))...)
		if !errors.Is(err, cdc.ErrPermission) || !strings.Contains(err.Error(), "REPLICATION") {
			t.Errorf("got %v, want ErrPermission naming ALTER ROLE ... REPLICATION", err)
		}
	})
	t.Run("options", func(t *testing.T) {
		dsn := testenv.DatabaseURL(t)
		for name, o := range map[string]cdc.Option{
			"slot":      cdc.WithSlot("Bad-Slot"),
			"batch":     cdc.WithMaxBatch(0),
			"status":    cdc.WithStatusInterval(0),
			"publish":   cdc.WithPublishTimeout(0),
			"drain":     cdc.WithDrainTimeout(-1),
			"backoff":   cdc.WithBackoff(time.Second, time.Millisecond),
			"state":     cdc.WithStateTable("a.b.c"),
			"prefix":    cdc.WithTopicPrefix(""),
			"tables":    cdc.WithTables(),
			"decimal":   cdc.WithDecimal(7),
			"logger":    cdc.WithLogger(nil),
			"retained":  cdc.WithRetainedWarning(0, time.Second),
			"publicatn": cdc.WithPublication(""),
			"nil":       nil,
		} {
			if _, err := cdc.New(context.Background(), dsn, newRecorder(t), o); !errors.Is(err, cdc.ErrInvalidOption) {
				t.Errorf("%s: got %v, want ErrInvalidOption", name, err)
			}
		}
		if _, err := cdc.New(context.Background(), dsn, nil); !errors.Is(err, cdc.ErrInvalidOption) {
			t.Errorf("nil publisher: got %v", err)
		}
	})
}

// rejecting refuses every message as invalid.
type rejecting struct{ calls int }

func (r *rejecting) Publish(context.Context, string, ...broker.Message) error {
	r.calls++
	return broker.ErrInvalidMessage
}
func (r *rejecting) Close() error { return nil }

// TestRejected: a change the publisher refuses as invalid stops Run at
// once with ErrRejected, without confirming it.
func TestRejected(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table items (id int primary key)`)
	e.exec(t, `insert into items values (1)`)
	p := &rejecting{}
	s, err := cdc.New(context.Background(), e.dsn, p, e.opts(t, cdc.WithTables("items"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = s.Run(ctx)
	if !errors.Is(err, cdc.ErrRejected) || !errors.Is(err, broker.ErrInvalidMessage) {
		t.Fatalf("Run: %v, want ErrRejected wrapping broker.ErrInvalidMessage", err)
	}
	if p.calls != 1 {
		t.Errorf("%d Publish calls, want 1 (no retry)", p.calls)
	}
}

// A standby with wal_level = logical (the private pair's pair_b, a copy of
// a logical primary) is still a standby: New says to use the primary and
// does not blame wal_level. It starts the pair, hence the fault stage.
func TestFaultStandby(t *testing.T) {
	testenv.FaultTest(t)
	testenv.Pair(t)
	err := newQuick(t, testenv.PairStandbyURL, cdc.WithTables("x"))
	if !errors.Is(err, cdc.ErrStandby) || !strings.Contains(err.Error(), "connect to the primary") {
		t.Errorf("got %v, want ErrStandby naming the fix", err)
	}
	if errors.Is(err, cdc.ErrWALLevel) {
		t.Errorf("got %v: the standby's wal_level is logical", err)
	}
}
