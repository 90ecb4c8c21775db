package outbox_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
	"github.com/go-integration/patterns/broker/outbox"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
)

var _ outbox.TxPublisher = (*kafka.TxPublisher)(nil)

// txEnv is an outbox schema and a Kafka cluster with a topic of 4
// partitions.
type txEnv struct {
	*env
	brokers []string
	ckTopic string
}

func newTxEnv(t *testing.T) *txEnv {
	t.Helper()
	e := &txEnv{env: newEnv(t), brokers: kafkaenv.Brokers(t)}
	e.ckTopic = testenv.Name(t, "ck")
	adm, err := kafka.NewAdmin(e.brokers)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if err := adm.EnsureTopic(context.Background(), kafka.Topic{Name: e.topic, Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *txEnv) txPublisher(t *testing.T, txid string, opts ...kafka.PublisherOption) *kafka.TxPublisher {
	t.Helper()
	p, err := kafka.NewTxPublisher(e.brokers, txid, e.ckTopic, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// addN writes n messages on 20 keys, 50 per transaction; message i has
// payload i of its key's sequence.
func (e *txEnv) addN(t *testing.T, n int) {
	t.Helper()
	per := map[string]int{}
	for i := 0; i < n; i += 50 {
		var msgs []broker.Message
		for j := i; j < min(i+50, n); j++ {
			k := "k" + strconv.Itoa(j%20)
			msgs = append(msgs, msg(k, per[k]))
			per[k]++
		}
		e.add(t, msgs...)
	}
}

// readTopic reads topic with isolation level until a sentinel appended to
// every partition (after all transactions ended) shows up, and returns how
// often each message ID occurs and whether each key's payloads came in order.
func readTopic(t *testing.T, brokers []string, topic string, level kgo.IsolationLevel) (ids map[string]int, ordered bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sentinel := "sentinel-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	td, err := kadm.NewClient(prod).ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	parts := len(td[topic].Partitions)
	for p := range parts {
		r := &kgo.Record{Topic: topic, Partition: int32(p), Headers: []kgo.RecordHeader{{Key: kafka.HeaderMessageID, Value: []byte(sentinel)}}}
		if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(level))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ids = map[string]int{}
	next := map[string]int{}
	ordered = true
	done := map[int32]bool{}
	for len(done) < parts {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %v", topic, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			var id string
			for _, h := range r.Headers {
				if h.Key == kafka.HeaderMessageID {
					id = string(h.Value)
				}
			}
			if id == sentinel {
				done[r.Partition] = true
				return
			}
			if strings.HasPrefix(id, "sentinel-") { // an earlier read's
				return
			}
			ids[id]++
			if ids[id] == 1 {
				n, _ := strconv.Atoi(string(r.Value))
				if n != next[string(r.Key)] {
					ordered = false
				}
				next[string(r.Key)] = n + 1
			}
		})
	}
	return ids, ordered
}

func pendingRows(t *testing.T, e *txEnv) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(context.Background(), "select count(*) from outbox where published_at is null").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func checkExactlyOnce(t *testing.T, ids map[string]int, n int) {
	t.Helper()
	bad := 0
	for id, c := range ids {
		if c != 1 {
			if bad++; bad <= 5 {
				t.Errorf("message %s in Kafka %d times", id, c)
			}
		}
	}
	if len(ids) != n {
		t.Errorf("%d distinct messages in Kafka, want %d", len(ids), n)
	}
}

// Through a kafka.TxPublisher the relay publishes each row once, in order
// per key, and a message Kafka refuses is set aside without blocking.
func TestTxRelayExactlyOnce(t *testing.T) {
	e := newTxEnv(t)
	const n = 1000
	e.addN(t, n)
	big := broker.Message{ID: "too-big", Key: "k0", Payload: make([]byte, 8192)}
	e.add(t, big)
	p := e.txPublisher(t, testenv.Name(t, "tx"), kafka.WithMaxMessageBytes(4096))
	r, stop := run(t, e.db, p, outbox.WithBatchSize(100))
	testenv.Eventually(t, 30*time.Second, "outbox drained", func() bool { return pendingRows(t, e) == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	ids, ordered := readTopic(t, e.brokers, e.topic, kgo.ReadCommitted())
	checkExactlyOnce(t, ids, n)
	if !ordered {
		t.Error("order per key broken")
	}
	st := r.Stats()
	if st.Published != n || st.SetAside != 1 || st.Recovered != 0 {
		t.Errorf("stats %+v: want %d published, 1 set aside", st, n)
	}
	var why string
	if err := e.db.QueryRow(context.Background(), "select error from outbox where id = 'too-big'").Scan(&why); err != nil || !strings.Contains(why, "max.message.bytes") {
		t.Errorf("too-big row: error %q (%v)", why, err)
	}
}

// Environment of TestTxRelayChild.
const (
	envTxRelay = "OUTBOX_TX_RELAY" // dsn|brokers|topic|ckTopic|txid|mode
)

// TestTxRelayChild is not a test of its own: it is the relay process of
// TestTxRelayKilledBetweenCommits (the test binary run again). Mode "kill"
// SIGKILLs itself right after Kafka committed its first batch, before the
// rows are marked; mode "killmid" SIGKILLs itself with its first batch's
// transaction open (records and checkpoints in the log, not committed);
// mode "run" relays until SIGTERM and prints its stats. The producer's
// transaction timeout is 2 s.
func TestTxRelayChild(t *testing.T) {
	cfg := os.Getenv(envTxRelay)
	if cfg == "" {
		t.Skip("runs only as a child of TestTxRelayKilledBetweenCommits")
	}
	f := strings.Split(cfg, "|")
	dsn, brokers, ckTopic, txid, mode := f[0], strings.Split(f[1], ","), f[3], f[4], f[5]
	pool := testenv.Pool(t, dsn)
	p, err := kafka.NewTxPublisher(brokers, txid, ckTopic, kafka.WithClientOptions(kgo.TransactionTimeout(2*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var pub outbox.TxPublisher = p
	if mode == "killmid" {
		pub = &dieMidTransaction{p, ckTopic}
	}
	if mode == "kill" {
		outbox.SetHookBeforeMark(func() {
			fmt.Println("kafka committed; killing myself")
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		})
	}
	r, err := outbox.NewRelay(pool, pub, outbox.WithBatchSize(200), outbox.WithPollInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("stats recovered=%d published=%d\n", r.Stats().Recovered, r.Stats().Published)
}

// A relay process is SIGKILLed after Kafka committed a batch and before
// PostgreSQL marked its rows; a restarted relay finds the batch in the
// checkpoints, marks its rows without publishing them again, and publishes
// the rest: a read_committed consumer sees each row exactly once, in order
// per key.
func TestTxRelayKilledBetweenCommits(t *testing.T) {
	e := newTxEnv(t)
	const n = 1000
	e.addN(t, n)
	txid := testenv.Name(t, "tx")
	child := func(mode string) (*exec.Cmd, *bufio.Scanner, *strings.Builder) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTxRelayChild$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), envTxRelay+"="+strings.Join([]string{e.dsn, strings.Join(e.brokers, ","), e.topic, e.ckTopic, txid, mode}, "|"))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd, bufio.NewScanner(out), &stderr
	}

	first, sc, stderr := child("kill")
	hit := false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "kafka committed") {
			hit = true
		}
	}
	err := first.Wait()
	var ee *exec.ExitError
	if !hit || !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("first relay: hook hit %v, exit %v\n%s", hit, err, stderr.String())
	}
	// The window was hit: Kafka has the batch, PostgreSQL has it pending.
	inKafka, _ := readTopic(t, e.brokers, e.topic, kgo.ReadCommitted())
	if len(inKafka) == 0 || pendingRows(t, e) != n {
		t.Fatalf("after the kill: %d messages in Kafka, %d rows pending; want some and %d", len(inKafka), pendingRows(t, e), n)
	}
	t.Logf("after the kill: %d messages in Kafka, all %d rows pending", len(inKafka), n)

	second, sc2, stderr2 := child("run")
	testenv.Eventually(t, 60*time.Second, "outbox drained", func() bool { return pendingRows(t, e) == 0 })
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var stats string
	for sc2.Scan() {
		if s, ok := strings.CutPrefix(sc2.Text(), "stats "); ok {
			stats = s
		}
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("second relay: %v\n%s", err, stderr2.String())
	}
	if want := fmt.Sprintf("recovered=%d ", len(inKafka)); !strings.HasPrefix(stats, want) {
		t.Errorf("second relay stats %q, want %s...", stats, want)
	}
	ids, ordered := readTopic(t, e.brokers, e.topic, kgo.ReadCommitted())
	checkExactlyOnce(t, ids, n)
	if !ordered {
		t.Error("order per key broken")
	}
}

// A relay whose TxPublisher was fenced by another with the same
// transactional ID stops with an error wrapping broker.ErrClosed and
// kafka.ErrFenced instead of retrying for ever.
func TestTxRelayFenced(t *testing.T) {
	e := newTxEnv(t)
	e.addN(t, 10)
	txid := testenv.Name(t, "tx")
	old := e.txPublisher(t, txid)
	if err := old.Publish(context.Background(), e.topic, broker.Message{Key: "x"}); err != nil {
		t.Fatal(err)
	}
	newer := e.txPublisher(t, txid)
	if err := newer.Publish(context.Background(), e.topic, broker.Message{Key: "x"}); err != nil {
		t.Fatal(err)
	}
	r, err := outbox.NewRelay(e.db, old)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = r.Run(ctx)
	if !errors.Is(err, broker.ErrClosed) || !errors.Is(err, kafka.ErrFenced) {
		t.Fatalf("Run: %v, want ErrClosed and ErrFenced", err)
	}
	t.Logf("Run: %v", err)
	if got := pendingRows(t, e); got != 10 {
		t.Errorf("%d rows pending, want 10", got)
	}
}

// dieMidTransaction publishes its first batch's records and checkpoints in
// a transaction through the TxPublisher's client, and SIGKILLs the process
// before committing it.
type dieMidTransaction struct {
	*kafka.TxPublisher
	ckTopic string
}

func (d *dieMidTransaction) PublishTx(ctx context.Context, msgs []broker.Message, cks map[string][]byte) error {
	cl := d.Client()
	if err := cl.BeginTransaction(); err != nil {
		return err
	}
	for _, m := range msgs {
		cl.Produce(ctx, &kgo.Record{Topic: m.Topic, Key: []byte(m.Key), Value: m.Payload,
			Headers: []kgo.RecordHeader{{Key: kafka.HeaderMessageID, Value: []byte(m.ID)}}}, nil)
	}
	for k, v := range cks {
		cl.Produce(ctx, &kgo.Record{Topic: d.ckTopic, Key: []byte(k), Value: v}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	fmt.Println("transaction open; killing myself")
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// A relay process is SIGKILLed with a transaction open (its batch and
// checkpoints in the log, uncommitted); another relay, with another
// transactional ID, takes the buckets: it waits for Kafka to abort the
// open transaction (the 2 s transaction timeout) before trusting the
// checkpoints, then publishes the rows. read_committed consumers see each
// row once; read_uncommitted ones see the aborted batch too.
func TestTxRelayKilledMidTransaction(t *testing.T) {
	e := newTxEnv(t)
	const n = 500
	e.addN(t, n)
	cmd := exec.Command(os.Args[0], "-test.run=^TestTxRelayChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), envTxRelay+"="+strings.Join([]string{e.dsn, strings.Join(e.brokers, ","), e.topic, e.ckTopic, testenv.Name(t, "tx1"), "killmid"}, "|"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	hit := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "transaction open") {
			hit = true
		}
	}
	if err := cmd.Wait(); !hit || err == nil {
		t.Fatalf("first relay: hook hit %v, exit %v\n%s", hit, err, stderr.String())
	}

	p := e.txPublisher(t, testenv.Name(t, "tx2"))
	started := time.Now()
	r, stop := run(t, e.db, p, outbox.WithBatchSize(200))
	testenv.Eventually(t, 60*time.Second, "outbox drained", func() bool { return pendingRows(t, e) == 0 })
	t.Logf("the second relay drained the outbox in %v (it waited for the open transaction's abort)", time.Since(started).Round(time.Millisecond))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	committed, ordered := readTopic(t, e.brokers, e.topic, kgo.ReadCommitted())
	checkExactlyOnce(t, committed, n)
	if !ordered {
		t.Error("order per key broken")
	}
	uncommitted, _ := readTopic(t, e.brokers, e.topic, kgo.ReadUncommitted())
	total := 0
	for _, c := range uncommitted {
		total += c
	}
	t.Logf("read_committed %d, read_uncommitted %d records; relay stats %+v", len(committed), total, r.Stats())
	if total <= n {
		t.Errorf("read_uncommitted saw %d records, want the aborted batch too (> %d)", total, n)
	}
	if st := r.Stats(); st.Recovered != 0 || st.Published != n {
		t.Errorf("stats %+v: want %d published, none recovered", st, n)
	}
}
