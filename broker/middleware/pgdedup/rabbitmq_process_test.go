package pgdedup_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/middleware"
	"github.com/go-integration/patterns/broker/middleware/pgdedup"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
)

// Environment of a child RabbitMQ consumer (the test binary run again).
const (
	envRabbitAMQP = "PGDEDUP_RABBIT_AMQP"
	envRabbitDSN  = "PGDEDUP_RABBIT_DSN"
	envRabbitRole = "PGDEDUP_RABBIT_ROLE" // "survivor" or "victim"
)

// The consumers' subscription, the claim lifetime they use, and after how
// many messages the victim stops mid-handling.
var rabbitSub = broker.Subscription{Topic: "orders", Group: "billing"}

const (
	rabbitInProgress = 2 * time.Second
	victimHoldsAfter = 20
)

// printTracer prints each Dedup decision to stdout for the parent test.
type printTracer struct{}

func (printTracer) TraceDedup(_ context.Context, d middleware.TraceDedupData) {
	fmt.Printf("dedup %s %s\n", d.Result, d.MessageID)
}

// TestChildRabbitConsumer is not a test of its own: the test below runs the
// test binary again with it selected and the environment above set. It
// consumes rabbitSub through rabbitmq behind Dedup over the shared pgdedup
// table and records each handled ID in table handled. It prints "ready"
// when the subscription receives. The victim (Concurrency 1, so no other
// handler is between its side effect and Done at that moment) handles
// victimHoldsAfter messages, then prints "holding ID" and hangs in the
// handler of the next one, its claim held, until killed. The survivor stops
// when its stdin closes.
func TestChildRabbitConsumer(t *testing.T) {
	amqpURL := os.Getenv(envRabbitAMQP)
	if amqpURL == "" {
		t.Skip("runs only as a child of TestTwoConsumerProcessesOverRabbitMQOneKilled")
	}
	victim := os.Getenv(envRabbitRole) == "victim"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	pool := testenv.Pool(t, os.Getenv(envRabbitDSN))
	store, err := pgdedup.New(pool)
	if err != nil {
		t.Fatal(err)
	}
	dedup, err := middleware.Dedup(store, middleware.WithHandledFor(time.Hour),
		middleware.WithInProgressFor(rabbitInProgress), middleware.WithTracer(printTracer{}))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := rabbitmq.NewSubscriber(ctx, amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	pid := os.Getpid()
	var handled atomic.Int32
	h := dedup(func(ctx context.Context, m broker.Message) error {
		if victim && handled.Load() == victimHoldsAfter {
			fmt.Printf("holding %s\n", m.ID)
			time.Sleep(time.Hour) // until SIGKILL: no Release runs
		}
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		if _, err := pool.Exec(ctx, "insert into handled (id, pid) values ($1, $2)", m.ID, pid); err != nil {
			return err
		}
		handled.Add(1)
		return nil
	})
	s := rabbitSub
	s.Concurrency = 4
	if victim {
		s.Concurrency = 1
	}
	s.Ready = func() { fmt.Println("ready") }
	if err := sub.Subscribe(ctx, s, h); err != nil {
		t.Fatal(err)
	}
}

// child output, line by line, as it arrives.
type childOut struct {
	mu    sync.Mutex
	lines []string
	added chan struct{} // closed and replaced on every line
	done  chan struct{} // closed at EOF
}

func startChild(t *testing.T, role, amqpURL, dsn string) (*exec.Cmd, io.WriteCloser, *childOut) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildRabbitConsumer$", "-test.count=1")
	cmd.Env = append(os.Environ(), envRabbitAMQP+"="+amqpURL, envRabbitDSN+"="+dsn, envRabbitRole+"="+role)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	out := &childOut{added: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(out.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.mu.Lock()
			out.lines = append(out.lines, sc.Text())
			close(out.added)
			out.added = make(chan struct{})
			out.mu.Unlock()
		}
	}()
	return cmd, stdin, out
}

// waitLine waits for a line with prefix and returns the rest of it.
func (o *childOut) waitLine(t *testing.T, who, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for seen := 0; ; {
		o.mu.Lock()
		for ; seen < len(o.lines); seen++ {
			if rest, ok := strings.CutPrefix(o.lines[seen], prefix); ok {
				o.mu.Unlock()
				return rest
			}
		}
		added := o.added
		o.mu.Unlock()
		select {
		case <-added:
		case <-o.done:
			t.Fatalf("%s ended without printing %q:\n%s", who, prefix, o.text())
		case <-deadline:
			t.Fatalf("%s did not print %q within %v:\n%s", who, prefix, timeout, o.text())
		}
	}
}

func (o *childOut) text() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.lines, "\n")
}

// Two consumer processes compete on one RabbitMQ queue, both behind Dedup
// over one pgdedup table, and every message is published twice (as a relay
// does after a lost confirm). One consumer is SIGKILLed while handling a
// message, holding its claim. Each message is handled exactly once: the
// duplicates are skipped in whichever process they land, and the killed
// consumer's message, redelivered by RabbitMQ to the survivor, waits for the
// claim's in-progress lifetime and is then handled there.
func TestTwoConsumerProcessesOverRabbitMQOneKilled(t *testing.T) {
	vhost, amqpURL := testenv.VHost(t)
	_, dsn := newStore(t)
	pool := testenv.Pool(t, dsn)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "create table handled (id text not null, pid int not null)"); err != nil {
		t.Fatal(err)
	}
	prov, err := rabbitmq.NewSubscriber(ctx, amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := prov.Provision(ctx, rabbitSub); err != nil {
		t.Fatal(err)
	}
	_ = prov.Close()

	victim, _, victimOut := startChild(t, "victim", amqpURL, dsn)
	survivor, survivorIn, survivorOut := startChild(t, "survivor", amqpURL, dsn)
	victimOut.waitLine(t, "victim", "ready", 30*time.Second)
	survivorOut.waitLine(t, "survivor", "ready", 30*time.Second)

	const ids = 200
	pub, err := rabbitmq.NewPublisher(ctx, amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	for round := range 2 {
		var batch []broker.Message
		for _, i := range rand.Perm(ids) {
			batch = append(batch, broker.Message{ID: "m" + strconv.Itoa(i), Payload: []byte(strconv.Itoa(round))})
		}
		if err := pub.Publish(ctx, rabbitSub.Topic, batch...); err != nil {
			t.Fatal(err)
		}
	}

	held := victimOut.waitLine(t, "victim", "holding ", 60*time.Second)
	if err := victim.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	killedAt := time.Now()
	_ = victim.Wait()

	count := func(q string) int {
		var n int
		if err := pool.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	testenv.Eventually(t, 60*time.Second, "every ID handled", func() bool {
		return count("select count(distinct id) from handled") == ids
	})
	queue := rabbitmq.DefaultQueueName(rabbitSub.Topic, rabbitSub.Group)
	testenv.Eventually(t, 60*time.Second, "the queue drained (ready and unacked)", func() bool {
		out, err := testenv.Rabbitmqctl("list_queues", "-p", vhost, "-q", "name", "messages")
		if err != nil {
			t.Fatalf("rabbitmqctl: %v: %s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == queue {
				return f[1] == "0"
			}
		}
		return false
	})
	_ = survivorIn.Close()
	if err := survivor.Wait(); err != nil {
		t.Fatalf("survivor: %v\n%s", err, survivorOut.text())
	}

	if n := count("select count(*) from handled"); n != ids {
		rows, _ := pool.Query(ctx, "select id, count(*) from handled group by id having count(*) > 1")
		var twice []string
		for rows.Next() {
			var id string
			var n int
			_ = rows.Scan(&id, &n)
			twice = append(twice, fmt.Sprintf("%s×%d", id, n))
		}
		rows.Close()
		t.Fatalf("%d handlings of %d IDs; handled more than once: %v", n, ids, twice)
	}
	victimPid, survivorPid := victim.Process.Pid, survivor.Process.Pid
	if n := count(fmt.Sprintf("select count(*) from handled where pid = %d", victimPid)); n != victimHoldsAfter {
		t.Errorf("the victim handled %d messages before it was killed, want %d", n, victimHoldsAfter)
	}
	var by int
	if err := pool.QueryRow(ctx, "select pid from handled where id = $1", held).Scan(&by); err != nil || by != survivorPid {
		t.Fatalf("the message the victim held (%s) was handled by pid %d (%v), want the survivor %d", held, by, err, survivorPid)
	}
	out := survivorOut.text() + "\n"
	inProgress := strings.Count(out, "dedup in-progress "+held+"\n")
	t.Logf("victim held %s when killed; the survivor found it in progress %d times before handling it; all handled and the queue drained %v after the kill; survivor: %d skipped, %d in-progress decisions in all",
		held, inProgress, time.Since(killedAt).Round(time.Millisecond), strings.Count(out, "dedup skipped "), strings.Count(out, "dedup in-progress "))
	if strings.Count(out, "dedup skipped ") == 0 {
		t.Error("the survivor skipped no duplicate")
	}
}
