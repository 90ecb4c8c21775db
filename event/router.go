package event

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-integration/patterns/broker"
)

// Event is a received CloudEvent with its data decoded into T.
type Event[T any] struct {
	ID      string    // CloudEvents id (the broker.Message ID for events this package wrote)
	Source  string    // CloudEvents source: the producer
	Type    string    // CloudEvents type: the registered name
	Subject string    // CloudEvents subject, "" when absent
	Time    time.Time // CloudEvents time, zero when absent
	// Version is the dataversion the producer sent (1 when absent). Data is
	// always of the registered version: older data was upcast.
	Version int
	// ContentType is the datacontenttype the data arrived in.
	ContentType string
	// DataSchema is the CloudEvents dataschema, "" when absent.
	DataSchema string
	// Extensions holds the other CloudEvents attributes by name (nil when
	// none); non-string values of structured events in their JSON form.
	Extensions map[string]string
	// Data is the decoded payload.
	Data T
	// Message is the broker message as delivered (Topic, Key, Attempt, Raw).
	Message broker.Message
}

// Router is a broker.Handler (see Handler) that decodes each message into the
// registered Go type of its CloudEvents type and calls that type's handler.
// It reads binary mode under any known header scheme and structured mode. It
// adds no consumer logic: retries, ordering and dead-lettering are the
// subscription's. Bad input is returned as a broker.Permanent error, so the
// subscription dead-letters it at once with the reason in the
// broker.HeaderError header: ErrMissingAttribute and ErrInvalidAttribute (the
// message is not a valid CloudEvent), ErrDecode, ErrVersion, ErrUpcast, and
// ErrUnknownType under the DeadLetter policy. Codec and upcaster errors that
// wrap ErrUnavailable and errors from handlers are returned as they are, so
// they are retried.
//
// The broker drops a permanently failing message when its subscription has
// no dead-letter destination (neither DeadLetterTopic nor MaxAttempts): give
// every subscription of a Router one, as Router.Subscribe checks.
type Router struct {
	reg      *Registry
	unknown  UnknownAction
	fallback broker.Handler

	mu     sync.Mutex // serialises Handle
	routes atomic.Pointer[map[string]*route]

	handled, failed, rejected, skipped, fellBack atomic.Uint64
}

// route is one handled type.
type route struct {
	e *entry
	// call takes its arguments by value: through a func value, pointers
	// would escape and cost two allocations per message.
	call func(ctx context.Context, a attributes, m broker.Message) error
}

// Stats are a Router's counters since it was made.
type Stats struct {
	Handled  uint64 // handler returned nil
	Failed   uint64 // handler returned an error, or codec or upcaster wrapped ErrUnavailable
	Rejected uint64 // bad input returned as a permanent error (dead-lettered)
	Skipped  uint64 // unknown type acknowledged under Skip
	Fallback uint64 // unknown type handed to the fallback handler
}

// NewRouter returns a Router for the types of r. Options: WithUnknown
// (DeadLetter by default, or Skip) or WithFallback.
func NewRouter(r *Registry, opts ...RouterOption) (*Router, error) {
	var c routerConfig
	if r == nil {
		invalid(&c.errs, "nil Registry")
	}
	for _, o := range opts {
		if o == nil {
			invalid(&c.errs, "nil RouterOption")
			continue
		}
		o.applyRouter(&c)
	}
	if c.unknownSet && c.fallbackSet {
		invalid(&c.errs, "WithUnknown and WithFallback conflict: choose one")
	}
	if len(c.errs) > 0 {
		return nil, joinErrs(c.errs)
	}
	rt := &Router{reg: r, unknown: c.unknown, fallback: c.fallback}
	rt.routes.Store(&map[string]*route{})
	return rt, nil
}

// Handle registers h for T's events. T must be registered with the Router's
// Registry, and each type has one handler. h's error is the message's: nil
// acknowledges it, an error retries it, a broker.Permanent error
// dead-letters it. Handle may be called while the Router runs.
func Handle[T any](rt *Router, h func(ctx context.Context, e Event[T]) error) error {
	gt := reflect.TypeFor[T]()
	if h == nil {
		return fmt.Errorf("%w: Handle[%v]: nil handler", ErrInvalidOption, gt)
	}
	e := rt.reg.byGo(gt)
	if e == nil {
		return fmt.Errorf("%w: Handle[%v] (Register it first)", ErrNotRegistered, gt)
	}
	// newT returns where to decode: &v, or a new value when T is a pointer
	// (so codecs get the *pb.Message itself).
	var newT func(*T) any
	if gt.Kind() == reflect.Pointer {
		elem := gt.Elem()
		newT = func(p *T) any {
			v := reflect.New(elem).Interface()
			*p = v.(T)
			return v
		}
	} else {
		newT = func(p *T) any { return p }
	}
	call := func(ctx context.Context, a attributes, m broker.Message) error {
		data, err := rt.upcast(ctx, e, &a)
		if err != nil {
			return err
		}
		// Decode into a T of its own, not into an Event's field, so only
		// the T escapes to the codec.
		var v T
		info := e.info
		info.Topic = m.Topic
		if err := e.codec.Unmarshal(ctx, info, data, newT(&v)); err != nil {
			if errors.Is(err, ErrUnavailable) {
				rt.failed.Add(1)
				return fmt.Errorf("event: decode %s: %w", e.info.Name, err)
			}
			rt.rejected.Add(1)
			return broker.Permanent(fmt.Errorf("%w: %s version %d: %w", ErrDecode, e.info.Name, a.version, err))
		}
		ev := Event[T]{
			ID: a.id, Source: a.source, Type: a.typ, Subject: a.subject, Time: a.at,
			Version: a.version, ContentType: a.contentType, DataSchema: a.dataschema,
			Extensions: a.ext, Data: v, Message: m,
		}
		if err := h(ctx, ev); err != nil {
			rt.failed.Add(1)
			return err
		}
		rt.handled.Add(1)
		return nil
	}

	rt.mu.Lock()
	defer rt.mu.Unlock()
	old := *rt.routes.Load()
	if _, dup := old[e.info.Name]; dup {
		return fmt.Errorf("%w: a handler for %q", ErrAlreadyRegistered, e.info.Name)
	}
	routes := maps.Clone(old)
	routes[e.info.Name] = &route{e: e, call: call}
	rt.routes.Store(&routes)
	return nil
}

// upcast brings a's data to e's registered version.
func (rt *Router) upcast(ctx context.Context, e *entry, a *attributes) ([]byte, error) {
	data := a.data
	if a.version == e.info.Version {
		return data, nil
	}
	if a.version > e.info.Version {
		rt.rejected.Add(1)
		return nil, broker.Permanent(fmt.Errorf("%w: %s version %d is newer than the registered version %d (upgrade consumers before producers)",
			ErrVersion, e.info.Name, a.version, e.info.Version))
	}
	for v := a.version; v < e.info.Version; v++ {
		if e.upcasters == nil || e.upcasters[v] == nil {
			rt.rejected.Add(1)
			return nil, broker.Permanent(fmt.Errorf("%w: %s version %d: no upcaster from version %d (registered version %d)",
				ErrVersion, e.info.Name, a.version, v, e.info.Version))
		}
		out, err := e.upcasters[v](ctx, data)
		if err != nil {
			if errors.Is(err, ErrUnavailable) {
				rt.failed.Add(1)
				return nil, fmt.Errorf("event: upcast %s from version %d: %w", e.info.Name, v, err)
			}
			rt.rejected.Add(1)
			return nil, broker.Permanent(fmt.Errorf("%w: %s from version %d: %w", ErrUpcast, e.info.Name, v, err))
		}
		data = out
	}
	return data, nil
}

// Handler returns the Router as a broker.Handler, to give to any
// Subscriber's Subscribe (or to middleware).
func (rt *Router) Handler() broker.Handler { return rt.handle }

func (rt *Router) handle(ctx context.Context, m broker.Message) error {
	var a attributes
	if err := readAttributes(&m, &rt.reg.env.headers, &a); err != nil {
		rt.rejected.Add(1)
		return err
	}
	r := (*rt.routes.Load())[a.typ]
	if r == nil {
		return rt.unknownType(ctx, &a, m)
	}
	if a.contentType != "" && !sameMedia(a.contentType, r.e.contentType) {
		rt.rejected.Add(1)
		return broker.Permanent(fmt.Errorf("%w: %s arrived as %q; its codec reads %q", ErrDecode, a.typ, a.contentType, r.e.contentType))
	}
	return r.call(ctx, a, m)
}

func (rt *Router) unknownType(ctx context.Context, a *attributes, m broker.Message) error {
	switch {
	case rt.fallback != nil:
		rt.fellBack.Add(1)
		return rt.fallback(ctx, m)
	case rt.unknown == Skip:
		rt.skipped.Add(1)
		return nil
	}
	rt.rejected.Add(1)
	return broker.Permanent(fmt.Errorf("%w: %q (version %d from %s)", ErrUnknownType, a.typ, a.version, a.source))
}

// Subscribe runs sub.Subscribe(ctx, s, rt.Handler()) after checking that s
// has a dead-letter destination, without which the broker would drop what
// the Router rejects; it fails with broker.ErrInvalidSubscription otherwise.
func (rt *Router) Subscribe(ctx context.Context, sub broker.Subscriber, s broker.Subscription) error {
	if s.DeadLetterDestination() == "" {
		return fmt.Errorf("%w: the event Router needs a dead-letter destination (DeadLetterTopic or MaxAttempts) for events it rejects", broker.ErrInvalidSubscription)
	}
	return sub.Subscribe(ctx, s, rt.Handler())
}

// Stats returns the Router's counters.
func (rt *Router) Stats() Stats {
	return Stats{
		Handled:  rt.handled.Load(),
		Failed:   rt.failed.Load(),
		Rejected: rt.rejected.Load(),
		Skipped:  rt.skipped.Load(),
		Fallback: rt.fellBack.Load(),
	}
}
