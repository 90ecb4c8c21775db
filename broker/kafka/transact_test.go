package kafka

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
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// transformer returns a Transformer with the test options.
func (e *env) transformer(txID string, opts ...SubscriberOption) *Transformer {
	e.t.Helper()
	tr, err := NewTransformer(e.brokers, txID, quick(opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { tr.Close() })
	return tr
}

// runTransformer runs tr.Run in the background; stop cancels it and
// returns its error.
// done is closed when Run returned, and stop's result is then Run's error.
func runTransformer(t *testing.T, tr *Transformer, sub broker.Subscription, h TransformFunc) (stop func() error, done <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := make(chan struct{})
	var err error
	go func() {
		err = tr.Run(ctx, sub, h)
		close(d)
	}()
	stop = func() error {
		cancel()
		select {
		case <-d:
		case <-time.After(30 * time.Second):
			t.Errorf("Transformer.Run did not return 30 s after cancel")
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop, d
}

// publishInputs publishes n messages "in-<i>" with IDs "in-<i>" on 16 keys.
func txPublishInputs(t *testing.T, p *Publisher, topic string, from, n int) {
	t.Helper()
	msgs := make([]broker.Message, 0, n)
	for i := from; i < from+n; i++ {
		msgs = append(msgs, broker.Message{ID: "in-" + strconv.Itoa(i), Key: "k" + strconv.Itoa(i%16), Payload: []byte(strconv.Itoa(i))})
	}
	if err := p.Publish(ctxT(t, 30*time.Second), topic, msgs...); err != nil {
		t.Fatal(err)
	}
}

// readAll reads topic from the start with the given isolation level until
// it has seen a sentinel record appended to every partition after
// everything else (so every transaction before it has ended), and
// returns how often each x-message-id occurs.
func txReadAll(t *testing.T, brokers []string, topic string, level kgo.IsolationLevel) map[string]int {
	t.Helper()
	seen, _ := txReadOrdered(t, brokers, topic, level)
	return seen
}

// txReadOrdered is txReadAll that also reports whether, per record key,
// the first copies of outputs "in-<i>.0" came in increasing i.
func txReadOrdered(t *testing.T, brokers []string, topic string, level kgo.IsolationLevel) (map[string]int, bool) {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	sentinel := "sentinel-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	parts := txPartitions(t, brokers, topic)
	for p := range parts {
		r := &kgo.Record{Topic: topic, Partition: int32(p), Headers: []kgo.RecordHeader{{Key: HeaderMessageID, Value: []byte(sentinel)}}}
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
	seen := map[string]int{}
	last := map[string]int{}
	ordered := true
	done := map[int32]bool{}
	for len(done) < parts {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: sentinels of %d of %d partitions seen: %v", topic, len(done), parts, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			id := messageID(r)
			if id == sentinel {
				done[r.Partition] = true
				return
			}
			if strings.HasPrefix(id, "sentinel-") {
				return
			}
			if seen[id]++; seen[id] == 1 {
				num, _ := strings.CutPrefix(strings.TrimSuffix(id, ".0"), "in-")
				i, _ := strconv.Atoi(num)
				if prev, ok := last[string(r.Key)]; ok && i < prev {
					ordered = false
				}
				last[string(r.Key)] = i
			}
		})
	}
	return seen, ordered
}

func txPartitions(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(ctxT(t, 10*time.Second), topic)
	if err != nil {
		t.Fatal(err)
	}
	return len(td[topic].Partitions)
}

// checkOnce fails t unless seen has each of "in-<i>.0" (i < n) exactly once
// and nothing else.
func txCheckOnce(t *testing.T, what string, seen map[string]int, n int) {
	t.Helper()
	bad := 0
	for i := range n {
		id := "in-" + strconv.Itoa(i) + ".0"
		if c := seen[id]; c != 1 {
			if bad++; bad <= 5 {
				t.Errorf("%s: output %s seen %d times, want 1", what, id, c)
			}
		}
	}
	if len(seen) != n {
		t.Errorf("%s: %d distinct outputs, want %d", what, len(seen), n)
	}
}

func txTotal(seen map[string]int) int {
	n := 0
	for _, c := range seen {
		n += c
	}
	return n
}

// double is the transform of the tests: one output per input, its payload
// the input's twice.
func txDouble(out string) TransformFunc {
	return func(_ context.Context, m broker.Message, emit Emit) error {
		emit(out, broker.Message{Key: m.Key, Payload: append(append([]byte(nil), m.Payload...), m.Payload...)})
		return nil
	}
}

// Handler errors abort transactions after earlier outputs of the batch were
// produced: a read_committed consumer (this package's Subscriber and a raw
// one) sees each output once. (A read_uncommitted consumer sees the aborted
// copies that reached the broker before the abort, if any: see
// TestTransformerKilledMidTransaction.)
func TestTransformerExactlyOnceWithRetries(t *testing.T) {
	e := newEnv(t)
	in, out := e.topic(4), e.topic(4)
	pub := e.publisher()
	const n = 2000
	txPublishInputs(t, pub, in, 0, n)

	var mu sync.Mutex
	failed := map[string]bool{}
	tr := e.transformer(testenv.Name(t, "tx"))
	stopTr, trDone := runTransformer(t, tr, broker.Subscription{Topic: in, Group: testenv.Name(t, "g")},
		func(ctx context.Context, m broker.Message, emit Emit) error {
			if err := txDouble(out)(ctx, m, emit); err != nil {
				return err
			}
			i, _ := strconv.Atoi(string(m.Payload))
			mu.Lock()
			defer mu.Unlock()
			// Every 97th input fails once, after the batch produced outputs.
			if i%97 == 50 && !failed[m.ID] {
				failed[m.ID] = true
				if m.Attempt != 1 {
					t.Errorf("%s: first attempt has Attempt %d", m.ID, m.Attempt)
				}
				return errors.New("transient")
			}
			return nil
		})

	// This package's Subscriber reads committed records only.
	sub := e.subscriber()
	var smu sync.Mutex
	got := map[string]int{}
	subscribe(t, sub, broker.Subscription{Topic: out, Group: testenv.Name(t, "down"), Concurrency: 4}, func(_ context.Context, m broker.Message) error {
		if !strings.HasPrefix(m.ID, "sentinel-") { // readAll's
			smu.Lock()
			got[m.ID]++
			smu.Unlock()
		}
		return nil
	})
	testenv.Eventually(t, 60*time.Second, "transformer handled all inputs", func() bool {
		select {
		case <-trDone:
			t.Fatalf("Run returned early: %v", stopTr())
		default:
		}
		return tr.Stats().Handled >= n
	})
	testenv.Eventually(t, 30*time.Second, "subscriber received every output", func() bool {
		smu.Lock()
		defer smu.Unlock()
		return len(got) >= n
	})

	committed := txReadAll(t, e.brokers, out, kgo.ReadCommitted())
	txCheckOnce(t, "read_committed", committed, n)
	uncommitted := txReadAll(t, e.brokers, out, kgo.ReadUncommitted())
	smu.Lock()
	txCheckOnce(t, "Subscriber", got, n)
	smu.Unlock()
	st := tr.Stats()
	t.Logf("stats %+v; read_uncommitted saw %d records for %d outputs", st, txTotal(uncommitted), n)
	if st.Retried == 0 || st.Aborted == 0 || st.Emitted != n || st.Handled != n {
		t.Errorf("stats %+v: want retries and aborts, %d emitted and handled", st, n)
	}
}

// Environment of the child process of TestTransformerKilledMidTransaction.
const (
	envTxChild   = "KAFKA_TX_CHILD"   // brokers, comma-separated
	envTxTopics  = "KAFKA_TX_TOPICS"  // in,out,group,txid
	envTxBlockAt = "KAFKA_TX_BLOCKAT" // block in the handler of this input (-1: never)
)

// TestTransformerChild is not a test of its own: it is the transformer
// process TestTransformerKilledMidTransaction starts (the test binary run
// again). It prints "blocked" when it reaches the input to block at and
// hangs there; it stops on SIGTERM.
func TestTransformerChild(t *testing.T) {
	bs := os.Getenv(envTxChild)
	if bs == "" {
		t.Skip("runs only as a child of TestTransformerKilledMidTransaction")
	}
	parts := strings.Split(os.Getenv(envTxTopics), ",")
	in, out, group, txid := parts[0], parts[1], parts[2], parts[3]
	blockAt, _ := strconv.Atoi(os.Getenv(envTxBlockAt))
	tr, err := NewTransformer(strings.Split(bs, ","), txid, quick()...)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	err = tr.Run(ctx, broker.Subscription{Topic: in, Group: group}, func(ctx context.Context, m broker.Message, emit Emit) error {
		if err := txDouble(out)(ctx, m, emit); err != nil {
			return err
		}
		if i, _ := strconv.Atoi(string(m.Payload)); i == blockAt {
			fmt.Println("blocked")
			<-ctx.Done() // until SIGKILL
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A transformer process is SIGKILLed in the middle of a transaction whose
// outputs are already in the log; a second process with the same
// transactional ID resumes. A read_committed consumer sees each output
// exactly once; a read_uncommitted one sees the killed transaction's
// (aborted) outputs as well.
func TestTransformerKilledMidTransaction(t *testing.T) {
	e := newEnv(t)
	in, out := e.topic(4), e.topic(4)
	group, txid := testenv.Name(t, "g"), testenv.Name(t, "tx")
	pub := e.publisher()
	const n = 3000
	txPublishInputs(t, pub, in, 0, n)

	start := func(blockAt int) (*exec.Cmd, *bufio.Scanner, *strings.Builder) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTransformerChild$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), envTxChild+"="+strings.Join(e.brokers, ","),
			envTxTopics+"="+strings.Join([]string{in, out, group, txid}, ","), envTxBlockAt+"="+strconv.Itoa(blockAt))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd, bufio.NewScanner(stdout), &stderr
	}

	first, sc, stderr := start(1700)
	blocked := false
	for sc.Scan() {
		if sc.Text() == "blocked" {
			blocked = true
			break
		}
	}
	if !blocked {
		t.Fatalf("the first transformer never reached input 1700:\n%s", stderr.String())
	}
	// Wait until the open transaction's outputs are in the log: the
	// high watermark passes the last stable offset.
	adm := e.admin.adm
	testenv.Eventually(t, 30*time.Second, "uncommitted outputs in the log", func() bool {
		hw, err1 := adm.ListEndOffsets(context.Background(), out)
		ls, err2 := adm.ListCommittedOffsets(context.Background(), out)
		if err1 != nil || err2 != nil {
			return false
		}
		var open int64
		hw.Each(func(o kadm.ListedOffset) {
			if l, ok := ls.Lookup(o.Topic, o.Partition); ok {
				open += o.Offset - l.Offset
			}
		})
		return open > 0
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()

	second, _, stderr2 := start(-1)
	// The second process commits every output; then it stops cleanly.
	testenv.Eventually(t, 90*time.Second, "every output committed", func() bool {
		return len(txReadQuick(t, e.brokers, out)) >= n
	})
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("second transformer: %v\n%s", err, stderr2.String())
	}
	committed := txReadAll(t, e.brokers, out, kgo.ReadCommitted())
	txCheckOnce(t, "read_committed", committed, n)
	uncommitted := txReadAll(t, e.brokers, out, kgo.ReadUncommitted())
	t.Logf("read_committed: %d records; read_uncommitted: %d records (aborted copies of the killed transaction)", txTotal(committed), txTotal(uncommitted))
	if txTotal(uncommitted) <= n {
		t.Errorf("read_uncommitted saw %d records, want the killed transaction's outputs too (> %d)", txTotal(uncommitted), n)
	}
}

// readAllQuick counts the committed outputs without a sentinel (a
// transaction may still be open): it reads what the last stable offsets
// allow for a moment.
func txReadQuick(t *testing.T, brokers []string, topic string) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[string]int{}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		if fs.NumRecords() == 0 {
			return seen
		}
		fs.EachRecord(func(r *kgo.Record) { seen[messageID(r)]++ })
	}
}

// Two live transformers with one transactional ID: the older is fenced and
// its Run returns ErrFenced; the newer goes on.
func TestTransformerFenced(t *testing.T) {
	e := newEnv(t)
	in, out := e.topic(2), e.topic(2)
	pub := e.publisher()
	txPublishInputs(t, pub, in, 0, 10)
	txid := testenv.Name(t, "tx")
	old := e.transformer(txid)
	stopOld, oldDone := runTransformer(t, old, broker.Subscription{Topic: in, Group: testenv.Name(t, "g1")}, txDouble(out))
	testenv.Eventually(t, 30*time.Second, "first transformer committed", func() bool { return old.Stats().Committed > 0 })

	newer := e.transformer(txid)
	_, newDone := runTransformer(t, newer, broker.Subscription{Topic: in, Group: testenv.Name(t, "g2")}, txDouble(out))
	testenv.Eventually(t, 30*time.Second, "second transformer committed", func() bool { return newer.Stats().Committed > 0 })
	txPublishInputs(t, pub, in, 10, 10) // the old one tries a transaction again
	select {
	case <-oldDone:
		err := stopOld()
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("old Run: %v, want ErrFenced", err)
		}
		t.Logf("old Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the fenced transformer's Run did not return")
	}
	testenv.Eventually(t, 30*time.Second, "second transformer handled everything", func() bool { return newer.Stats().Handled >= 20 })
	select {
	case <-newDone:
		t.Fatal("the newer Run returned")
	default:
	}
}

// Bad input gives clear errors and no loops: a missing input topic, no
// group, a handler that fails for good, an output to a missing topic and
// an output over max.message.bytes.
func TestTransformerBadInput(t *testing.T) {
	e := newEnv(t)
	t.Run("missing input topic", func(t *testing.T) {
		tr := e.transformer(testenv.Name(t, "tx"))
		err := tr.Run(ctxT(t, 30*time.Second), broker.Subscription{Topic: testenv.Name(t, "nope"), Group: "g"}, txDouble("x"))
		if !errors.Is(err, broker.ErrInvalidSubscription) || !errors.Is(err, ErrUnknownTopic) {
			t.Fatalf("Run: %v, want ErrInvalidSubscription and ErrUnknownTopic", err)
		}
	})
	t.Run("no group", func(t *testing.T) {
		tr := e.transformer(testenv.Name(t, "tx"))
		err := tr.Run(ctxT(t, 30*time.Second), broker.Subscription{Topic: e.topic(1)}, txDouble("x"))
		if !errors.Is(err, broker.ErrInvalidSubscription) {
			t.Fatalf("Run: %v, want ErrInvalidSubscription", err)
		}
	})
	t.Run("options", func(t *testing.T) {
		if _, err := NewTransformer(e.brokers, ""); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("empty transactional ID: %v", err)
		}
		if _, err := NewTransformer(e.brokers, "x", WithStartAt(AtOffsets(map[int32]int64{0: 1}))); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("AtOffsets: %v", err)
		}
		if _, err := NewTransformer(e.brokers, "x", WithTracer(&kafkaTracer{})); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("a tracer without ProcessTracer: %v", err)
		}
		if _, err := NewTxPublisher(e.brokers, "", "ck"); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("TxPublisher, empty transactional ID: %v", err)
		}
		if _, err := NewTxPublisher(e.brokers, "x", "bad topic"); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("TxPublisher, bad checkpoint topic: %v", err)
		}
	})
	t.Run("failures go to the dead-letter topic", func(t *testing.T) {
		in, out := e.topic(1), e.topic(1)
		dlq := in + ".dlq"
		if err := e.admin.EnsureTopic(ctxT(t, 10*time.Second), Topic{Name: dlq, Partitions: 1}); err != nil {
			t.Fatal(err)
		}
		pub := e.publisher()
		txPublishInputs(t, pub, in, 0, 6)
		missing := testenv.Name(t, "missing")
		pt := &txProcessTracer{outcomes: map[string][]broker.Outcome{}}
		tr := e.transformer(testenv.Name(t, "tx"), WithMaxMessageBytes(4096), WithTracer(pt))
		stop, _ := runTransformer(t, tr, broker.Subscription{Topic: in, Group: testenv.Name(t, "g"), MaxAttempts: 3},
			func(ctx context.Context, m broker.Message, emit Emit) error {
				switch string(m.Payload) {
				case "1":
					return broker.Permanent(errors.New("bad input"))
				case "2":
					return errors.New("always failing")
				case "3":
					emit(missing, broker.Message{Payload: []byte("x")})
				case "4":
					emit(out, broker.Message{Payload: make([]byte, 10000)})
				default:
					emit(out, broker.Message{Payload: m.Payload})
				}
				return nil
			})
		testenv.Eventually(t, 60*time.Second, "all inputs handled or dead-lettered", func() bool { return tr.Stats().Handled >= 6 })
		_ = stop()
		st := tr.Stats()
		if st.DeadLettered != 4 || st.Emitted != 2 {
			t.Errorf("stats %+v: want 4 dead-lettered, 2 emitted", st)
		}
		dead := txReadRecords(t, e.brokers, dlq, 4)
		want := map[string]string{"in-1": "bad input", "in-2": "always failing", "in-3": "unknown topic", "in-4": "max.message.bytes"}
		for _, r := range dead {
			m := fromRecord(r)
			if w, ok := want[m.ID]; !ok || !strings.Contains(m.Header[broker.HeaderError], w) {
				t.Errorf("dead letter %s: x-error %q, want it to mention %q", m.ID, m.Header[broker.HeaderError], w)
			}
			if m.ID == "in-2" && m.Header[broker.HeaderAttempts] != "3" {
				t.Errorf("in-2 dead-lettered after %s attempts, want 3", m.Header[broker.HeaderAttempts])
			}
			delete(want, m.ID)
		}
		if len(want) > 0 {
			t.Errorf("not dead-lettered: %v", want)
		}
		// The tracer saw each attempt: in-4's output was refused at
		// flush, so its input is dead-lettered without another call.
		pt.mu.Lock()
		defer pt.mu.Unlock()
		for id, w := range map[string]string{
			"in-0": "[acked]", "in-1": "[dead-lettered]", "in-2": "[retry retry dead-lettered]",
			"in-3": "[dead-lettered]", "in-4": "[acked]", "in-5": "[acked]",
		} {
			// Retries abort the batch: inputs before in-2 run again.
			if got := fmt.Sprint(txDedupAcked(pt.outcomes[id])); got != w {
				t.Errorf("%s: outcomes %v, want %s", id, pt.outcomes[id], w)
			}
		}
	})
}

// txProcessTracer records each message's outcomes.
type txProcessTracer struct {
	mu       sync.Mutex
	outcomes map[string][]broker.Outcome
}

type txMsgKey struct{}

func (p *txProcessTracer) TraceProcessStart(ctx context.Context, d broker.TraceProcessStartData) context.Context {
	return context.WithValue(ctx, txMsgKey{}, d.Message.ID)
}

func (p *txProcessTracer) TraceProcessEnd(ctx context.Context, d broker.TraceProcessEndData) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := ctx.Value(txMsgKey{}).(string)
	p.outcomes[id] = append(p.outcomes[id], d.Outcome)
}

// dedupAcked collapses repeated "acked" (a batch that ran again after an
// abort).
func txDedupAcked(os []broker.Outcome) []broker.Outcome {
	var out []broker.Outcome
	for _, o := range os {
		if o == broker.OutcomeAcked && len(out) > 0 && out[len(out)-1] == broker.OutcomeAcked {
			continue
		}
		out = append(out, o)
	}
	return out
}

// readRecords reads n committed records of topic.
func txReadRecords(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := ctxT(t, 30*time.Second)
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: %d of %d records", topic, len(out), n)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// Close ends Run with broker.ErrClosed; Run after Close fails at once.
func TestTransformerClose(t *testing.T) {
	e := newEnv(t)
	in, out := e.topic(1), e.topic(1)
	txPublishInputs(t, e.publisher(), in, 0, 5)
	tr := e.transformer(testenv.Name(t, "tx"))
	stop, done := runTransformer(t, tr, broker.Subscription{Topic: in, Group: testenv.Name(t, "g")}, txDouble(out))
	testenv.Eventually(t, 30*time.Second, "inputs handled", func() bool { return tr.Stats().Handled >= 5 })
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := stop(); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Run after Close: %v, want ErrClosed", err)
	}
	if err := tr.Run(context.Background(), broker.Subscription{Topic: in, Group: "g"}, txDouble(out)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Run on a closed Transformer: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// Checkpoints returns what committed transactions wrote, never what an
// aborted one did, and waits while a transaction of another producer that
// writes one of the keys is open.
func TestTxPublisherCheckpoints(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(2)
	ck := testenv.Name(t, "ck")
	kt := &kafkaTracer{}
	p, err := NewTxPublisher(e.brokers, testenv.Name(t, "tx"), ck, WithLogger(testLogger()), WithMaxMessageBytes(4096), WithTracer(kt))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	ctx := ctxT(t, 30*time.Second)
	if err := p.PublishTx(ctx, []broker.Message{{Topic: topic, Payload: []byte("a")}}, map[string][]byte{"k": []byte("1")}); err != nil {
		t.Fatal(err)
	}
	// Refused: nothing of this transaction is visible.
	err = p.PublishTx(ctx, []broker.Message{{Topic: topic, Payload: make([]byte, 8192)}}, map[string][]byte{"k": []byte("2")})
	if !errors.Is(err, broker.ErrInvalidMessage) {
		t.Fatalf("too large: %v, want ErrInvalidMessage", err)
	}
	if got, err := p.Checkpoints(ctx, []string{"k", "none"}); err != nil || string(got["k"]) != "1" || len(got) != 1 {
		t.Fatalf("Checkpoints: %q, %v; want k=1 only", got, err)
	}
	if st := p.Stats(); st.Published != 1 || st.Failed != 1 || st.InFlight != 0 {
		t.Errorf("stats %+v: want 1 published, 1 failed", st)
	}
	// The tracer's header travelled with the committed message.
	rec := txReadRecords(t, e.brokers, topic, 1)[0]
	if m := fromRecord(rec); m.Header["traceparent"] != "span" || len(kt.starts) != 2 || len(kt.ends) != 2 {
		t.Errorf("traced: header %v, %d starts, %d ends; want traceparent, 2, 2", m.Header, len(kt.starts), len(kt.ends))
	}

	// Another producer opens a transaction writing k and stops there.
	other, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.TransactionalID(testenv.Name(t, "other")))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := other.ProduceSync(ctx, &kgo.Record{Topic: ck, Key: []byte("k"), Value: []byte("3")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = p.Checkpoints(short, []string{"k"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Checkpoints while a transaction on k is open: %v, want it to wait", err)
	}
	if got, err := p.Checkpoints(ctx, []string{"unrelated"}); err != nil || len(got) != 0 {
		t.Fatalf("Checkpoints of another key: %q, %v; want no wait, nothing", got, err)
	}
	if err := other.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Checkpoints(ctx, []string{"k"}); err != nil || string(got["k"]) != "3" {
		t.Fatalf("Checkpoints after the commit: %q, %v; want k=3", got, err)
	}
}

// Members join and leave the group while inputs flow: the rebalances abort
// open transactions (GroupTransactSession does on revoke) and the new
// owners read those records again; each output is still committed once.
func TestTransformerRebalance(t *testing.T) {
	e := newEnv(t)
	in, out := e.topic(4), e.topic(4)
	pub := e.publisher()
	group := testenv.Name(t, "g")
	sub := broker.Subscription{Topic: in, Group: group, MaxInFlight: 50}
	first := e.transformer(testenv.Name(t, "tx1"))
	runTransformer(t, first, sub, txDouble(out))
	const n = 3000
	txPublishInputs(t, pub, in, 0, 1000)
	testenv.Eventually(t, 30*time.Second, "first member busy", func() bool { return first.Stats().Handled > 0 })

	second := e.transformer(testenv.Name(t, "tx2"))
	stopSecond, _ := runTransformer(t, second, sub, txDouble(out))
	txPublishInputs(t, pub, in, 1000, 1000)
	testenv.Eventually(t, 30*time.Second, "second member busy", func() bool { return second.Stats().Handled > 0 })
	if err := stopSecond(); err != nil { // leaves: another rebalance
		t.Fatal(err)
	}
	txPublishInputs(t, pub, in, 2000, 1000)
	testenv.Eventually(t, 60*time.Second, "every input handled", func() bool {
		return first.Stats().Handled+second.Stats().Handled >= n && len(txReadQuick(t, e.brokers, out)) >= n
	})
	txCheckOnce(t, "read_committed", txReadAll(t, e.brokers, out, kgo.ReadCommitted()), n)
	t.Logf("first %+v", first.Stats())
	t.Logf("second %+v", second.Stats())
}

// Keys filter on the member: records whose key matches no pattern are
// committed unhandled.
func TestTransformerKeys(t *testing.T) {
	e := newEnv(t)
	in, out := e.topic(2), e.topic(2)
	pub := e.publisher()
	txPublishInputs(t, pub, in, 0, 32) // keys k0..k15
	tr := e.transformer(testenv.Name(t, "tx"))
	runTransformer(t, tr, broker.Subscription{Topic: in, Group: testenv.Name(t, "g"), Keys: []string{"k1", "k2"}}, txDouble(out))
	testenv.Eventually(t, 30*time.Second, "all inputs committed", func() bool { return tr.Stats().Handled >= 32 })
	got := txReadAll(t, e.brokers, out, kgo.ReadCommitted())
	want := map[string]int{"in-1.0": 1, "in-17.0": 1, "in-2.0": 1, "in-18.0": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outputs %v, want %v", got, want)
	}
	if st := tr.Stats(); st.Received != 4 || st.Emitted != 4 {
		t.Errorf("stats %+v: want 4 received and emitted", st)
	}
}

// Concurrency runs handlers of different keys at once within a
// transaction; outputs stay exactly once and in the order of their keys'
// inputs, also when transactions abort for retries.
func TestTransformerConcurrency(t *testing.T) {
	e := newEnv(t)
	in, out := e.topic(4), e.topic(4)
	const n = 2000
	txPublishInputs(t, e.publisher(), in, 0, n)
	var mu sync.Mutex
	failed := map[string]bool{}
	var running, most atomic.Int32
	tr := e.transformer(testenv.Name(t, "tx"))
	runTransformer(t, tr, broker.Subscription{Topic: in, Group: testenv.Name(t, "g"), Concurrency: 8},
		func(ctx context.Context, m broker.Message, emit Emit) error {
			now := running.Add(1)
			defer running.Add(-1)
			for {
				old := most.Load()
				if now <= old || most.CompareAndSwap(old, now) {
					break
				}
			}
			time.Sleep(100 * time.Microsecond) // let handlers overlap
			i, _ := strconv.Atoi(string(m.Payload))
			mu.Lock()
			fail := i%211 == 7 && !failed[m.ID]
			failed[m.ID] = true
			mu.Unlock()
			if fail {
				return errors.New("transient")
			}
			return txDouble(out)(ctx, m, emit)
		})
	testenv.Eventually(t, 60*time.Second, "every input handled", func() bool { return tr.Stats().Handled >= n })
	seen, ordered := txReadOrdered(t, e.brokers, out, kgo.ReadCommitted())
	txCheckOnce(t, "read_committed", seen, n)
	if !ordered {
		t.Error("outputs out of their keys' order")
	}
	st := tr.Stats()
	t.Logf("stats %+v; at most %d handlers at once", st, most.Load())
	if most.Load() < 2 || most.Load() > 8 {
		t.Errorf("at most %d handlers ran at once, want 2 to 8", most.Load())
	}
	if st.Retried == 0 {
		t.Error("no retries")
	}
}
