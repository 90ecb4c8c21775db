package brokertest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// Headers the suite's tracer adds, as a real one adds trace context: to
// each published message (TracePublishStart) and to each dead letter
// (TraceDeadLetter).
const (
	headerPublishTrace    = "x-brokertest-publish-trace"
	headerDeadLetterTrace = "x-brokertest-dead-letter-trace"
)

type (
	pubKey    struct{}
	procKey   struct{}
	callerKey struct{}
)

// pubSpan is one traced Publish call.
type pubSpan struct {
	name      string
	start     broker.TracePublishStartData // Messages copied at Start
	callerCtx bool                         // Start got the caller's context
	end       *broker.TracePublishEndData
}

// procSpan is one traced handler call.
type procSpan struct {
	start     broker.TraceProcessStartData
	inHandler bool // the handler's context carried the span
	end       *broker.TraceProcessEndData
}

type deadEvent struct {
	data broker.TraceDeadLetterData
	span *procSpan // of the context it was called with
}

// recorder is the suite's tracer: it records every call and puts its span
// in the context, as an OpenTelemetry tracer would.
type recorder struct {
	mu       sync.Mutex
	pubs     []*pubSpan
	procs    []*procSpan
	deads    []deadEvent
	problems []string
}

func (r *recorder) problem(format string, args ...any) {
	r.mu.Lock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *recorder) TracePublishStart(ctx context.Context, d broker.TracePublishStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	sp := &pubSpan{name: fmt.Sprint("publish-", len(r.pubs)+1), start: d, callerCtx: ctx.Value(callerKey{}) != nil}
	sp.start.Messages = make([]broker.Message, len(d.Messages))
	for i, m := range d.Messages {
		m.Header = maps.Clone(m.Header) // as the tracer got it, read-only
		sp.start.Messages[i] = m
		h := d.Header(i)
		if h == nil {
			r.problems = append(r.problems, fmt.Sprintf("%s: TracePublishStartData.Header(%d) is nil", sp.name, i))
			continue
		}
		h[headerPublishTrace] = sp.name
	}
	r.pubs = append(r.pubs, sp)
	return context.WithValue(ctx, pubKey{}, sp)
}

func (r *recorder) TracePublishEnd(ctx context.Context, d broker.TracePublishEndData) {
	sp, _ := ctx.Value(pubKey{}).(*pubSpan)
	if sp == nil {
		r.problem("TracePublishEnd(%+v) did not get the context TracePublishStart returned", d)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if sp.end != nil {
		r.problems = append(r.problems, fmt.Sprintf("TracePublishEnd called twice for %s", sp.name))
	}
	sp.end = &d
}

func (r *recorder) TraceProcessStart(ctx context.Context, d broker.TraceProcessStartData) context.Context {
	sp := &procSpan{start: d}
	sp.start.Message.Header = maps.Clone(d.Message.Header)
	r.mu.Lock()
	r.procs = append(r.procs, sp)
	r.mu.Unlock()
	return context.WithValue(ctx, procKey{}, sp)
}

func (r *recorder) TraceProcessEnd(ctx context.Context, d broker.TraceProcessEndData) {
	sp, _ := ctx.Value(procKey{}).(*procSpan)
	if sp == nil {
		r.problem("TraceProcessEnd(%+v) did not get the context TraceProcessStart returned", d)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if sp.end != nil {
		r.problems = append(r.problems, fmt.Sprintf("TraceProcessEnd called twice for %s attempt %d", sp.start.Message.ID, sp.start.Message.Attempt))
	}
	sp.end = &d
}

func (r *recorder) TraceDeadLetter(ctx context.Context, d broker.TraceDeadLetterData) {
	sp, _ := ctx.Value(procKey{}).(*procSpan)
	if d.Message.Header != nil {
		d.Message.Header[headerDeadLetterTrace] = "dead-" + d.Message.ID
	}
	r.mu.Lock()
	r.deads = append(r.deads, deadEvent{data: d, span: sp})
	r.mu.Unlock()
}

// inHandler marks the span ctx carries as seen by the handler.
func (r *recorder) inHandler(ctx context.Context, m broker.Message) {
	sp, _ := ctx.Value(procKey{}).(*procSpan)
	if sp == nil {
		r.problem("the handler of %s (attempt %d) did not run in the context TraceProcessStart returned", m.ID, m.Attempt)
		return
	}
	r.mu.Lock()
	sp.inHandler = true
	r.mu.Unlock()
}

func (r *recorder) endedProcs() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, sp := range r.procs {
		if sp.end != nil {
			n++
		}
	}
	return n
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.problems {
		t.Error(p)
	}
}

// traced makes a publisher and subscriber with tr (a *recorder or a
// *gatedRecorder) installed, or skips.
func (s *suite) traced(t *testing.T, tr any) (broker.Publisher, broker.Subscriber) {
	t.Helper()
	if s.h.Traced == nil {
		t.Skip("the harness has no Traced")
	}
	p, sub := s.h.Traced(t, tr)
	t.Cleanup(func() {
		_ = sub.Close()
		_ = p.Close()
	})
	return p, sub
}

// testTracePublish: each Publish call is one TracePublishStart, with the
// messages (IDs filled; what the tracer writes to the maps
// TracePublishStartData.Header returns reaches the subscriber, the
// caller's messages and Header maps are left alone) and the caller's
// context, and one
// TracePublishEnd with the context Start returned and the call's error,
// refused calls included; the publisher's Stats count them.
func (s *suite) testTracePublish(t *testing.T) {
	tr := &recorder{}
	p, sub := s.traced(t, tr)
	topic := s.topic(t, "")
	c := newCollector()
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g"}, c.handler)
	callerHeader := map[string]string{"k": "v"}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), callerKey{}, true), waitFor)
	defer cancel()
	msgs := []broker.Message{{ID: "a", Key: "x", Header: callerHeader}, {Key: "y", Payload: []byte("b")}}
	if err := p.Publish(ctx, topic, msgs...); err != nil {
		t.Fatal(err)
	}
	if len(callerHeader) != 1 || callerHeader["k"] != "v" {
		t.Errorf("the caller's Header map was changed: %v", callerHeader)
	}
	if msgs[0].Header == nil || len(msgs[0].Header) != 1 || msgs[1].Header != nil {
		t.Errorf("the caller's messages were given other Header maps: %+v", msgs)
	}
	c.waitUnique(t, 2)
	for _, m := range c.byID() {
		if got := m.Header[headerPublishTrace]; got != "publish-1" {
			t.Errorf("message %s delivered with %s = %q, want what TracePublishStart added (publish-1)", m.ID, headerPublishTrace, got)
		}
	}
	if got := c.byID()["a"].Header["k"]; got != "v" {
		t.Errorf("message a delivered with header k = %q, want v", got)
	}

	bad := append([]string{""}, s.h.InvalidTopics...)
	for _, topic := range bad {
		if err := p.Publish(ctx, topic, broker.Message{ID: "refused"}); err == nil {
			t.Errorf("Publish to %q: nil error", topic)
		}
	}
	tr.check(t)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.pubs) != 1+len(bad) {
		t.Fatalf("%d TracePublishStart calls, want %d", len(tr.pubs), 1+len(bad))
	}
	sp := tr.pubs[0]
	d := sp.start
	if d.System == "" || d.Topic != topic || len(d.Messages) != 2 || d.Messages[0].ID != "a" || d.Messages[1].ID == "" || d.Messages[1].Time.IsZero() {
		t.Errorf("TracePublishStart data %+v: want the System, topic %q and both messages, IDs and Times filled", d, topic)
	}
	if !sp.callerCtx {
		t.Error("TracePublishStart did not get the caller's context")
	}
	if sp.end == nil || sp.end.Err != nil || sp.end.Duration <= 0 {
		t.Errorf("TracePublishEnd of the published call: %+v, want no error and a duration", sp.end)
	}
	for i, topic := range bad {
		sp := tr.pubs[1+i]
		if sp.start.Topic != topic || sp.start.System != d.System {
			t.Errorf("refused Publish to %q traced as %+v", topic, sp.start)
		}
		if sp.end == nil || sp.end.Err == nil {
			t.Errorf("refused Publish to %q: TracePublishEnd %+v, want its error", topic, sp.end)
		}
	}
	if s.h.Stats != nil {
		ps, _ := s.h.Stats(p, sub)
		want := broker.PublisherStats{Published: 2, Failed: uint64(len(bad))}
		if ps != want {
			t.Errorf("publisher stats %+v, want %+v", ps, want)
		}
	}
}

// testTraceProcess: each handler call is one TraceProcessStart (topic,
// group, the message with the publisher's trace header and its attempt)
// and one TraceProcessEnd with the outcome, the handler running in the
// context Start returned; a dead letter is announced with
// TraceDeadLetter, in the failing attempt's context, and carries what the
// tracer added; the subscriber's Stats count it all.
func (s *suite) testTraceProcess(t *testing.T) {
	tr := &recorder{}
	p, sub := s.traced(t, tr)
	topic := s.topic(t, "")
	dlq := s.topic(t, ".dlq")
	provision(t, sub, broker.Subscription{Topic: dlq, Group: "dlq"})
	h := func(ctx context.Context, m broker.Message) error {
		tr.inHandler(ctx, m)
		switch {
		case m.ID == "flaky" && m.Attempt == 1:
			return errors.New("flaky failure")
		case m.ID == "poison" && m.Attempt == 1:
			panic("poison panic")
		case m.ID == "poison":
			return errors.New("poison failure")
		}
		return nil
	}
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g", MaxAttempts: 2, DeadLetterTopic: dlq}, h)
	publish(t, p, topic,
		broker.Message{ID: "ok", Key: "k.ok"},
		broker.Message{ID: "flaky", Key: "k.flaky", Header: map[string]string{"a": "b"}},
		broker.Message{ID: "poison", Key: "k.poison"})
	dead := newCollector()
	subscribe(t, sub, broker.Subscription{Topic: dlq, Group: "dlq"}, func(ctx context.Context, m broker.Message) error {
		tr.inHandler(ctx, m)
		return dead.handler(ctx, m)
	})
	dead.waitUnique(t, 1)
	if got := dead.byID()["poison"].Header[headerDeadLetterTrace]; got != "dead-poison" {
		t.Errorf("dead letter carries %s = %q, want what TraceDeadLetter added", headerDeadLetterTrace, got)
	}
	const calls = 6 // ok; flaky twice; poison twice; its dead letter
	testenv.Eventually(t, waitFor, "every handler call's TraceProcessEnd", func() bool { return tr.endedProcs() >= calls })
	tr.check(t)

	type call struct {
		attempt int
		outcome broker.Outcome
		err     string
	}
	want := map[string][]call{
		topic + "/ok":     {{1, broker.OutcomeAcked, ""}},
		topic + "/flaky":  {{1, broker.OutcomeRetry, "flaky failure"}, {2, broker.OutcomeAcked, ""}},
		topic + "/poison": {{1, broker.OutcomeRetry, broker.ErrHandlerPanic.Error()}, {2, broker.OutcomeDeadLettered, "poison failure"}},
		dlq + "/poison":   {{1, broker.OutcomeAcked, ""}},
	}
	groups := map[string]string{topic: "g", dlq: "dlq"}
	got := map[string][]call{}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	system := ""
	for _, sp := range tr.procs {
		d, m := sp.start, sp.start.Message
		if sp.end == nil {
			t.Errorf("%s/%s attempt %d: no TraceProcessEnd", d.Topic, m.ID, m.Attempt)
			continue
		}
		c := call{attempt: m.Attempt, outcome: sp.end.Outcome}
		if sp.end.Err != nil {
			c.err = sp.end.Err.Error()
			if c.outcome == broker.OutcomeRetry && m.ID == "poison" && errors.Is(sp.end.Err, broker.ErrHandlerPanic) {
				c.err = broker.ErrHandlerPanic.Error()
			}
		}
		got[d.Topic+"/"+m.ID] = append(got[d.Topic+"/"+m.ID], c)
		if system == "" {
			system = d.System
		}
		if d.System == "" || d.System != system || d.Group != groups[d.Topic] {
			t.Errorf("TraceProcessStart data %+v: want the System and the subscription's group", d)
		}
		if m.Header[headerPublishTrace] != "publish-1" {
			t.Errorf("%s/%s attempt %d: TraceProcessStart's Header lacks the publisher's trace header: %v", d.Topic, m.ID, m.Attempt, m.Header)
		}
		if !sp.inHandler {
			t.Errorf("%s/%s attempt %d: the handler did not run in the context TraceProcessStart returned", d.Topic, m.ID, m.Attempt)
		}
		if sp.end.Duration <= 0 {
			t.Errorf("%s/%s attempt %d: TraceProcessEnd duration %v", d.Topic, m.ID, m.Attempt, sp.end.Duration)
		}
	}
	for k, w := range want {
		g := got[k]
		ok := len(g) == len(w)
		for i := 0; ok && i < len(w); i++ {
			ok = g[i].attempt == w[i].attempt && g[i].outcome == w[i].outcome && strings.Contains(g[i].err, w[i].err) && (w[i].err != "" || g[i].err == "")
		}
		if !ok {
			t.Errorf("%s: handler calls traced as %v, want %v", k, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("traced handler calls for %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}

	if len(tr.deads) != 1 {
		t.Fatalf("%d TraceDeadLetter calls, want 1", len(tr.deads))
	}
	dl := tr.deads[0]
	if d := dl.data; d.System != system || d.Topic != topic || d.Group != "g" || d.DeadLetterTopic != dlq || d.Message.ID != "poison" ||
		d.Message.Header[broker.HeaderAttempts] != "2" || d.Err == nil || !strings.Contains(d.Err.Error(), "poison failure") {
		t.Errorf("TraceDeadLetter data %+v", d)
	}
	if dl.span == nil || dl.span.start.Message.ID != "poison" || dl.span.start.Message.Attempt != 2 {
		t.Error("TraceDeadLetter was not called in the context of the failing attempt")
	}

	if s.h.Stats == nil {
		return
	}
	ps, ss := s.h.Stats(p, sub)
	if w := (broker.PublisherStats{Published: 3}); ps != w {
		t.Errorf("publisher stats %+v, want %+v", ps, w)
	}
	if w := (broker.SubscriberStats{Received: 4, Handled: 3, Retried: 2, DeadLettered: 1, Panics: 1}); ss != w {
		t.Errorf("subscriber stats %+v, want %+v", ss, w)
	}
}

// gatedRecorder is the suite's tracer with the enabler interfaces: a
// Publish call is traced only when its context carries callerKey, a
// handler call only when the message carries the publisher's trace header.
type gatedRecorder struct {
	*recorder
	pubAsked, procAsked atomic.Int64
}

func (g *gatedRecorder) TracePublishEnabled(ctx context.Context) bool {
	g.pubAsked.Add(1)
	return ctx.Value(callerKey{}) != nil
}

func (g *gatedRecorder) TraceProcessEnabled(_ context.Context, _ string, header map[string]string) bool {
	g.procAsked.Add(1)
	return header[headerPublishTrace] != ""
}

// testTraceEnabler: a tracer implementing broker.PublishTraceEnabler and
// broker.ProcessTraceEnabler is asked before each call and not called at
// all for a call it reports false for (the handler then runs in the
// subscriber's context), while the Stats still count everything.
func (s *suite) testTraceEnabler(t *testing.T) {
	tr := &gatedRecorder{recorder: &recorder{}}
	p, sub := s.traced(t, tr)
	topic := s.topic(t, "")
	c := newCollector()
	var untracedInHandler atomic.Int64
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g"}, func(ctx context.Context, m broker.Message) error {
		if m.ID == "traced" {
			tr.inHandler(ctx, m)
		} else if ctx.Value(procKey{}) == nil {
			untracedInHandler.Add(1)
		}
		return c.handler(ctx, m)
	})
	publish(t, p, topic, broker.Message{ID: "untraced", Key: "k.a"}) // context.Background: not enabled
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), callerKey{}, true), waitFor)
	defer cancel()
	if err := p.Publish(ctx, topic, broker.Message{ID: "traced", Key: "k.b"}); err != nil {
		t.Fatal(err)
	}
	c.waitUnique(t, 2)
	testenv.Eventually(t, waitFor, "the traced handler call's TraceProcessEnd", func() bool { return tr.endedProcs() >= 1 })
	tr.check(t)
	if n := tr.pubAsked.Load(); n != 2 {
		t.Errorf("TracePublishEnabled asked %d times, want once per Publish call (2)", n)
	}
	if n := tr.procAsked.Load(); n != 2 {
		t.Errorf("TraceProcessEnabled asked %d times, want once per handler call (2)", n)
	}
	if got := c.byID()["untraced"].Header[headerPublishTrace]; got != "" {
		t.Errorf("the untraced message carries %s = %q: its Publish call was traced", headerPublishTrace, got)
	}
	if untracedInHandler.Load() != 1 {
		t.Error("the untraced message's handler ran in a traced context")
	}
	tr.mu.Lock()
	pubs, procs := len(tr.pubs), len(tr.procs)
	var procID string
	if procs == 1 {
		procID = tr.procs[0].start.Message.ID
	}
	tr.mu.Unlock()
	if pubs != 1 || procs != 1 || procID != "traced" {
		t.Errorf("%d publish and %d process spans (%q), want one of each, for the traced message", pubs, procs, procID)
	}
	if s.h.Stats != nil {
		ps, ss := s.h.Stats(p, sub)
		if ps.Published != 2 {
			t.Errorf("publisher stats %+v, want 2 published, traced or not", ps)
		}
		testenv.Eventually(t, waitFor, "subscriber stats counting both", func() bool {
			_, ss = s.h.Stats(p, sub)
			return ss.Handled == 2
		})
	}
}
