package cdc_test

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/internal/testenv"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// TestSnapshotEnvelope: rows that exist before the slot are published as
// op "r" with Debezium's snapshot envelope, then changes stream.
func TestSnapshotEnvelope(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table items (id int primary key, name text)`)
	e.exec(t, `insert into items values (1, 'one'), (2, 'two')`)
	r := newRecorder(t)
	s, _ := e.start(t, r, cdc.WithTables("items"), cdc.WithTopicPrefix("shop"))
	e.streaming(t, s)
	e.exec(t, `insert into items values (3, 'three')`)
	testenv.Eventually(t, 10*time.Second, "three events", func() bool { return r.len() >= 3 })
	got := r.all()
	for i, m := range got[:2] {
		ev := decode(t, m.m)
		var all map[string]any
		decodeInto(t, m.m.Payload, &all)
		if k := sortedKeys(all); !slices.Equal(k, debeziumValue) {
			t.Errorf("value fields %v", k)
		}
		if k := sortedKeys(ev.Source); !slices.Equal(k, debeziumSource) {
			t.Errorf("source fields %v", k)
		}
		lsn, err := pglogrepl.ParseLSN(m.m.Header[cdc.HeaderLSN])
		if err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("%s.items.%d", e.schema, i+1)
		if m.topic != "shop."+e.schema+".items" || m.m.Key != key || m.m.ID != cdc.SnapshotID(lsn, key) || m.m.Header[cdc.HeaderOp] != "r" {
			t.Errorf("snapshot message %s %s %s %v", m.topic, m.m.Key, m.m.ID, m.m.Header)
		}
		if _, ok := m.m.Header[cdc.HeaderTxID]; ok {
			t.Errorf("snapshot row with a transaction id header")
		}
		src := ev.Source
		if ev.Op != "r" || compact(t, ev.Before) != "" || src["snapshot"] != "true" || src["txId"] != nil || src["name"] != "shop" ||
			fmt.Sprint(src["lsn"]) != fmt.Sprint(uint64(lsn)) {
			t.Errorf("snapshot event %s", m.m.Payload)
		}
	}
	if ev := decode(t, got[2].m); ev.Op != "c" || ev.Source["snapshot"] != "false" {
		t.Errorf("streamed event %s", got[2].m.Payload)
	}
	if st := s.Stats(); st.SnapshotRows != 2 || st.Changes != 1 || st.Streams != 1 {
		t.Errorf("stats %+v", st)
	}
}
