package cdc_test

import (
	"slices"
	"testing"

	"github.com/go-integration/patterns/broker/cdc"
)

// TestTruncateSkipsOnlyTheStateTable: with a publication of the whole
// schema, the source's own state table is published too and never
// announced; a TRUNCATE naming it before two other tables still announces
// both of them.
func TestTruncateSkipsOnlyTheStateTable(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table a (id int primary key)`)
	e.exec(t, `create table b (id int primary key)`)
	e.exec(t, `create table marker (id int primary key)`)
	r := newRecorder(t)
	// A schema publication covers the state table New creates in it.
	e.exec(t, `create publication `+e.pub+` for tables in schema `+e.schema)
	s, _ := e.start(t, r) // snapshots the (empty) tables; creates the state table
	e.streaming(t, s)
	e.exec(t, `insert into a values (1); insert into b values (1)`)
	e.exec(t, `truncate `+e.state+`, a, b`)
	e.marker(t, r, 1)
	var truncated []string
	for _, m := range r.all() {
		if m.m.Header[cdc.HeaderOp] == "t" {
			truncated = append(truncated, m.m.Header[cdc.HeaderTable])
		}
	}
	slices.Sort(truncated)
	if want := []string{e.schema + ".a", e.schema + ".b"}; !slices.Equal(truncated, want) {
		t.Errorf("truncate events for %v, want %v", truncated, want)
	}
}
