package kafka

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"strconv"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
)

// Headers this adapter reserves on Kafka records. A message's Header entries
// with these names are overwritten on publish and removed on delivery.
const (
	// HeaderMessageID carries Message.ID.
	HeaderMessageID = "x-message-id"
	// HeaderPriority carries a non-zero Message.Priority (Kafka itself has no
	// priorities: it is only carried through).
	HeaderPriority = "x-priority"
	// HeaderPayloadDropped is set on a dead letter whose payload was
	// dropped because the dead-letter topic refused it as too large; it
	// says how large it was and why.
	HeaderPayloadDropped = "x-payload-dropped"
)

// toRecord maps m to a new record; see fillRecord.
func toRecord(topic string, m *broker.Message) *kgo.Record {
	r := new(kgo.Record)
	fillRecord(r, nil, topic, m)
	return r
}

// headerCount is how many record headers m needs.
func headerCount(m *broker.Message) int {
	n := len(m.Header) + 1
	if m.Priority != 0 {
		n++
	}
	return n
}

// fillRecord maps m to r: Key to the record key (so Kafka's default
// partitioner, murmur2 like Java's, keeps a key on one partition), an empty
// Key to a nil key (spread over partitions), Header to record headers (an
// empty value stays an empty value, not a null one), Time to the record
// timestamp, and a nil Payload to a nil value (a tombstone on compacted
// topics). hdrs, when it has room for headerCount(m) headers, holds
// the headers. Strings are shared with the record, not copied: franz-go
// never writes to record bytes, and a published message must not change until
// it is acknowledged.
func fillRecord(r *kgo.Record, hdrs []kgo.RecordHeader, topic string, m *broker.Message) {
	r.Topic, r.Value, r.Timestamp = topic, m.Payload, m.Time
	if m.Key != "" {
		r.Key = bytesOf(m.Key)
	}
	if cap(hdrs) < headerCount(m) {
		hdrs = make([]kgo.RecordHeader, 0, headerCount(m))
	}
	hdrs = append(hdrs[:0], kgo.RecordHeader{Key: HeaderMessageID, Value: headerValue(m.ID)})
	if m.Priority != 0 {
		hdrs = append(hdrs, kgo.RecordHeader{Key: HeaderPriority, Value: []byte(strconv.Itoa(int(m.Priority)))})
	}
	for k, v := range m.Header {
		if k == HeaderMessageID || k == HeaderPriority {
			continue
		}
		hdrs = append(hdrs, kgo.RecordHeader{Key: k, Value: headerValue(v)})
	}
	r.Headers = hdrs
}

// bytesOf returns the bytes of s without copying; they must not be written.
// An empty s gives nil, which franz-go sends as null: right for a key (none),
// wrong for a header value (see headerValue).
func bytesOf(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// noBytes is an empty, non-nil header value.
var noBytes = []byte{}

// headerValue is bytesOf for a header value: an empty s gives an empty,
// non-nil slice, which franz-go sends as an empty value. A nil one would
// travel as null (kcat prints NULL, Java's Header.value() returns null).
func headerValue(s string) []byte {
	if s == "" {
		return noBytes
	}
	return bytesOf(s)
}

// idLen is the length of a generated ID: 16 random bytes in hex, the format
// of broker.NewID. The bytes come from math/rand/v2's per-thread ChaCha8
// generator, seeded by the system: unique like crypto/rand's, several times
// cheaper, and IDs need not be unpredictable.
const idLen = 32

// stringOf returns b as a string without copying; b must not change.
func stringOf(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// prepare fills an empty ID and a zero Time, as broker.Prepare does. A
// generated ID is written to buf when it has idLen bytes (so callers can
// allocate the IDs of many messages at once), otherwise to a new buffer.
func prepare(m *broker.Message, now time.Time, buf []byte) {
	if m.ID == "" {
		var raw [16]byte
		binary.LittleEndian.PutUint64(raw[:8], rand.Uint64())
		binary.LittleEndian.PutUint64(raw[8:], rand.Uint64())
		if len(buf) < idLen {
			buf = make([]byte, idLen)
		}
		hex.Encode(buf, raw[:])
		m.ID = unsafe.String(&buf[0], idLen)
	}
	if m.Time.IsZero() {
		m.Time = now
	}
}

// messageID returns the ID header of a record built by fillRecord.
func messageID(r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == HeaderMessageID {
			return string(h.Value)
		}
	}
	return ""
}

// recordSize is the approximate size of r for error messages.
func recordSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// fromRecord maps a fetched record to a Message with Raw set to r. A record
// without HeaderMessageID (from another producer) gets the ID
// "topic/partition/offset". Key, ID and header values share the record's
// bytes instead of copying them (franz-go never reuses a record's memory
// unless the user recycles records); handlers must not write to Raw's bytes.
func fromRecord(r *kgo.Record) broker.Message {
	m := broker.Message{
		Key:     stringOf(r.Key),
		Payload: r.Value,
		Time:    r.Timestamp,
		Topic:   r.Topic,
		Raw:     r,
	}
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderMessageID:
			m.ID = stringOf(h.Value)
		case HeaderPriority:
			if p, err := strconv.Atoi(string(h.Value)); err == nil && p > 0 && p < 256 {
				m.Priority = uint8(p)
			}
		default:
			if m.Header == nil {
				m.Header = make(map[string]string, len(r.Headers))
			}
			m.Header[h.Key] = stringOf(h.Value)
		}
	}
	if m.ID == "" {
		m.ID = r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10)
	}
	return m
}
