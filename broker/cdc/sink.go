package cdc

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/go-integration/patterns/broker"
)

// batch holds the messages decoded and not yet published, by topic in
// order of first appearance. Publishing topic after topic reorders
// messages of different tables only: a row's changes share a topic.
type batch struct {
	topics  []string
	byTopic map[string][]broker.Message
	n       int    // messages in the batch, all of streamed changes
	txs     uint64 // transactions that ended in the batch
}

func (b *batch) add(topic string, m broker.Message) {
	ms, ok := b.byTopic[topic]
	if !ok {
		b.topics = append(b.topics, topic)
	}
	b.byTopic[topic] = append(ms, m)
	b.n++
}

// tx is the transaction the sink is in.
type tx struct {
	open    bool
	commit  pglogrepl.LSN
	xid     uint32
	time    time.Time
	ordinal int
}

// sink turns pgoutput messages into broker messages and publishes them.
// The position it confirms to the server only moves past a transaction
// once every message of it was published.
func (s *Source) sink(hard, soft context.Context, chunks <-chan []item, skip map[string]pglogrepl.LSN) error {
	rels := map[uint32]*relation{}
	b := &batch{byTopic: map[string][]broker.Message{}}
	var cur tx
	var confirmTo pglogrepl.LSN // everything before it is in b or published
	flush := func() error {
		for _, topic := range b.topics {
			ms := b.byTopic[topic]
			for len(ms) > 0 {
				n := min(len(ms), s.cfg.maxBatch)
				if err := s.publish(hard, soft, topic, ms[:n], false); err != nil {
					return err
				}
				ms = ms[n:]
				b.byTopic[topic] = ms // a retry after a later failure starts here
			}
		}
		s.changes.Add(uint64(b.n))
		s.transactions.Add(b.txs)
		clear(b.byTopic)
		b.topics, b.n, b.txs = b.topics[:0], 0, 0
		var oldest time.Time
		if cur.open {
			oldest = cur.time
			s.oldestPending.Store(cur.time.UnixNano())
		} else {
			s.oldestPending.Store(0)
		}
		if uint64(confirmTo) > s.confirmed.Load() {
			s.confirmed.Store(uint64(confirmTo))
			for _, t := range s.confirmTracers {
				t.TraceConfirm(hard, TraceConfirmData{LSN: confirmTo, Oldest: oldest})
			}
		}
		return nil
	}
	for {
		var chunk []item
		var ok bool
		select {
		case chunk, ok = <-chunks:
		default:
			// Nothing else waits: publish what there is before blocking.
			if b.n > 0 || uint64(confirmTo) > s.confirmed.Load() {
				if err := flush(); err != nil {
					return err
				}
			}
			select {
			case chunk, ok = <-chunks:
			case <-soft.Done():
				return errStopped
			}
		}
		if soft.Err() != nil {
			return errStopped
		}
		if !ok {
			return flush()
		}
		for _, it := range chunk {
			if err := s.handle(it, rels, skip, b, &cur, &confirmTo, flush); err != nil {
				return err
			}
		}
	}
}

// handle turns one item into messages in b, flushing b when it is full.
func (s *Source) handle(it item, rels map[uint32]*relation, skip map[string]pglogrepl.LSN,
	b *batch, cur *tx, confirmTo *pglogrepl.LSN, flush func() error) error {
	if it.msg == nil {
		if !cur.open && it.lsn > *confirmTo {
			*confirmTo = it.lsn
		}
		return nil
	}
	now := time.Now()
	if err := known(it.msg, rels); err != nil {
		return err
	}
	switch m := it.msg.(type) {
	case *pglogrepl.BeginMessage:
		*cur = tx{open: true, commit: m.FinalLSN, xid: m.Xid, time: m.CommitTime}
		s.oldestPending.CompareAndSwap(0, m.CommitTime.UnixNano())
	case *pglogrepl.CommitMessage:
		cur.open = false
		*confirmTo = m.TransactionEndLSN
		b.txs++
	case *pglogrepl.RelationMessage:
		rels[m.RelationID] = s.relationOf(m)
	case *rowChange:
		rel := rels[m.relation]
		if rel.full == s.stateFull || s.skip(rel, skip, cur) {
			return nil
		}
		switch m.op {
		case 'I':
			s.emit(b, cur, &change{op: 'c', rel: rel, after: m.new}, rel.keyOf(m.new), it.lsn, now, "", "")
		case 'U':
			newKey := rel.keyOf(m.new)
			if m.old != nil {
				if oldKey := rel.keyOf(m.old); len(rel.key) > 0 && oldKey != newKey {
					// The primary key changed: as Debezium, a delete of the old
					// key then a create of the new one, each on its own key.
					s.emit(b, cur, &change{op: 'd', rel: rel, before: m.old}, oldKey, it.lsn, now, HeaderNewKey, newKey)
					s.emit(b, cur, &change{op: 'c', rel: rel, after: m.new}, newKey, it.lsn, now, HeaderOldKey, oldKey)
					break
				}
			}
			s.emit(b, cur, &change{op: 'u', rel: rel, before: m.old, after: m.new}, newKey, it.lsn, now, "", "")
		case 'D':
			s.emit(b, cur, &change{op: 'd', rel: rel, before: m.old}, rel.keyOf(m.old), it.lsn, now, "", "")
		}
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			rel := rels[id]
			if rel.full == s.stateFull || s.skip(rel, skip, cur) {
				continue // the other tables of the statement are still truncated
			}
			s.emit(b, cur, &change{op: 't', rel: rel}, rel.keyPrefix, it.lsn, now, "", "")
		}
	}
	if b.n >= s.cfg.maxBatch {
		if err := flush(); err != nil {
			return err
		}
	}
	return nil
}

// skip reports whether a change of rel in the current transaction is
// already in the table's snapshot (the transaction committed before the
// snapshot's LSN), counting it so its ordinal stays the same either way.
func (s *Source) skip(rel *relation, skip map[string]pglogrepl.LSN, cur *tx) bool {
	if at, ok := skip[rel.full]; ok && cur.commit < at {
		cur.ordinal++
		s.skipped.Add(1)
		return true
	}
	return false
}

func (s *Source) emit(b *batch, cur *tx, c *change, key string, lsn pglogrepl.LSN, now time.Time, hk, hv string) {
	c.commit, c.lsn, c.xid, c.hasXid, c.ts = cur.commit, lsn, cur.xid, true, cur.time
	m := s.message(c, key, cur.ordinal, now)
	if hk != "" {
		m.Header[hk] = hv
	}
	cur.ordinal++
	b.add(c.rel.topic, m)
}

// relationOf builds the relation of a Relation message: columns, key (the
// primary key New found, else the replica identity columns pgoutput
// flags, unless the identity is the full row) and topic.
func (s *Source) relationOf(m *pglogrepl.RelationMessage) *relation {
	cols := make([]column, len(m.Columns))
	var flagged []string
	for i, c := range m.Columns {
		cols[i] = column{raw: c.Name, name: fieldName(c.Name), conv: converter(c.DataType, c.TypeModifier, s.cfg.decimal)}
		if c.Flags&1 != 0 {
			flagged = append(flagged, c.Name)
		}
	}
	var key []string
	if t, ok := s.tables[m.Namespace+"."+m.RelationName]; ok {
		key = t.key
	} else if m.ReplicaIdentity != 'f' {
		key = flagged
	}
	return s.newRelation(m.Namespace, m.RelationName, cols, key)
}

// known checks that a change names a relation the stream described:
// pgoutput sends a Relation message before a table's first change.
func known(msg any, rels map[uint32]*relation) error {
	var ids []uint32
	switch m := msg.(type) {
	case *rowChange:
		ids = []uint32{m.relation}
	case *pglogrepl.TruncateMessage:
		ids = m.RelationIDs
	}
	for _, id := range ids {
		if rels[id] == nil {
			return fmt.Errorf("cdc: change of relation %d before its Relation message", id)
		}
	}
	return nil
}
