package cdc_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
)

// Environment of the child process of TestKilledMidStream.
const (
	killChildEnv = "CDC_KILL_CHILD" // "1" in the child
	killDSNEnv   = "CDC_KILL_DSN"
	killAMQPEnv  = "CDC_KILL_AMQP"
	killSlotEnv  = "CDC_KILL_SLOT" // slot and publication
)

// TestKilledMidStream: a CDC process publishing to RabbitMQ is killed with
// SIGKILL while a workload commits, and a new process resumes from the
// slot. Every committed change reaches the queue (none lost), and every
// change delivered twice belongs to a transaction the slot had not
// confirmed when the first process died: the duplicates are bounded by
// what was unconfirmed.
func TestKilledMidStream(t *testing.T) {
	if os.Getenv(killChildEnv) == "1" {
		killChild(t)
		return
	}
	t.Parallel()
	schema, dsn := testenv.Schema(t)
	_, amqpURL := testenv.VHost(t)
	slot := testenv.Name(t, "kill")
	db := testenv.Pool(t, dsn)
	ctx := context.Background()
	mustExec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	mustExec(`create table k (id int primary key, v int not null)`)
	mustExec(`create publication ` + slot + ` for table k`)
	mustExec(`select pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The walsender of a killed child may take a moment to notice.
		testenv.Eventually(t, 20*time.Second, "slot dropped", func() bool {
			err := cdc.DropWithState(ctx, testenv.DatabaseURL(t), slot, slot, schema+".cdc_state")
			return err == nil || !errors.Is(err, cdc.ErrSlotInUse)
		})
	})

	// The consumer: every message on the table's topic, by ID.
	topic := "cdc." + schema + ".k"
	sub, err := rabbitmq.NewSubscriber(ctx, amqpURL, rabbitmq.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	s := broker.Subscription{Topic: topic, Group: "audit"}
	if err := sub.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]broker.Message{} // first delivery of each change
	var dups []broker.Message
	subCtx, stopSub := context.WithCancel(ctx)
	subDone := make(chan error, 1)
	go func() {
		subDone <- sub.Subscribe(subCtx, s, func(_ context.Context, m broker.Message) error {
			mu.Lock()
			defer mu.Unlock()
			if _, ok := seen[m.ID]; ok {
				dups = append(dups, m)
			} else {
				seen[m.ID] = m
			}
			return nil
		})
	}()
	t.Cleanup(func() { stopSub(); <-subDone })

	// The workload: single-row transactions and some of 50 rows, inserts
	// and updates, committed while the first process streams and dies.
	want := 0 // changes committed
	final := map[int]int{}
	workload := func(from, n int) error {
		rng := rand.New(rand.NewPCG(uint64(from), 1))
		next := from
		for i := range n {
			switch {
			case i%40 == 39:
				err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
					for j := range 50 {
						if _, err := tx.Exec(ctx, `insert into k values ($1, $2)`, next+j, 0); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					return err
				}
				for j := range 50 {
					final[next+j] = 0
				}
				next += 50
				want += 50
			case i%3 == 2 && next > from:
				id := from + rng.IntN(next-from)
				if _, err := db.Exec(ctx, `update k set v = $2 where id = $1`, id, final[id]+1); err != nil {
					return err
				}
				final[id]++
				want++
			default:
				if _, err := db.Exec(ctx, `insert into k values ($1, 0)`, next); err != nil {
					return err
				}
				final[next] = 0
				next++
				want++
			}
		}
		return nil
	}

	first := startKillChild(t, dsn, amqpURL, slot)
	if err := workload(1, 400); err != nil {
		t.Fatal(err)
	}
	// Kill it once it has had changes confirmed, while more are in flight.
	first.waitConfirmed(t, 200)
	workloadDone := make(chan error, 1)
	go func() { workloadDone <- workload(1_000_000, 400) }()
	first.waitConfirmed(t, first.lastConfirmed()+50)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Wait()
	<-first.lines
	var confirmedAtKill pglogrepl.LSN
	testenv.Eventually(t, 20*time.Second, "the killed process's walsender to go", func() bool {
		var active bool
		var lsn string
		if err := db.QueryRow(ctx, `select active, confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1`, slot).Scan(&active, &lsn); err != nil {
			t.Fatal(err)
		}
		confirmedAtKill, err = pglogrepl.ParseLSN(lsn)
		if err != nil {
			t.Fatal(err)
		}
		return !active
	})
	if err := <-workloadDone; err != nil {
		t.Fatal(err)
	}

	// A new process resumes from the slot and catches up.
	second := startKillChild(t, dsn, amqpURL, slot)
	testenv.Eventually(t, 120*time.Second, "every committed change in the queue", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= want
	})
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.cmd.Wait(); err != nil {
		t.Errorf("the second process did not stop cleanly: %v", err)
	}
	<-second.lines

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != want {
		t.Errorf("%d distinct changes delivered, want exactly the %d committed", len(seen), want)
	}
	// The queue's view of every row is the table's.
	latest := map[int]int{}
	for _, m := range seen {
		var ev struct {
			After struct{ ID, V int } `json:"after"`
		}
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		latest[ev.After.ID] = max(latest[ev.After.ID], ev.After.V)
	}
	for id, v := range final {
		if latest[id] != v {
			t.Errorf("row %d: latest value delivered %d, committed %d", id, latest[id], v)
		}
	}
	for _, d := range dups {
		lsn, err := pglogrepl.ParseLSN(d.Header[cdc.HeaderLSN])
		if err != nil {
			t.Fatal(err)
		}
		if lsn < confirmedAtKill {
			t.Errorf("change %s (commit %s) delivered twice, but the slot had confirmed up to %s before the kill", d.ID, lsn, confirmedAtKill)
		}
	}
	t.Logf("%d changes committed, %d delivered, %d of them twice (all after the slot's confirmed position %s at the kill)",
		want, len(seen)+len(dups), len(dups), confirmedAtKill)
}

// killProc is a child process streaming the slot, and its progress.
type killProc struct {
	cmd   *exec.Cmd
	lines chan struct{} // closed when its output ends

	mu        sync.Mutex
	confirmed uint64 // changes confirmed, from its last progress line
	changed   chan struct{}
}

func (p *killProc) lastConfirmed() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.confirmed
}

// waitConfirmed waits until the child reports n confirmed changes.
func (p *killProc) waitConfirmed(t *testing.T, n uint64) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		p.mu.Lock()
		got, changed := p.confirmed, p.changed
		p.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-p.lines:
			t.Fatalf("the child stopped after %d confirmed changes, want %d", got, n)
		case <-deadline:
			t.Fatalf("the child confirmed %d changes in 60 s, want %d", got, n)
		}
	}
}

// startKillChild starts this test binary as a child streaming slot.
func startKillChild(t *testing.T, dsn, amqpURL, slot string) *killProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledMidStream$", "-test.count=1")
	cmd.Env = append(os.Environ(), killChildEnv+"=1", killDSNEnv+"="+dsn, killAMQPEnv+"="+amqpURL, killSlotEnv+"="+slot)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	p := &killProc{cmd: cmd, lines: make(chan struct{}), changed: make(chan struct{})}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "confirmed "); ok {
				v, _ := strconv.ParseUint(n, 10, 64)
				p.mu.Lock()
				p.confirmed = v
				close(p.changed)
				p.changed = make(chan struct{})
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// killChild is the child: it streams the slot to RabbitMQ and prints the
// number of changes the publisher confirmed as it grows, until SIGKILL, or
// SIGTERM (then it closes the source).
func killChild(t *testing.T) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	dsn, amqpURL, slot := os.Getenv(killDSNEnv), os.Getenv(killAMQPEnv), os.Getenv(killSlotEnv)
	pub, err := rabbitmq.NewPublisher(ctx, amqpURL, rabbitmq.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	schema := schemaOf(t, dsn)
	// Each time the confirmed position moves (after Stats counted the
	// changes), print the count: the parent waits on these lines.
	var src *cdc.Source
	progress := confirmFunc(func(context.Context, cdc.TraceConfirmData) {
		fmt.Printf("confirmed %d\n", src.Stats().Changes)
	})
	src, err = cdc.New(ctx, dsn, pub, cdc.WithSlot(slot), cdc.WithPublication(slot), cdc.WithSnapshot(false),
		cdc.WithStateTable(schema+".cdc_state"), cdc.WithMaxBatch(20), cdc.WithStatusInterval(100*time.Millisecond),
		cdc.WithTracer(progress),
		cdc.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	_ = src.Close()
}

// confirmFunc is a cdc.ConfirmTracer made of a function.
type confirmFunc func(context.Context, cdc.TraceConfirmData)

func (f confirmFunc) TraceConfirm(ctx context.Context, d cdc.TraceConfirmData) { f(ctx, d) }

// schemaOf is the search_path schema of a testenv.Schema URL.
func schemaOf(t *testing.T, dsn string) string {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(context.Background(), cfg.ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(context.Background(), `select current_schema()`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}
