package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

func testConfig(t testing.TB, opts ...SubscriberOption) *config {
	t.Helper()
	cfg, err := newSubscriberConfig(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &cfg
}

func TestValidateTopic(t *testing.T) {
	long := strings.Repeat("a", 300)
	for _, c := range []struct {
		name  string
		opts  []SubscriberOption
		topic string
		want  string // substring of the error, "" for none
	}{
		{"plain", nil, "orders", ""},
		{"255 bytes", nil, strings.Repeat("a", 255), ""},
		{"empty", nil, "", "empty topic"},
		{"too long", nil, long, `rabbitmq: exchange name "` + strings.Repeat("a", 40) + `"… is 300 bytes, AMQP allows 255`},
		{"not UTF-8", nil, "orders\xff", `exchange name "orders\xff" is not valid UTF-8`},
		{"reserved", nil, "amq.x", `exchange name "amq.x" starts with "amq."`},
		{"shared: amq. topic is only a routing key", []SubscriberOption{WithExchange("events")}, "amq.x", ""},
		{"shared: long routing key", []SubscriberOption{WithExchange("events")}, long, "routing key"},
		{"shared: bad exchange", []SubscriberOption{WithExchange("amq.topic")}, "orders", `shared exchange name (WithExchange) "amq.topic" starts with "amq."`},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t, c.opts...)
			for _, sentinel := range []error{broker.ErrInvalidMessage, broker.ErrInvalidSubscription} {
				err := validateTopic(cfg, c.topic, sentinel)
				if c.want == "" {
					if err != nil {
						t.Errorf("validateTopic(%.20q) = %v, want nil", c.topic, err)
					}
					continue
				}
				if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), c.want) {
					t.Errorf("validateTopic(%.20q) = %v, want %v containing %q", c.topic, err, sentinel, c.want)
				}
			}
		})
	}
}

func TestValidateSubscriptionNames(t *testing.T) {
	a := func(n int) string { return strings.Repeat("a", n) }
	for _, c := range []struct {
		name string
		opts []SubscriberOption
		sub  broker.Subscription
		want string
	}{
		{"plain", nil, broker.Subscription{Topic: "orders", Group: "billing", Keys: []string{"eu.*"}, MaxAttempts: 3}, ""},
		{"private", nil, broker.Subscription{Topic: "orders", MaxAttempts: 3}, ""},
		{"no dead-letter queue", []SubscriberOption{WithoutDeadLetterQueue()}, broker.Subscription{Topic: "orders", Group: "g", MaxAttempts: 3}, ""},
		{"bad topic", nil, broker.Subscription{Topic: "amq.orders", Group: "g"}, `exchange name "amq.orders" starts with "amq."`},
		{"queue too long", nil, broker.Subscription{Topic: a(250), Group: "billing"},
			`broker: invalid subscription: rabbitmq: queue name "` + a(40) + `"… is 258 bytes, AMQP allows 255`},
		{"queue not UTF-8", nil, broker.Subscription{Topic: "orders", Group: "g\xff"}, `queue name "orders:g\xff" is not valid UTF-8`},
		{"queue reserved", []SubscriberOption{WithQueueName(func(topic, group string) string { return "amq." + group })},
			broker.Subscription{Topic: "orders", Group: "g"}, `queue name "amq.g" starts with "amq."`},
		{"queue name empty", []SubscriberOption{WithQueueName(func(string, string) string { return "" })},
			broker.Subscription{Topic: "orders", Group: "g"}, "returned an empty name"},
		{"queue fits", nil, broker.Subscription{Topic: a(250), Group: "g"}, ""},
		{"binding key not UTF-8", nil, broker.Subscription{Topic: "orders", Group: "g", Keys: []string{"eu.\xff"}}, `binding key "eu.\xff" is not valid UTF-8`},
		{"binding key too long", nil, broker.Subscription{Topic: "orders", Group: "g", Keys: []string{a(256)}}, "binding key"},
		{"shared: binding key too long", []SubscriberOption{WithExchange("events")}, broker.Subscription{Topic: a(200), Group: "g", Keys: []string{a(60)}},
			"binding key"},
		{"dead-letter exchange too long", nil, broker.Subscription{Topic: a(252), MaxAttempts: 3}, "dead-letter exchange name"},
		{"dead-letter exchange reserved", nil, broker.Subscription{Topic: "orders", Group: "g", DeadLetterTopic: "amq.dead"}, `dead-letter exchange name "amq.dead"`},
		{"dead-letter queue too long", nil, broker.Subscription{Topic: "o", Group: a(251), DeadLetterTopic: "dead"}, `dead-letter queue name "dead:`},
		{"dead-letter queue: none declared", []SubscriberOption{WithoutDeadLetterQueue()}, broker.Subscription{Topic: "o", Group: a(251), DeadLetterTopic: "dead"}, ""},
		{"private dead-letter queue reserved", []SubscriberOption{WithQueueName(func(topic, group string) string {
			if topic == "dead" {
				return "amq.dead"
			}
			return topic + ":" + group
		})}, broker.Subscription{Topic: "orders", DeadLetterTopic: "dead"}, `dead-letter queue name "amq.dead"`},
		{"shared: dead-letter binding too long", []SubscriberOption{WithExchange("events")}, broker.Subscription{Topic: "o", DeadLetterTopic: a(254), MaxAttempts: 1},
			"dead-letter"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := validateSubscriptionNames(testConfig(t, c.opts...), c.sub)
			if c.want == "" {
				if err != nil {
					t.Errorf("= %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, broker.ErrInvalidSubscription) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("= %v, want ErrInvalidSubscription containing %q", err, c.want)
			}
		})
	}
}

// validName is the rule for one name, written the obvious way.
func validName(name string, declared bool) bool {
	return len(name) <= 255 && utf8.ValidString(name) && !(declared && strings.HasPrefix(name, "amq."))
}

// refSubscriptionNames is the reference definition: it derives every name
// from the documented naming (DefaultQueueName, "<topic>.dlq",
// "<topic>.<key>" with a shared exchange) without planTopology.
func refSubscriptionNames(shared string, dlQueue bool, s broker.Subscription) bool {
	if s.Topic == "" {
		return false
	}
	exchange := func(topic string) string {
		if shared != "" {
			return shared
		}
		return topic
	}
	key := func(topic, k string) string {
		switch {
		case shared == "":
			return k
		case k == "":
			return topic
		}
		return topic + "." + k
	}
	ok := validName(exchange(s.Topic), true) && validName(key(s.Topic, ""), false)
	if s.Group != "" {
		q := s.Topic + ":" + s.Group
		ok = ok && validName(q, true)
	}
	keys := s.Keys
	if len(keys) == 0 {
		keys = []string{"#"}
	}
	for _, k := range keys {
		ok = ok && validName(key(s.Topic, k), false)
	}
	dl := s.DeadLetterTopic
	if dl == "" && s.MaxAttempts > 0 {
		dl = s.Topic + ".dlq"
	}
	if dl != "" {
		g := s.Group
		if g == "" {
			g = "dlq"
		}
		ok = ok && validName(exchange(dl), true) && validName(key(dl, ""), false) && validName(key(dl, "#"), false)
		ok = ok && (!dlQueue || validName(dl+":"+g, true))
	}
	return ok
}

// FuzzValidateNames checks that validateTopic and validateSubscriptionNames
// never panic, agree with the reference definitions and wrap the right
// sentinel.
func FuzzValidateNames(f *testing.F) {
	f.Add("orders", "billing", "eu.*", "", "", false, true, uint8(0))
	f.Add("amq.x", "g", "#", "dead", "", true, true, uint8(3))
	f.Add(strings.Repeat("a", 250), "g", "", "", "events", false, false, uint8(1))
	f.Add("o", "\xff", "k", "amq.dead", "amq.topic", true, true, uint8(0))
	f.Add("o", "", "k", strings.Repeat("d", 252), "", false, true, uint8(0))
	f.Add("o", strings.Repeat("g", 251), "", "dead", "", false, true, uint8(0))
	f.Fuzz(func(t *testing.T, topic, group, key, dlTopic, shared string, withKey, dlQueue bool, attempts uint8) {
		opts := []SubscriberOption{WithExchange(shared)}
		if !dlQueue {
			opts = append(opts, WithoutDeadLetterQueue())
		}
		cfg := testConfig(t, opts...)

		err := validateTopic(cfg, topic, broker.ErrInvalidMessage)
		want := topic != "" && validName(map[bool]string{true: shared, false: topic}[shared != ""], true) &&
			(shared == "" || validName(topic, false))
		if (err == nil) != want {
			t.Fatalf("validateTopic(%q) with shared exchange %q = %v, reference says valid=%v", topic, shared, err, want)
		}
		if err != nil && !errors.Is(err, broker.ErrInvalidMessage) {
			t.Fatalf("validateTopic error %v does not wrap ErrInvalidMessage", err)
		}

		s := broker.Subscription{Topic: topic, Group: group, DeadLetterTopic: dlTopic, MaxAttempts: int(attempts)}
		if withKey {
			s.Keys = []string{key}
		}
		err = validateSubscriptionNames(cfg, s)
		want = refSubscriptionNames(shared, dlQueue, s)
		if (err == nil) != want {
			t.Fatalf("validateSubscriptionNames(%+v) shared=%q dlQueue=%v = %v, reference says valid=%v", s, shared, dlQueue, err, want)
		}
		if err != nil && !errors.Is(err, broker.ErrInvalidSubscription) {
			t.Fatalf("validateSubscriptionNames error %v does not wrap ErrInvalidSubscription", err)
		}
	})
}

// A declare the server refuses by closing the connection (FRAME_ERROR on a
// name that is not UTF-8) fails the Publish at once: it is not republished
// on a new connection again and again. validateTopic stops such names
// before send, so this calls send directly.
func TestSendFailsAtOnceWhenTheServerRefusesTheDeclare(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := NewPublisher(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pubs := []amqp.Publishing{{MessageId: "m1", Body: []byte("x")}}
	start := time.Now()
	err = p.send(ctx, "bad", "bad\xff", []string{""}, pubs)
	took := time.Since(start)
	if !errors.Is(err, broker.ErrInvalidMessage) {
		t.Errorf("send to a non-UTF-8 exchange = %v, want ErrInvalidMessage", err)
	}
	if took > time.Second {
		t.Errorf("send took %v, want under 1s", took)
	}
	t.Logf("%v after %v", err, took.Round(time.Millisecond))
	// The server closed the connection once: one reconnect, not a storm.
	if err := p.Publish(ctx, "good", broker.Message{Payload: []byte("x")}); err != nil {
		t.Errorf("Publish after the refusal: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if st := p.Stats(); st.Reconnects > 1 || st.Connects != 1 {
		t.Errorf("stats after one refused declare: %+v, want at most 1 reconnect", st)
	}
}

func TestDeclareRefused(t *testing.T) {
	for _, c := range []struct {
		err  error
		want error // nil: retry
	}{
		{&amqp.Error{Code: amqp.FrameError, Reason: "write: broken pipe"}, nil}, // amqp091's own, a lost connection
		{&amqp.Error{Code: amqp.ConnectionForced, Server: true, Reason: "CONNECTION_FORCED - shutdown"}, nil},
		{&amqp.Error{Code: amqp.InternalError, Server: true}, nil},
		{&amqp.Error{Code: amqp.FrameError, Server: true, Reason: "FRAME_ERROR - Malformed UTF-8 in shortstr"}, broker.ErrInvalidMessage},
		{&amqp.Error{Code: amqp.SyntaxError, Server: true}, broker.ErrInvalidMessage},
		{&amqp.Error{Code: amqp.AccessRefused, Server: true, Reason: "ACCESS_REFUSED - exchange name 'x' contains reserved prefix 'amq.*'"}, broker.ErrInvalidMessage},
		{&amqp.Error{Code: amqp.AccessRefused, Server: true, Reason: "ACCESS_REFUSED - access to exchange 'x' in vhost 'v' refused for user 'u'"}, broker.ErrNotConfirmed},
		{&amqp.Error{Code: amqp.AccessRefused, Server: true, Reason: "ACCESS_REFUSED - access to exchange 'other' in vhost 'v' refused for user 'u'"}, nil}, // another publish on the channel
		{&amqp.Error{Code: amqp.PreconditionFailed, Server: true, Reason: "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost 'v'"}, broker.ErrNotConfirmed},
		{&amqp.Error{Code: amqp.CommandInvalid, Server: true}, broker.ErrNotConfirmed},
		{&amqp.Error{Code: amqp.NotAllowed, Server: true}, broker.ErrNotConfirmed},
		{context.DeadlineExceeded, nil},
	} {
		err := declareRefused("t", "x", fmt.Errorf("rabbitmq: declare exchange %q: %w", "x", c.err))
		switch {
		case c.want == nil && err != nil:
			t.Errorf("declareRefused(%v) = %v, want nil (retry)", c.err, err)
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("declareRefused(%v) = %v, want %v", c.err, err, c.want)
		}
	}
}
