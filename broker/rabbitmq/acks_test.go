package rabbitmq_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// TestSlowMessageDoesNotHoldPrefetch: acknowledgements are coalesced into
// multiple-acks of the done prefix, but a message still running must not
// hold back the acks of the messages after it: with a prefetch of 4 and
// one handler blocked, the other 40 messages are all handled, and nothing
// is delivered twice.
func TestSlowMessageDoesNotHoldPrefetch(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	p := newPublisher(t, url)
	s := newSubscriber(t, url)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the subscriber's cleanup, should the test fail
	c := newCollector()
	h := func(ctx context.Context, m broker.Message) error {
		if m.ID == "slow" {
			<-release
		}
		return c.handle(ctx, m)
	}
	stop := run(t, s, broker.Subscription{Topic: "acks", Group: "g", Concurrency: 2, MaxInFlight: 4}, h)
	t.Cleanup(unblock)
	ctx := ctxT(t, 30*time.Second)
	msgs := []broker.Message{{ID: "slow", Key: "slow"}}
	for i := range 40 {
		msgs = append(msgs, broker.Message{ID: fmt.Sprint("m", i), Key: fmt.Sprint("k", i)})
	}
	if err := p.Publish(ctx, "acks", msgs...); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 20*time.Second, ids("m", 40)...)
	unblock()
	c.waitFor(t, 10*time.Second, "slow")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Everything was acked: a new member of the group gets nothing.
	again := newCollector()
	stop2 := run(t, s, broker.Subscription{Topic: "acks", Group: "g"}, again.handle)
	if err := p.Publish(ctx, "acks", broker.Message{ID: "marker", Key: "x"}); err != nil {
		t.Fatal(err)
	}
	again.waitFor(t, 10*time.Second, "marker")
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	if n := again.unique(); n != 1 || c.duplicates() != 0 {
		t.Fatalf("after the drain the group got %d messages (want only the marker); %d duplicates", n, c.duplicates())
	}
}
