package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
)

// Errors of this package; test them with errors.Is. The shared values of
// package broker (broker.ErrClosed, broker.ErrInvalidMessage,
// broker.ErrNotConfirmed, broker.ErrInvalidSubscription) are used where they fit.
var (
	// ErrUnknownTopic is returned for a topic that does not exist when
	// CreateTopics is not set.
	ErrUnknownTopic = errors.New("kafka: unknown topic")
	// ErrInvalidOffset is returned for a start position that cannot be used:
	// a negative or out-of-range offset, a partition the topic does not have,
	// a time before 1970.
	ErrInvalidOffset = errors.New("kafka: invalid offset")
	// ErrUnreachable is returned when no seed broker answers before the
	// context ends; the error names the brokers and the last dial error.
	ErrUnreachable = errors.New("kafka: brokers unreachable")
	// ErrTopicMismatch is returned by Admin.EnsureTopic when the topic exists
	// with settings other than the requested ones.
	ErrTopicMismatch = errors.New("kafka: topic exists with other settings")
	// ErrInvalidOption is returned by NewPublisher, NewSubscriber and
	// NewAdmin for an option with an invalid argument (a nil logger, a
	// negative duration...); the error names the option.
	ErrInvalidOption = errors.New("kafka: invalid option")
	// ErrInvalidTopic is returned by Admin.EnsureTopic for a topic name Kafka
	// does not allow: empty, "." or "..", over 249 characters, or with
	// characters other than ASCII letters, digits, '.', '_' and '-'.
	// Publish fails with broker.ErrInvalidMessage for such a name instead.
	ErrInvalidTopic = errors.New("kafka: invalid topic name")
)

// dialHook remembers the last failed dial so that a timeout can name its cause.
type dialHook struct {
	brokers []string
	mu      sync.Mutex
	lastErr error
	ok      bool
}

var _ kgo.HookBrokerConnect = (*dialHook)(nil)

func (h *dialHook) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.lastErr = err
	} else {
		h.ok = true
	}
}

// wrap turns an error of a request issued with ctx into one of this package's
// errors: a context error while no broker could ever be dialled becomes
// ErrUnreachable naming the brokers and the last dial error.
func (h *dialHook) wrap(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	h.mu.Lock()
	last, ok := h.lastErr, h.ok
	h.mu.Unlock()
	if (ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || isDialError(err)) && !ok {
		cause := err
		if last != nil && !strings.Contains(err.Error(), last.Error()) {
			cause = fmt.Errorf("%w (last dial error: %v)", err, last)
		}
		return fmt.Errorf("%w: %s: no broker of %v answered: %w", ErrUnreachable, what, h.brokers, cause)
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return fmt.Errorf("%w: %s: %w", ErrUnknownTopic, what, err)
	}
	return fmt.Errorf("kafka: %s: %w", what, err)
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// publishError classifies a failed produce of message id to topic.
func (h *dialHook) publishError(ctx context.Context, topic, id string, size int, err error) error {
	switch {
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return fmt.Errorf("%w: message %s to %q is %d bytes, over the producer's or topic's max.message.bytes: %w", broker.ErrInvalidMessage, id, topic, size, err)
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return fmt.Errorf("%w: %q (publish message %s; create it, or use CreateTopics): %w", ErrUnknownTopic, topic, id, err)
	case errors.Is(err, kgo.ErrClientClosed):
		return fmt.Errorf("%w: message %s to %q: %w", broker.ErrClosed, id, topic, err)
	}
	if w := h.wrap(ctx, "publish to "+topic, err); errors.Is(w, ErrUnreachable) {
		return fmt.Errorf("%w: %w", broker.ErrNotConfirmed, w)
	}
	return fmt.Errorf("%w: message %s to %q: %w", broker.ErrNotConfirmed, id, topic, err)
}
