package cdc_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/broker/kafka"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
)

// inbox collects what a subscriber received.
type inbox struct {
	mu   sync.Mutex
	msgs []broker.Message
}

func (in *inbox) handler(_ context.Context, m broker.Message) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.msgs = append(in.msgs, m)
	return nil
}

func (in *inbox) all() []broker.Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.msgs)
}

// target is a broker the workload is published to: pub publishes, and
// every message published to topics after target returned reaches in.
type target func(t *testing.T, topics []string) (pub broker.Publisher, in *inbox)

func subscribeAll(t *testing.T, sub broker.Subscriber, topics []string) *inbox {
	in := &inbox{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, topic := range topics {
		s := broker.Subscription{Topic: topic, Group: "consumer"}
		if p, ok := sub.(broker.Provisioner); ok {
			if err := p.Provision(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		ready := make(chan struct{})
		s.Ready = func() { close(ready) }
		wg.Go(func() { _ = sub.Subscribe(ctx, s, in.handler) })
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			t.Fatalf("subscription to %s not ready", topic)
		}
	}
	return in
}

var targets = map[string]target{
	"memory": func(t *testing.T, topics []string) (broker.Publisher, *inbox) {
		b := memory.MustNew()
		t.Cleanup(func() { _ = b.Close() })
		return b, subscribeAll(t, b, topics)
	},
	"rabbitmq": func(t *testing.T, topics []string) (broker.Publisher, *inbox) {
		_, url := testenv.VHost(t)
		ctx := context.Background()
		pub, err := rabbitmq.NewPublisher(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := rabbitmq.NewSubscriber(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Close(); _ = pub.Close() })
		return pub, subscribeAll(t, sub, topics)
	},
	"kafka": func(t *testing.T, topics []string) (broker.Publisher, *inbox) {
		brokers := kafkaenv.Brokers(t)
		pub, err := kafka.NewPublisher(brokers, kafka.WithCreateTopics(kafka.Topic{Partitions: 4}))
		if err != nil {
			t.Fatal(err)
		}
		sub, err := kafka.NewSubscriber(brokers, kafka.WithCreateTopics(kafka.Topic{Partitions: 4}),
			kafka.WithGroupTimeouts(2*time.Second, 10*time.Second, 100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Close(); _ = pub.Close() })
		return pub, subscribeAll(t, sub, topics)
	},
}

// want is one expected event.
type want struct {
	op     string
	key    string // after the schema
	before string // JSON of before, "" for null
	after  string
	newKey string // HeaderNewKey, after the schema
	oldKey string
}

// debeziumSource are the fields of Debezium's PostgreSQL source block.
var debeziumSource = []string{"connector", "db", "lsn", "name", "schema", "sequence", "snapshot", "table", "ts_ms", "ts_ns", "ts_us", "txId", "version", "xmin"}

// debeziumValue are the fields of a Debezium change event value.
var debeziumValue = []string{"after", "before", "op", "source", "transaction", "ts_ms", "ts_ns", "ts_us"}

func TestWorkload(t *testing.T) {
	for _, name := range []string{"memory", "rabbitmq", "kafka"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.exec(t, `create table accounts (id int primary key, owner text, balance numeric(10,2))`)
			e.exec(t, `create table notes (k text primary key, body text)`)
			topics := []string{"cdc." + e.schema + ".accounts", "cdc." + e.schema + ".notes"}
			pub, in := targets[name](t, topics)
			s, _ := e.start(t, pub, cdc.WithTables("accounts", "notes"))
			e.streaming(t, s)

			e.exec(t, `insert into accounts values (1, 'ann', 10.5), (2, 'bob', 20), (3, 'cy', 30)`)
			e.exec(t, `update accounts set balance = 11 where id = 1`)
			e.exec(t, `update accounts set id = 20 where id = 2`)
			e.exec(t, `delete from accounts where id = 3`)
			e.exec(t, `begin;
insert into accounts values (4, 'dee', 40);
update accounts set owner = 'dee2' where id = 4;
insert into notes values ('a.b', 'dotted');
delete from accounts where id = 4;
commit`)
			e.exec(t, `begin; insert into accounts values (99, 'never', 0); rollback`)
			e.exec(t, `truncate notes`)
			e.exec(t, `insert into notes values ('x*#y z', 'odd')`)

			wants := []want{
				{op: "c", key: "accounts.1", after: `{"id":1,"owner":"ann","balance":"10.50"}`},
				{op: "c", key: "accounts.2", after: `{"id":2,"owner":"bob","balance":"20.00"}`},
				{op: "c", key: "accounts.3", after: `{"id":3,"owner":"cy","balance":"30.00"}`},
				{op: "u", key: "accounts.1", after: `{"id":1,"owner":"ann","balance":"11.00"}`},
				{op: "d", key: "accounts.2", before: `{"id":2,"owner":null,"balance":null}`, newKey: "accounts.20"},
				{op: "c", key: "accounts.20", after: `{"id":20,"owner":"bob","balance":"20.00"}`, oldKey: "accounts.2"},
				{op: "d", key: "accounts.3", before: `{"id":3,"owner":null,"balance":null}`},
				{op: "c", key: "accounts.4", after: `{"id":4,"owner":"dee","balance":"40.00"}`},
				{op: "u", key: "accounts.4", after: `{"id":4,"owner":"dee2","balance":"40.00"}`},
				{op: "c", key: "notes.a%2Eb", after: `{"k":"a.b","body":"dotted"}`},
				{op: "d", key: "accounts.4", before: `{"id":4,"owner":null,"balance":null}`},
				{op: "t", key: "notes"},
				{op: "c", key: "notes.x%2A%23y%20z", after: `{"k":"x*#y z","body":"odd"}`},
			}
			// Transactions, as indexes into wants.
			txs := [][]int{{0, 1, 2}, {3}, {4, 5}, {6}, {7, 8, 9, 10}, {11}, {12}}

			testenv.Eventually(t, 30*time.Second, "every change arrives", func() bool { return len(in.all()) >= len(wants) })
			// Nothing more may come: wait until the source confirmed
			// everything, then give late duplicates a moment.
			testenv.Eventually(t, 10*time.Second, "all confirmed", func() bool { return s.Stats().Changes == uint64(len(wants)) })
			time.Sleep(200 * time.Millisecond)
			got := in.all()
			if len(got) != len(wants) {
				for _, m := range got {
					t.Logf("%s %s %s", m.ID, m.Key, m.Payload)
				}
				t.Fatalf("got %d messages, want %d", len(got), len(wants))
			}
			checkWorkload(t, e, got, wants, txs)
			if st := s.Stats(); st.Transactions < uint64(len(txs)) || st.Publishes == 0 || st.ConfirmedLSN == 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func checkWorkload(t *testing.T, e *env, got []broker.Message, wants []want, txs [][]int) {
	t.Helper()
	prefix := e.schema + "."
	// Order per key: the broker promises it, and so must the source.
	byKey := map[string][]broker.Message{}
	for _, m := range got {
		byKey[m.Key] = append(byKey[m.Key], m)
	}
	wantByKey := map[string][]int{}
	for i, w := range wants {
		wantByKey[prefix+w.key] = append(wantByKey[prefix+w.key], i)
	}
	if len(byKey) != len(wantByKey) {
		t.Errorf("keys: got %d, want %d", len(byKey), len(wantByKey))
	}
	matched := make([]broker.Message, len(wants))
	for key, idx := range wantByKey {
		ms := byKey[key]
		if len(ms) != len(idx) {
			t.Errorf("key %s: got %d messages, want %d", key, len(ms), len(idx))
			continue
		}
		for j, i := range idx {
			matched[i] = ms[j]
		}
	}
	ids := map[string]bool{}
	var prevCommit pglogrepl.LSN
	for ti, tx := range txs {
		var commit pglogrepl.LSN
		var txid string
		for ord, i := range tx {
			m, w := matched[i], wants[i]
			if m.Payload == nil {
				continue
			}
			if ids[m.ID] {
				t.Errorf("duplicate ID %s", m.ID)
			}
			ids[m.ID] = true
			env := decode(t, m)
			var all map[string]any
			decodeInto(t, m.Payload, &all)
			if k := sortedKeys(all); !slices.Equal(k, debeziumValue) {
				t.Errorf("%s: value fields %v, want %v", m.ID, k, debeziumValue)
			}
			if k := sortedKeys(env.Source); !slices.Equal(k, debeziumSource) {
				t.Errorf("%s: source fields %v, want %v", m.ID, k, debeziumSource)
			}
			if env.Op != w.op || m.Header[cdc.HeaderOp] != w.op {
				t.Errorf("%s: op %q (header %q), want %q", m.ID, env.Op, m.Header[cdc.HeaderOp], w.op)
			}
			if b := compact(t, env.Before); b != w.before {
				t.Errorf("%s %s: before %s, want %s", m.ID, w.op, b, w.before)
			}
			if a := compact(t, env.After); a != w.after {
				t.Errorf("%s %s: after %s, want %s", m.ID, w.op, a, w.after)
			}
			if w.newKey != "" && m.Header[cdc.HeaderNewKey] != prefix+w.newKey {
				t.Errorf("%s: new key header %q, want %q", m.ID, m.Header[cdc.HeaderNewKey], prefix+w.newKey)
			}
			if w.oldKey != "" && m.Header[cdc.HeaderOldKey] != prefix+w.oldKey {
				t.Errorf("%s: old key header %q, want %q", m.ID, m.Header[cdc.HeaderOldKey], prefix+w.oldKey)
			}
			table := strings.SplitN(w.key, ".", 2)[0]
			src := env.Source
			if src["connector"] != "postgresql" || src["snapshot"] != "false" || src["schema"] != e.schema ||
				src["table"] != table || src["db"] != "test" || src["name"] != "cdc" || src["xmin"] != nil || src["version"] != cdc.Version {
				t.Errorf("%s: source %v", m.ID, src)
			}
			if m.Header[cdc.HeaderTable] != e.schema+"."+table {
				t.Errorf("%s: table header %q", m.ID, m.Header[cdc.HeaderTable])
			}
			lsn, err := pglogrepl.ParseLSN(m.Header[cdc.HeaderLSN])
			if err != nil {
				t.Errorf("%s: lsn header %q: %v", m.ID, m.Header[cdc.HeaderLSN], err)
			}
			if want := cdc.ChangeID(lsn, ord); m.ID != want {
				t.Errorf("ID %s, want %s (commit LSN and ordinal)", m.ID, want)
			}
			if fmt.Sprint(src["txId"]) != m.Header[cdc.HeaderTxID] {
				t.Errorf("%s: txId %v, header %q", m.ID, src["txId"], m.Header[cdc.HeaderTxID])
			}
			if seq := fmt.Sprint(src["sequence"]); !strings.HasPrefix(seq, `["`+strconv.FormatUint(uint64(lsn), 10)+`","`) {
				t.Errorf("%s: sequence %s", m.ID, seq)
			}
			if ord == 0 {
				commit, txid = lsn, m.Header[cdc.HeaderTxID]
				if commit <= prevCommit {
					t.Errorf("transaction %d: commit %s not after %s", ti, commit, prevCommit)
				}
				prevCommit = commit
			} else if lsn != commit || m.Header[cdc.HeaderTxID] != txid {
				t.Errorf("%s: transaction %s/%s, want %s/%s", m.ID, lsn, m.Header[cdc.HeaderTxID], commit, txid)
			}
		}
	}
}

func sortedKeys(m map[string]any) []string {
	k := make([]string, 0, len(m))
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}
