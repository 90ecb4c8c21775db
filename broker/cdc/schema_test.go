package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/internal/testenv"
)

// TestSchemaChange: a column added mid-stream is in the following changes.
func TestSchemaChange(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table items (id int primary key, name text)`)
	r := newRecorder(t)
	s, _ := e.start(t, r, cdc.WithTables("items"))
	e.streaming(t, s)
	e.exec(t, `insert into items values (1, 'a')`)
	e.exec(t, `alter table items add column price int default 7`)
	e.exec(t, `insert into items values (2, 'b', 9)`)
	e.exec(t, `update items set name = 'a2' where id = 1`)
	e.exec(t, `alter table items drop column name`)
	e.exec(t, `delete from items where id = 2`)
	testenv.Eventually(t, 10*time.Second, "four changes", func() bool { return r.len() >= 4 })
	want := []string{
		`{"id":1,"name":"a"}`,
		`{"id":2,"name":"b","price":9}`,
		`{"id":1,"name":"a2","price":7}`,
		`d {"id":2,"price":null}`,
	}
	for i, m := range r.all() {
		ev := decode(t, m.m)
		got := compact(t, ev.After)
		if ev.Op == "d" {
			got = "d " + compact(t, ev.Before)
		}
		if got != want[i] {
			t.Errorf("change %d: %s, want %s", i, got, want[i])
		}
	}
}

// TestReplicaIdentityFull: with REPLICA IDENTITY FULL, before holds the
// whole old row for updates and deletes; a table with no primary key is
// keyed by the table.
func TestReplicaIdentityFull(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table withpk (id int primary key, v text)`)
	e.exec(t, `alter table withpk replica identity full`)
	e.exec(t, `create table nopk (v text)`)
	e.exec(t, `alter table nopk replica identity full`)
	r := newRecorder(t)
	s, _ := e.start(t, r, cdc.WithTables("withpk", "nopk"))
	e.streaming(t, s)
	e.exec(t, `insert into withpk values (1, 'a')`)
	e.exec(t, `update withpk set v = 'b' where id = 1`)
	e.exec(t, `delete from withpk where id = 1`)
	e.exec(t, `insert into nopk values ('x')`)
	e.exec(t, `update nopk set v = 'y'`)
	testenv.Eventually(t, 10*time.Second, "five changes", func() bool { return r.len() >= 5 })
	want := []struct{ op, key, before, after string }{
		{"c", "withpk.1", "", `{"id":1,"v":"a"}`},
		{"u", "withpk.1", `{"id":1,"v":"a"}`, `{"id":1,"v":"b"}`},
		{"d", "withpk.1", `{"id":1,"v":"b"}`, ""},
		{"c", "nopk", "", `{"v":"x"}`},
		{"u", "nopk", `{"v":"x"}`, `{"v":"y"}`},
	}
	for i, m := range r.all() {
		ev := decode(t, m.m)
		w := want[i]
		if ev.Op != w.op || m.m.Key != e.schema+"."+w.key || compact(t, ev.Before) != w.before || compact(t, ev.After) != w.after {
			t.Errorf("change %d: %s %s %s %s, want %+v", i, ev.Op, m.m.Key, ev.Before, ev.After, w)
		}
	}
}

// failingAfter publishes through a recorder but fails every Publish to
// topic once n messages of it went through.
type failingAfter struct {
	*recorder
	topic string
	n     int64
	sent  atomic.Int64
}

func (f *failingAfter) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	if topic == f.topic && f.sent.Load()+int64(len(msgs)) > f.n {
		return errors.New("failingAfter: down")
	}
	if err := f.recorder.Publish(ctx, topic, msgs...); err != nil {
		return err
	}
	if topic == f.topic {
		f.sent.Add(int64(len(msgs)))
	}
	return nil
}

// TestSnapshotResume: a snapshot interrupted in its second table resumes
// without reading the first table again, and with what was changed in the
// meantime, a consumer replaying every event ends with each table's rows.
func TestSnapshotResume(t *testing.T) {
	e := newEnv(t)
	for _, tb := range []string{"a", "b", "c"} {
		e.exec(t, `create table `+tb+` (id int primary key, v int not null)`)
		e.exec(t, `insert into `+tb+` select g, 0 from generate_series(1, 1000) g`)
	}
	e.exec(t, `create table marker (id int primary key)`)
	r1 := newRecorder(t)
	f := &failingAfter{recorder: r1, topic: "cdc." + e.schema + ".b", n: 300}
	s1, stop1 := e.start(t, f, cdc.WithTables("a", "b", "c", "marker"), cdc.WithMaxBatch(100))
	testenv.Eventually(t, 30*time.Second, "the snapshot stops in b", func() bool {
		return s1.Stats().SnapshotRows == 1300 && s1.Stats().PublishFailures > 0
	})
	if err := stop1(); !errors.Is(err, cdc.ErrClosed) {
		t.Fatalf("Run: %v", err)
	}
	// Meanwhile: change a (done), b (some rows published: delete one of
	// them), c (not started).
	var publishedB string
	for _, m := range r1.all() {
		if m.topic == f.topic {
			publishedB = strings.TrimPrefix(m.m.Key, e.schema+".b.")
			break
		}
	}
	e.exec(t, `update a set v = 1 where id = 1`)
	e.exec(t, `delete from b where id = `+publishedB)
	e.exec(t, `update b set v = 1 where id = 1000`)
	e.exec(t, `update c set v = 1 where id = 1`)
	e.exec(t, `delete from c where id = 2`)
	e.exec(t, `insert into c values (1001, 0)`)
	e.exec(t, `truncate a`)
	e.exec(t, `insert into a values (5, 5)`)

	r2 := newRecorder(t)
	s2, _ := e.start(t, r2, cdc.WithTables("a", "b", "c", "marker"), cdc.WithMaxBatch(100))
	// After the resumed snapshot, so the marker is streamed.
	testenv.Eventually(t, 30*time.Second, "the resumed snapshot", func() bool { return s2.Stats().SnapshotRows >= 1999 })
	e.marker(t, r2, 1)
	st := state{}
	count := map[string]int{}
	for _, m := range append(r1.all(), r2.all()...) {
		st.apply(t, m.m)
	}
	for _, m := range r2.all() {
		count[m.m.Header[cdc.HeaderTable]+" "+m.m.Header[cdc.HeaderOp]]++
	}
	count1 := map[string]int{}
	for _, m := range r1.all() {
		count1[m.m.Header[cdc.HeaderTable]+" "+m.m.Header[cdc.HeaderOp]]++
	}
	t.Logf("before the restart: %v, stats %+v", count1, s1.Stats())
	t.Logf("after the restart: %v, stats %+v", count, s2.Stats())
	if n := count[e.schema+".b d"]; n != 1 {
		t.Errorf("table b: %d deletes, want the one of a row its first read published", n)
	}
	if n := count[e.schema+".a r"]; n != 0 {
		t.Errorf("table a, done before the interruption, read again: %d rows", n)
	}
	if n := count[e.schema+".c r"]; n != 1000 {
		t.Errorf("table c: %d snapshot rows, want 1000 (read at the new snapshot)", n)
	}
	if n := count[e.schema+".c c"] + count[e.schema+".c u"] + count[e.schema+".c d"]; n != 0 {
		t.Errorf("table c: %d streamed changes, want 0 (they are in its snapshot)", n)
	}
	if s2.Stats().Skipped != 3 {
		t.Errorf("skipped %d changes, want the 3 of table c", s2.Stats().Skipped)
	}
	for _, tb := range []string{"a", "b", "c"} {
		if got, want := st[e.schema+"."+tb], e.rows(t, tb); !maps.Equal(got, want) {
			t.Errorf("table %s: replayed events give %d rows, the table has %d", tb, len(got), len(want))

			for k, v := range want {
				if got[k] != v {
					t.Logf("%s: got %s, want %s", k, got[k], v)
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Logf("%s: extra %s", k, fmt.Sprint(got[k]))
				}
			}
		}
	}
}

// TestPublicationFilters: the snapshot reads what the stream sends: not
// generated columns, and (PostgreSQL 15) the publication's column list and
// row filter.
func TestPublicationFilters(t *testing.T) {
	e := newEnv(t)
	var version int
	if err := e.db.QueryRow(context.Background(), `select current_setting('server_version_num')::int`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version < 150000 {
		t.Skip("column lists and row filters need PostgreSQL 15")
	}
	e.exec(t, `create table f (id int primary key, v int not null, secret text, g int generated always as (v * 2) stored)`)
	e.exec(t, `insert into f (id, v, secret) values (1, 1, 's'), (2, 0, 's')`)
	e.exec(t, `create publication `+e.pub+` for table f (id, v) where (v > 0)`)
	r := newRecorder(t)
	s, _ := e.start(t, r)
	e.streaming(t, s)
	e.exec(t, `insert into f (id, v, secret) values (3, 5, 's'), (4, 0, 's')`)
	e.exec(t, `insert into f (id, v, secret) values (5, 7, 's')`)
	// Row 5 comes after row 4 would have.
	testenv.Eventually(t, 10*time.Second, "row 5", func() bool { return r.len() >= 3 })
	var got []string
	for _, m := range r.all() {
		ev := decode(t, m.m)
		got = append(got, ev.Op+" "+compact(t, ev.After))
	}
	if want := []string{`r {"id":1,"v":1}`, `c {"id":3,"v":5}`, `c {"id":5,"v":7}`}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
