package rabbitmq

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
)

// Headers this adapter adds for its own bookkeeping; they never reach Message.Header.
const (
	headerTime     = "x-patterns-time"     // Message.Time in Unix nanoseconds (the AMQP timestamp has seconds)
	headerAttempts = "x-patterns-attempts" // failed attempts before this copy was republished
	headerKey      = "x-patterns-key"      // the message's key when republished straight to a queue
)

// Message.Header keys that travel as AMQP properties instead of headers.
const (
	HeaderContentType     = "content-type"     // AMQP content-type property
	HeaderContentEncoding = "content-encoding" // AMQP content-encoding property
	HeaderCorrelationID   = "correlation-id"   // AMQP correlation-id property
	HeaderReplyTo         = "reply-to"         // AMQP reply-to property
)

// route maps portable topics and keys to exchanges and routing keys: one
// exchange per topic by default, or one shared exchange with the topic as the
// first words of the routing key.
type route struct{ shared string }

func (r route) exchange(topic string) string {
	if r.shared != "" {
		return r.shared
	}
	return topic
}

// key returns the routing key (or binding pattern) for key on topic.
func (r route) key(topic, key string) string {
	if r.shared == "" {
		return key
	}
	if key == "" {
		return topic
	}
	return topic + "." + key
}

// fromKey turns a routing key back into the message's key.
func (r route) fromKey(topic, rk string) string {
	if r.shared == "" {
		return rk
	}
	if rk == topic {
		return ""
	}
	return strings.TrimPrefix(rk, topic+".")
}

func shortString(what, s string) error {
	if len(s) > 255 {
		return fmt.Errorf("%w: %s is %d bytes, AMQP allows 255", broker.ErrInvalidMessage, what, len(s))
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %q is not valid UTF-8", broker.ErrInvalidMessage, what, s)
	}
	return nil
}

// toPublishing maps m to AMQP properties. extra headers (may be nil) are
// copied first, so m's headers win.
func toPublishing(m *broker.Message, persistent bool, maxSize int, extra amqp.Table) (amqp.Publishing, error) {
	p := amqp.Publishing{
		MessageId: m.ID,
		Timestamp: m.Time,
		Priority:  m.Priority,
		Body:      m.Payload,
	}
	if persistent {
		p.DeliveryMode = amqp.Persistent
	}
	if maxSize > 0 && len(m.Payload) > maxSize {
		return p, fmt.Errorf("%w: message %s payload is %d bytes, above the %d-byte limit (server max_message_size)", broker.ErrInvalidMessage, m.ID, len(m.Payload), maxSize)
	}
	if err := shortString("message ID", m.ID); err != nil {
		return p, err
	}
	if err := shortString("routing key", m.Key); err != nil {
		return p, err
	}
	h := make(amqp.Table, len(m.Header)+len(extra)+1)
	for k, v := range extra {
		h[k] = v
	}
	for k, v := range m.Header {
		if err := shortString("header name", k); err != nil {
			return p, err
		}
		if !utf8.ValidString(v) {
			return p, fmt.Errorf("%w: header %q: value is not valid UTF-8 (AMQP header strings must be; encode binary values, for example as base64)", broker.ErrInvalidMessage, k)
		}
		switch k {
		case HeaderContentType:
			p.ContentType = v
		case HeaderContentEncoding:
			p.ContentEncoding = v
		case HeaderCorrelationID:
			p.CorrelationId = v
		case HeaderReplyTo:
			p.ReplyTo = v
		default:
			h[k] = v
			continue
		}
		if err := shortString("header "+k, v); err != nil {
			return p, err
		}
	}
	h[headerTime] = m.Time.UnixNano()
	p.Headers = h
	return p, nil
}

// fromDelivery maps d back to a Message. Attempt is the number of failed
// attempts recorded with the message (by a republished copy of an earlier
// version of this adapter); the engine adds its own. The redelivered flag
// and quorum queues' x-delivery-count are not attempts: RabbitMQ sets them
// for messages a consumer received but never handled (prefetched, then
// returned by a graceful Close), so counting them would dead-letter after
// fewer real failures.
func fromDelivery(d *amqp.Delivery, topic string, r route) broker.Message {
	m := broker.Message{
		ID:       d.MessageId,
		Key:      r.fromKey(topic, d.RoutingKey),
		Payload:  d.Body,
		Time:     d.Timestamp,
		Priority: d.Priority,
		Topic:    topic,
		Raw:      d,
	}
	var h map[string]string
	set := func(k, v string) {
		if h == nil {
			h = make(map[string]string, len(d.Headers))
		}
		h[k] = v
	}
	for k, v := range d.Headers {
		switch k {
		case headerTime:
			if n, ok := toInt64(v); ok {
				m.Time = time.Unix(0, n)
			}
			continue
		case headerAttempts:
			if n, ok := toInt64(v); ok {
				m.Attempt += int(n)
			}
			continue
		case headerKey:
			if s, ok := v.(string); ok {
				m.Key = s
			}
			continue
		case "x-delivery-count":
			continue
		}
		switch v := v.(type) {
		case string:
			set(k, v)
		case []byte:
			set(k, string(v))
		case bool:
			set(k, strconv.FormatBool(v))
		case int8, int16, int32, int64, int, uint8, uint16, uint32, uint64, float32, float64:
			set(k, fmt.Sprint(v))
		case time.Time:
			set(k, v.UTC().Format(time.RFC3339Nano))
		}
		// tables and arrays (x-death) stay in Raw.
	}
	if d.ContentType != "" {
		set(HeaderContentType, d.ContentType)
	}
	if d.ContentEncoding != "" {
		set(HeaderContentEncoding, d.ContentEncoding)
	}
	if d.CorrelationId != "" {
		set(HeaderCorrelationID, d.CorrelationId)
	}
	if d.ReplyTo != "" {
		set(HeaderReplyTo, d.ReplyTo)
	}
	m.Header = h
	return m
}

func toInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case int16:
		return int64(n), true
	case int8:
		return int64(n), true
	case int:
		return int64(n), true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	}
	return 0, false
}
