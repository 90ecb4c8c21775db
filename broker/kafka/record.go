package kafka

import (
	"strconv"

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
)

// toRecord maps m to a record: Key to the record key (so Kafka's default
// partitioner, murmur2 like Java's, keeps a key on one partition), an empty
// Key to a nil key (spread over partitions), Header to record headers, Time to
// the record timestamp, and a nil Payload to a nil value (a tombstone on
// compacted topics).
func toRecord(topic string, m *broker.Message) *kgo.Record {
	r := &kgo.Record{Topic: topic, Value: m.Payload, Timestamp: m.Time}
	if m.Key != "" {
		r.Key = []byte(m.Key)
	}
	n := len(m.Header) + 1
	if m.Priority != 0 {
		n++
	}
	r.Headers = make([]kgo.RecordHeader, 0, n)
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderMessageID, Value: []byte(m.ID)})
	if m.Priority != 0 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderPriority, Value: []byte(strconv.Itoa(int(m.Priority)))})
	}
	for k, v := range m.Header {
		if k == HeaderMessageID || k == HeaderPriority {
			continue
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	return r
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
// "topic/partition/offset".
func fromRecord(r *kgo.Record) broker.Message {
	m := broker.Message{
		Key:     string(r.Key),
		Payload: r.Value,
		Time:    r.Timestamp,
		Topic:   r.Topic,
		Raw:     r,
	}
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderMessageID:
			m.ID = string(h.Value)
		case HeaderPriority:
			if p, err := strconv.Atoi(string(h.Value)); err == nil && p > 0 && p < 256 {
				m.Priority = uint8(p)
			}
		default:
			if m.Header == nil {
				m.Header = make(map[string]string, len(r.Headers))
			}
			m.Header[h.Key] = string(h.Value)
		}
	}
	if m.ID == "" {
		m.ID = r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10)
	}
	return m
}
