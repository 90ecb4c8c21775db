// Package amqpname checks exchange names, queue names and routing keys
// against what AMQP 0-9-1 and RabbitMQ accept, so that callers can refuse a
// bad name before sending it. A bad name does not fail gently on the wire:
// amqp091-go closes the whole connection when a short string does not fit
// in 255 bytes, RabbitMQ closes it (FRAME_ERROR) on invalid UTF-8, and
// declaring a name starting with "amq." closes the channel (ACCESS_REFUSED).
package amqpname

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen is the longest name AMQP can carry: names and routing keys are
// short strings, at most 255 bytes.
const MaxLen = 255

// ReservedPrefix starts the names RabbitMQ keeps for itself: declaring an
// exchange or a queue with it is refused.
const ReservedPrefix = "amq."

// Check reports what is wrong with name, or nil: longer than MaxLen bytes,
// not valid UTF-8, or (when declared, for exchanges and queues the caller
// declares) starting with ReservedPrefix. what names it in the error ("queue
// name", "routing key"). The error wraps no sentinel: callers wrap it with
// their own.
func Check(what, name string, declared bool) error {
	if len(name) > MaxLen {
		return fmt.Errorf("%s %s is %d bytes, AMQP allows %d", what, Quote(name), len(name), MaxLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%s %s is not valid UTF-8 (RabbitMQ closes the connection on it)", what, Quote(name))
	}
	if declared && strings.HasPrefix(name, ReservedPrefix) {
		return fmt.Errorf("%s %s starts with %q, which RabbitMQ reserves (declaring it is refused with ACCESS_REFUSED)", what, Quote(name), ReservedPrefix)
	}
	return nil
}

// quoteLen is how many runes of a name Quote shows.
const quoteLen = 40

// Quote returns name quoted for an error message, cut after 40 runes
// (invalid bytes count as one each) with "…" appended when it is longer.
func Quote(name string) string {
	if utf8.RuneCountInString(name) <= quoteLen {
		return fmt.Sprintf("%q", name)
	}
	return fmt.Sprintf("%.*q…", quoteLen, name)
}
