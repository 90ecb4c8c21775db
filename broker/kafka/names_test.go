package kafka

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
)

func TestValidateTopicName(t *testing.T) {
	for _, c := range []struct {
		topic string
		want  string // substring of the error, "" for none
	}{
		{"orders", ""},
		{"Orders.v2_eu-west", ""},
		{"...", ""},
		{"a.", ""},
		{strings.Repeat("a", 249), ""},
		{"", "empty topic name"},
		{".", `topic name "." is not allowed`},
		{"..", `topic name ".." is not allowed`},
		{"bad topic!", `topic name "bad topic!" has " " at byte 3`},
		{"a/b", `has "/" at byte 1`},
		{"café", `has "é" at byte 3`},
		{"a\xffb", `has "\xff" at byte 1`},
		{strings.Repeat("a", 250), `topic name "` + strings.Repeat("a", 40) + `"… is 250 characters, Kafka allows 249`},
	} {
		err := validateTopicName(c.topic, broker.ErrInvalidMessage)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("validateTopicName(%.20q) = %v, want nil", c.topic, err)
		case c.want != "" && (!errors.Is(err, broker.ErrInvalidMessage) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("validateTopicName(%.20q) = %v, want ErrInvalidMessage containing %q", c.topic, err, c.want)
		}
	}
}

func TestValidateSubscriptionTopics(t *testing.T) {
	long := strings.Repeat("a", 246) // valid, but with ".dlq" it is 250
	for _, c := range []struct {
		sub  broker.Subscription
		want string
	}{
		{broker.Subscription{Topic: "orders", MaxAttempts: 3}, ""},
		{broker.Subscription{Topic: long}, ""},
		{broker.Subscription{Topic: "bad topic"}, "topic name"},
		{broker.Subscription{Topic: long, MaxAttempts: 3}, "dead-letter topic name"},
		{broker.Subscription{Topic: "orders", DeadLetterTopic: "dead letters"}, `dead-letter topic name "dead letters" has " "`},
	} {
		err := validateSubscriptionTopics(c.sub)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("validateSubscriptionTopics(%.30v) = %v, want nil", c.sub, err)
		case c.want != "" && (!errors.Is(err, broker.ErrInvalidSubscription) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("validateSubscriptionTopics(%.30v) = %v, want ErrInvalidSubscription containing %q", c.sub, err, c.want)
		}
	}
}

var legalTopic = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// FuzzValidateTopicName checks validateTopicName never panics and agrees
// with Kafka's rule written as a regular expression.
func FuzzValidateTopicName(f *testing.F) {
	for _, s := range []string{"", ".", "..", "...", "orders", "bad topic!", strings.Repeat("a", 249), strings.Repeat("a", 250), "é", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		err := validateTopicName(topic, broker.ErrInvalidMessage)
		want := legalTopic.MatchString(topic) && topic != "." && topic != ".."
		if (err == nil) != want {
			t.Fatalf("validateTopicName(%q) = %v, reference says valid=%v", topic, err, want)
		}
		if err != nil && !errors.Is(err, broker.ErrInvalidMessage) {
			t.Fatalf("error %v does not wrap the sentinel", err)
		}
	})
}

// Publishing to a topic name Kafka refuses fails at once with
// broker.ErrInvalidMessage, before any request; EnsureTopic with
// ErrInvalidTopic.
func TestBadTopicNamesFailAtOnce(t *testing.T) {
	e := newEnv(t)
	p := e.publisher(WithCreateTopics(Topic{}))
	ctx := ctxT(t, 20*time.Second)
	for _, topic := range []string{"bad topic!", strings.Repeat("t", 250), "..", "a/b"} {
		start := time.Now()
		err := p.Publish(ctx, topic, broker.Message{Payload: []byte("x")})
		if !errors.Is(err, broker.ErrInvalidMessage) {
			t.Errorf("Publish to %.20q = %v, want ErrInvalidMessage", topic, err)
		}
		done := make(chan error, 1)
		p.PublishAsync(ctx, topic, broker.Message{Payload: []byte("x")}, func(_ broker.Message, err error) { done <- err })
		select {
		case err := <-done:
			if !errors.Is(err, broker.ErrInvalidMessage) {
				t.Errorf("PublishAsync to %.20q = %v, want ErrInvalidMessage", topic, err)
			}
		case <-time.After(time.Second):
			t.Errorf("PublishAsync to %.20q: no callback within 1s", topic)
		}
		if err := e.admin.EnsureTopic(ctx, Topic{Name: topic}); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("EnsureTopic(%.20q) = %v, want ErrInvalidTopic", topic, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("%.20q: took %v, want under 1s", topic, took)
		}
	}
	if st := p.Stats(); st.Published != 0 || st.InFlight != 0 {
		t.Errorf("stats %+v: nothing should have been produced", st)
	}
	// the longest legal name works.
	longest := testName(t) + "_" + strings.Repeat("x", 249)
	longest = longest[:249]
	if err := p.Publish(ctx, longest, broker.Message{Payload: []byte("x")}); err != nil {
		t.Errorf("Publish to a 249-character topic: %v", err)
	}
}

// An empty header value travels as an empty value, not as null; an empty
// key stays a null key (spread over partitions).
func TestEmptyHeaderValueIsNotNull(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	p := e.publisher()
	ctx := ctxT(t, 20*time.Second)
	if err := p.Publish(ctx, topic, broker.Message{ID: "m1", Payload: []byte("x"), Header: map[string]string{"empty": "", "full": "v"}}); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var rec *kgo.Record
	for rec == nil {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatal("no record fetched")
		}
		for _, fe := range fs.Errors() {
			t.Fatalf("fetch: %v", fe.Err)
		}
		if rs := fs.Records(); len(rs) > 0 {
			rec = rs[0]
		}
	}
	if rec.Key != nil {
		t.Errorf("record key = %q, want null for a message without Key", rec.Key)
	}
	found := false
	for _, h := range rec.Headers {
		if h.Key == "empty" {
			found = true
			if h.Value == nil || len(h.Value) != 0 {
				t.Errorf("header empty = %#v, want a non-nil empty value", h.Value)
			}
		}
	}
	if !found {
		t.Fatalf("header empty missing from %+v", rec.Headers)
	}
	m := fromRecord(rec)
	if v, ok := m.Header["empty"]; !ok || v != "" || m.Header["full"] != "v" || m.ID != "m1" {
		t.Errorf("fromRecord: header %v, ID %q", m.Header, m.ID)
	}
}

// A dead letter of a keyless message carries x-origin-key as an empty
// value, not null.
func TestDeadLetterOfKeylessMessageHasEmptyOriginKey(t *testing.T) {
	dl := broker.DeadLetter(broker.Message{ID: "m1", Topic: "orders", Attempt: 3}, "g", errors.New("boom"), time.Now())
	r := toRecord("orders.dlq", &dl)
	if r.Key != nil {
		t.Errorf("key = %q, want null", r.Key)
	}
	for _, h := range r.Headers {
		if h.Key == broker.HeaderOriginKey {
			if h.Value == nil || len(h.Value) != 0 {
				t.Errorf("%s = %#v, want a non-nil empty value", h.Key, h.Value)
			}
			return
		}
	}
	t.Errorf("no %s header in %+v", broker.HeaderOriginKey, r.Headers)
}
