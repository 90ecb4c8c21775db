package kafka

import (
	"fmt"
	"unicode/utf8"

	"github.com/go-integration/patterns/broker"
)

// maxTopicLen is the longest topic name Kafka accepts (249: a partition's
// directory, <topic>-<partition>, must fit in a 255-byte file name).
const maxTopicLen = 249

// validateTopicName reports a topic name Kafka refuses: empty, "." or "..",
// longer than 249 characters, or with a character other than an ASCII
// letter, digit, '.', '_' or '-'. Errors wrap sentinel
// (broker.ErrInvalidMessage for publishing, broker.ErrInvalidSubscription
// for subscribing, ErrInvalidTopic for Admin) and say what is wrong. It
// runs before anything is sent, so a bad name fails at once instead of after
// metadata requests that cannot succeed.
func validateTopicName(topic string, sentinel error) error {
	if err := checkTopicName("topic", topic); err != nil {
		return fmt.Errorf("%w: %w", sentinel, err)
	}
	return nil
}

// validateSubscriptionTopics checks the topic a subscription reads and the
// one it dead-letters to (s.DeadLetterDestination(): the default adds ".dlq",
// which can take a valid topic over the limit). Errors wrap
// broker.ErrInvalidSubscription.
func validateSubscriptionTopics(s broker.Subscription) error {
	err := checkTopicName("topic", s.Topic)
	if dl := s.DeadLetterDestination(); err == nil && dl != "" {
		err = checkTopicName("dead-letter topic", dl)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", broker.ErrInvalidSubscription, err)
	}
	return nil
}

// checkTopicName is validateTopicName without a sentinel; what names the
// topic's role in the error.
func checkTopicName(what, topic string) error {
	switch topic {
	case "":
		return fmt.Errorf("empty %s name", what)
	case ".", "..":
		return fmt.Errorf("%s name %q is not allowed by Kafka", what, topic)
	}
	for i := 0; i < len(topic); i++ {
		if !topicChar(topic[i]) {
			_, n := utf8.DecodeRuneInString(topic[i:])
			return fmt.Errorf("%s name %.40q has %q at byte %d: Kafka allows only ASCII letters, digits, '.', '_' and '-'", what, topic, topic[i:i+n], i)
		}
	}
	if len(topic) > maxTopicLen {
		return fmt.Errorf("%s name %.40q… is %d characters, Kafka allows %d", what, topic, len(topic), maxTopicLen)
	}
	return nil
}

func topicChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}
