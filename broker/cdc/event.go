package cdc

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/go-integration/patterns/broker"
)

// Version is source.version in every envelope: this package, not a
// Debezium release.
const Version = "go-integration/patterns/broker/cdc 1"

// Headers set on every message.
const (
	HeaderLSN    = "cdc-lsn"    // the transaction's commit LSN (for snapshot rows, the snapshot's LSN), as PostgreSQL prints it: "16/B374D848"
	HeaderTxID   = "cdc-txid"   // the transaction id, decimal (absent for snapshot rows)
	HeaderOp     = "cdc-op"     // c, u, d, r or t
	HeaderTable  = "cdc-table"  // schema.table
	HeaderOldKey = "cdc-oldkey" // on the c of an update that changed the primary key: the Key of its d
	HeaderNewKey = "cdc-newkey" // on the d of an update that changed the primary key: the Key of its c
)

// maxKeyLen bounds a Key: the primary-key part of a longer one is replaced
// by a hash, so that the key fits AMQP's 255 bytes even with a topic
// prefix in front (broker/rabbitmq's shared exchange prepends the topic).
const maxKeyLen = 120

// column is a relation's column as the decoder uses it.
type column struct {
	raw   string // the column's name
	name  []byte // the JSON field name, quoted, with the colon
	conv  conv
	isKey bool
}

// relation is the latest Relation message of a table, ready to encode.
type relation struct {
	schema, name string
	full         string // schema.table
	topic        string
	keyPrefix    string // schema.table, escaped
	cols         []column
	key          []int  // indexes of the key columns; empty: one key per table
	schemaTable  []byte // "schema":"..","table":".." for the envelope
}

func (s *Source) newRelation(schema, name string, cols []column, keyNames []string) *relation {
	r := &relation{schema: schema, name: name, full: schema + "." + name, cols: cols}
	r.topic = s.cfg.topicPrefix + "." + schema + "." + name
	r.keyPrefix = escapeWord(schema) + "." + escapeWord(name)
	r.schemaTable = append(append(append([]byte(`"schema":`), appendString(nil, []byte(schema))...), `,"table":`...), appendString(nil, []byte(name))...)
	for _, k := range keyNames {
		for i := range cols {
			if cols[i].raw == k {
				r.key = append(r.key, i)
				cols[i].isKey = true
			}
		}
	}
	if len(r.key) != len(keyNames) {
		r.key = nil // a key column was dropped: fall back to the table's key
	}
	return r
}

func fieldName(name string) []byte { return append(appendString(nil, []byte(name)), ':') }

// keyOf returns the routing key of a row: schema.table.pk1.pk2..., each
// part escaped (escapeWord), or schema.table.~ and a hash when that is
// longer than maxKeyLen.
func (r *relation) keyOf(row []tupleCol) string {
	if len(r.key) == 0 {
		return r.keyPrefix
	}
	var b strings.Builder
	b.WriteString(r.keyPrefix)
	for _, i := range r.key {
		b.WriteByte('.')
		if i < len(row) {
			if row[i].kind == 't' || row[i].kind == 'b' {
				b.WriteString(escapeWord(string(row[i].data)))
			} else {
				b.WriteString("~null")
			}
		}
	}
	k := b.String()
	if len(k) <= maxKeyLen {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return r.keyPrefix + ".~" + hex.EncodeToString(sum[:16])
}

// escapeWord keeps a value one word of a routing key: it percent-encodes
// ".", "%", "*", "#", "~", spaces, control characters and bytes that are
// not UTF-8, so a key never splits into more words, never reads as a
// wildcard, and is valid UTF-8.
func escapeWord(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == '.' || c == '%' || c == '*' || c == '#' || c == '~' || c >= 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r == '\uFFFD' || r <= ' ' || r == '.' || r == '%' || r == '*' || r == '#' || r == '~' || r == 0x7f {
			var buf [4]byte
			n := len(string(r))
			copy(buf[:], string(r))
			for _, c := range buf[:n] {
				b.WriteByte('%')
				b.WriteByte("0123456789ABCDEF"[c>>4])
				b.WriteByte("0123456789ABCDEF"[c&15])
			}
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ChangeID is the ID of a streamed change: the transaction's commit LSN in
// 16 hex digits and the change's ordinal within the transaction (from 0),
// "00000000016B3748.3". It is the same each time the change is read from
// the slot, so a consumer can drop what it already saw after a restart; IDs
// of one transaction sort by ordinal, and transactions by commit LSN.
func ChangeID(commit pglogrepl.LSN, ordinal int) string {
	const digits = "0123456789ABCDEF"
	b := make([]byte, 16, 28)
	for i := 15; i >= 0; i-- {
		b[i] = digits[commit&15]
		commit >>= 4
	}
	b = append(b, '.')
	return string(strconv.AppendInt(b, int64(ordinal), 10))
}

// ParseID reads an ID made by ChangeID or SnapshotID: the commit LSN (for
// a snapshot row, the snapshot's LSN), the ordinal (0 for a snapshot row)
// and whether it is a snapshot row. A consumer (or a test counting lost
// and repeated changes) compares commit LSNs with Stats.ConfirmedLSN or the
// slot's confirmed_flush_lsn: a change is published again after a restart
// only if its commit LSN is at or after the position confirmed before it.
func ParseID(id string) (commit pglogrepl.LSN, ordinal int, snapshot bool, err error) {
	if len(id) < 18 || id[16] != '.' {
		return 0, 0, false, fmt.Errorf("cdc: %q is not a change ID", id)
	}
	v, err := strconv.ParseUint(id[:16], 16, 64)
	if err != nil {
		return 0, 0, false, fmt.Errorf("cdc: %q is not a change ID", id)
	}
	rest := id[17:]
	if strings.HasPrefix(rest, "r.") {
		return pglogrepl.LSN(v), 0, true, nil
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 {
		return 0, 0, false, fmt.Errorf("cdc: %q is not a change ID", id)
	}
	return pglogrepl.LSN(v), n, false, nil
}

// SnapshotID is the ID of a snapshot row: the snapshot's LSN and a hash of
// the row's key, "00000000016B3748.r.<hash>": the same row read at the same
// snapshot has the same ID (a resumed snapshot reads at a new LSN, and its
// rows have new IDs).
func SnapshotID(snapshot pglogrepl.LSN, key string) string {
	sum := sha256.Sum256([]byte(key))
	return ChangeID(snapshot, 0)[:16] + ".r." + hex.EncodeToString(sum[:12])
}

// change is what the envelope needs about one change.
type change struct {
	op       byte
	rel      *relation
	before   []tupleCol // nil: null
	after    []tupleCol
	commit   pglogrepl.LSN // commit LSN (snapshot: its LSN)
	lsn      pglogrepl.LSN // the change's own LSN
	xid      uint32
	hasXid   bool
	ts       time.Time // commit time (snapshot: when it was read)
	snapshot bool
}

// tupleCol is one column's value: kind is pglogrepl's tuple data type ('n'
// null, 'u' unchanged TOAST, 't' text).
type tupleCol struct {
	kind byte
	data []byte
}

// encode appends the Debezium envelope of c, as Kafka Connect's
// JsonConverter writes it with schemas disabled.
func (s *Source) encode(dst []byte, c *change, now time.Time) []byte {
	dst = append(dst, `{"before":`...)
	dst = appendRow(dst, c.rel, c.before)
	dst = append(dst, `,"after":`...)
	dst = appendRow(dst, c.rel, c.after)
	dst = append(dst, s.sourceHead...)
	dst = strconv.AppendInt(dst, c.ts.UnixMilli(), 10)
	dst = append(dst, `,"ts_us":`...)
	dst = strconv.AppendInt(dst, c.ts.UnixMicro(), 10)
	dst = append(dst, `,"ts_ns":`...)
	dst = strconv.AppendInt(dst, c.ts.UnixNano(), 10)
	if c.snapshot {
		dst = append(dst, `,"snapshot":"true","db":`...)
	} else {
		dst = append(dst, `,"snapshot":"false","db":`...)
	}
	dst = append(dst, s.dbJSON...)
	dst = append(dst, `,"sequence":"[\"`...)
	dst = strconv.AppendUint(dst, uint64(c.commit), 10)
	dst = append(dst, `\",\"`...)
	dst = strconv.AppendUint(dst, uint64(c.lsn), 10)
	dst = append(dst, `\"]",`...)
	dst = append(dst, c.rel.schemaTable...)
	dst = append(dst, `,"txId":`...)
	if c.hasXid {
		dst = strconv.AppendUint(dst, uint64(c.xid), 10)
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"lsn":`...)
	dst = strconv.AppendUint(dst, uint64(c.lsn), 10)
	dst = append(dst, `,"xmin":null},"transaction":null,"op":"`...)
	dst = append(dst, c.op)
	dst = append(dst, `","ts_ms":`...)
	dst = strconv.AppendInt(dst, now.UnixMilli(), 10)
	dst = append(dst, `,"ts_us":`...)
	dst = strconv.AppendInt(dst, now.UnixMicro(), 10)
	dst = append(dst, `,"ts_ns":`...)
	dst = strconv.AppendInt(dst, now.UnixNano(), 10)
	return append(dst, '}')
}

func appendRow(dst []byte, r *relation, row []tupleCol) []byte {
	if row == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '{')
	for i := range r.cols {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, r.cols[i].name...)
		if i >= len(row) {
			dst = append(dst, "null"...)
			continue
		}
		switch row[i].kind {
		case 't':
			dst = r.cols[i].conv(dst, row[i].data)
		case 'u':
			dst = append(dst, `"`+Unavailable+`"`...)
		default:
			dst = append(dst, "null"...)
		}
	}
	return append(dst, '}')
}

// message builds the broker message of c; ordinal numbers it within its
// transaction.
func (s *Source) message(c *change, key string, ordinal int, now time.Time) broker.Message {
	m := broker.Message{
		Key:     key,
		Payload: s.encode(make([]byte, 0, 512), c, now),
		Time:    c.ts,
		Header:  make(map[string]string, 5),
	}
	if c.snapshot {
		m.ID = SnapshotID(c.commit, key)
	} else {
		m.ID = ChangeID(c.commit, ordinal)
		m.Header[HeaderTxID] = strconv.FormatUint(uint64(c.xid), 10)
	}
	m.Header[HeaderLSN] = c.commit.String()
	m.Header[HeaderOp] = string(c.op)
	m.Header[HeaderTable] = c.rel.full
	return m
}
