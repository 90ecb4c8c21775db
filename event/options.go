package event

import (
	"errors"
	"fmt"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/go-integration/patterns/broker"
)

// Options are typed by what reads them: NewRegistry takes Options, Register
// TypeOptions, Encode and Publish PublishOptions, NewRouter RouterOptions.
// An option that is both a registry default and a per-type or per-call
// choice implements both (WithCodec is a CodecOption; WithSource,
// WithHeaders and WithMode are EnvelopeOptions). Every option checks its
// arguments; a bad one fails the call with an error wrapping
// ErrInvalidOption and naming it.

// Option configures a Registry.
type Option interface{ applyRegistry(*registryConfig) }

// TypeOption configures one event type in Register.
type TypeOption interface{ applyType(*typeConfig) }

// PublishOption configures one Encode or Publish call.
type PublishOption interface{ applyPublish(*publishConfig) }

// RouterOption configures a Router.
type RouterOption interface{ applyRouter(*routerConfig) }

// CodecOption is a registry default (Option) and a per-type choice (TypeOption).
type CodecOption interface {
	Option
	TypeOption
}

// EnvelopeOption is a registry default (Option) and a per-call choice
// (PublishOption) about the CloudEvents envelope.
type EnvelopeOption interface {
	Option
	PublishOption
}

// Mode is a CloudEvents content mode.
type Mode int

// Content modes.
const (
	// Binary puts the data in the payload and the attributes in headers (the
	// default).
	Binary Mode = iota
	// Structured puts the whole CloudEvent in the payload as JSON
	// (StructuredContentType), for brokers or consumers that drop headers.
	Structured
)

// String returns "binary" or "structured".
func (m Mode) String() string {
	switch m {
	case Binary:
		return "binary"
	case Structured:
		return "structured"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// envelope is what EnvelopeOptions set, as a registry default or per call.
type envelope struct {
	source  string
	headers Headers
	mode    Mode
	set     uint8 // which fields were set, for per-call overrides
}

const (
	setSource uint8 = 1 << iota
	setHeaders
	setMode
)

type registryConfig struct {
	env   envelope
	codec Codec
	errs  []error
}

type typeConfig struct {
	version   int
	codec     Codec
	schema    string
	upcasters map[int]Upcaster
	errs      []error
}

type publishConfig struct {
	env                  envelope
	id, subject, dataURI string
	at                   time.Time
	ext                  map[string]string
	errs                 []error
}

type routerConfig struct {
	unknown     UnknownAction
	unknownSet  bool
	fallback    broker.Handler
	fallbackSet bool
	errs        []error
}

func invalid(errs *[]error, format string, args ...any) {
	*errs = append(*errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...))
}

func joinErrs(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// --- WithCodec

type codecOption struct{ c Codec }

func (o codecOption) check(errs *[]error) bool {
	if o.c == nil {
		invalid(errs, "WithCodec(nil)")
		return false
	}
	if o.c.ContentType() == "" {
		invalid(errs, "WithCodec(%T): empty ContentType", o.c)
		return false
	}
	return true
}

func (o codecOption) applyRegistry(c *registryConfig) {
	if o.check(&c.errs) {
		c.codec = o.c
	}
}

func (o codecOption) applyType(c *typeConfig) {
	if o.check(&c.errs) {
		c.codec = o.c
	}
}

// WithCodec sets the codec: for every type of the Registry (default JSON),
// or for one type in Register.
func WithCodec(c Codec) CodecOption { return codecOption{c} }

// --- envelope options

type envelopeOption func(*envelope, *[]error)

func (o envelopeOption) applyRegistry(c *registryConfig) { o(&c.env, &c.errs) }
func (o envelopeOption) applyPublish(c *publishConfig)   { o(&c.env, &c.errs) }

// WithSource sets the CloudEvents source, a non-empty URI reference naming
// the producer ("/orders", "urn:example:billing"): for every event the
// Registry encodes, or for one call. Encoding fails without a source.
func WithSource(uri string) EnvelopeOption {
	return envelopeOption(func(e *envelope, errs *[]error) {
		if uri == "" {
			invalid(errs, "WithSource: empty source")
			return
		}
		if _, err := url.Parse(uri); err != nil {
			invalid(errs, "WithSource(%q): not a URI reference: %v", uri, err)
			return
		}
		e.source = uri
		e.set |= setSource
	})
}

// WithHeaders sets the header-name scheme of binary mode (default
// KafkaHeaders); see Headers.
func WithHeaders(h Headers) EnvelopeOption {
	return envelopeOption(func(e *envelope, errs *[]error) {
		if !h.valid() {
			invalid(errs, "WithHeaders: zero Headers (use KafkaHeaders or AMQPHeaders)")
			return
		}
		e.headers = h
		e.set |= setHeaders
	})
}

// WithMode sets the content mode (default Binary).
func WithMode(m Mode) EnvelopeOption {
	return envelopeOption(func(e *envelope, errs *[]error) {
		if m != Binary && m != Structured {
			invalid(errs, "WithMode(%v): not Binary or Structured", m)
			return
		}
		e.mode = m
		e.set |= setMode
	})
}

// --- type options

type typeOption func(*typeConfig)

func (o typeOption) applyType(c *typeConfig) { o(c) }

// WithVersion sets the type's version, n >= 1 (default 1). It travels in the
// dataversion attribute; bump it for a change old consumers cannot read, and
// give the new version upcasters from the old ones.
func WithVersion(n int) TypeOption {
	return typeOption(func(c *typeConfig) {
		if n < 1 {
			invalid(&c.errs, "WithVersion(%d): must be at least 1", n)
			return
		}
		c.version = n
	})
}

// WithUpcaster registers f to turn data of version from into data of version
// from+1, in the type's codec format. A received event of an older version
// runs through the chain up to the registered version; 1 <= from < version,
// one upcaster per from.
func WithUpcaster(from int, f Upcaster) TypeOption {
	return typeOption(func(c *typeConfig) {
		if f == nil {
			invalid(&c.errs, "WithUpcaster(%d, nil)", from)
			return
		}
		if from < 1 {
			invalid(&c.errs, "WithUpcaster(%d): from must be at least 1", from)
			return
		}
		if _, dup := c.upcasters[from]; dup {
			invalid(&c.errs, "WithUpcaster(%d): given twice", from)
			return
		}
		if c.upcasters == nil {
			c.upcasters = make(map[int]Upcaster)
		}
		c.upcasters[from] = f
	})
}

// WithSchema gives the type's schema (Avro JSON, a Protobuf descriptor, a
// JSON Schema) to its codec, in TypeInfo.Schema. The JSON codec ignores it.
func WithSchema(schema string) TypeOption {
	return typeOption(func(c *typeConfig) {
		if schema == "" {
			invalid(&c.errs, "WithSchema: empty schema")
			return
		}
		c.schema = schema
	})
}

// --- publish options

type publishOption func(*publishConfig)

func (o publishOption) applyPublish(c *publishConfig) { o(c) }

// WithID sets the CloudEvents id, which is also the broker.Message ID
// (default a random ID). Give the same ID to a retried publish of the same
// event, so consumers can deduplicate it.
func WithID(id string) PublishOption {
	return publishOption(func(c *publishConfig) {
		if id == "" || !utf8.ValidString(id) {
			invalid(&c.errs, "WithID(%q): empty or not UTF-8", id)
			return
		}
		c.id = id
	})
}

// WithSubject sets the CloudEvents subject: what the event is about within
// its source ("orders/42").
func WithSubject(s string) PublishOption {
	return publishOption(func(c *publishConfig) {
		if s == "" || !utf8.ValidString(s) {
			invalid(&c.errs, "WithSubject(%q): empty or not UTF-8", s)
			return
		}
		c.subject = s
	})
}

// WithTime sets the CloudEvents time, when the event happened (default now).
func WithTime(t time.Time) PublishOption {
	return publishOption(func(c *publishConfig) {
		if t.IsZero() {
			invalid(&c.errs, "WithTime: zero time")
			return
		}
		c.at = t
	})
}

// WithDataSchema sets the CloudEvents dataschema, a URI of the data's schema.
func WithDataSchema(uri string) PublishOption {
	return publishOption(func(c *publishConfig) {
		if u, err := url.Parse(uri); uri == "" || err != nil || !u.IsAbs() {
			invalid(&c.errs, "WithDataSchema(%q): not an absolute URI", uri)
			return
		}
		c.dataURI = uri
	})
}

// WithExtension adds a CloudEvents extension attribute with a string value.
// The name must be 1-20 lower-case ASCII letters or digits, and not a core
// attribute or dataversion.
func WithExtension(name, value string) PublishOption {
	return publishOption(func(c *publishConfig) {
		if !validExtensionName(name) || coreAttribute(name) {
			invalid(&c.errs, "WithExtension(%q): name must be 1-20 of [a-z0-9] and not a core attribute", name)
			return
		}
		if !utf8.ValidString(value) {
			invalid(&c.errs, "WithExtension(%q): value is not UTF-8", name)
			return
		}
		if c.ext == nil {
			c.ext = make(map[string]string)
		}
		c.ext[name] = value
	})
}

// --- router options

type routerOption func(*routerConfig)

func (o routerOption) applyRouter(c *routerConfig) { o(c) }

// UnknownAction is what a Router does with a message whose type has no
// handler (WithUnknown).
type UnknownAction int

// Unknown actions.
const (
	// DeadLetter fails the message with broker.Permanent(ErrUnknownType),
	// so the subscription dead-letters it. The subscription needs a
	// dead-letter destination (DeadLetterTopic or MaxAttempts): without one
	// the broker drops a permanently failing message (Router.Subscribe
	// refuses such a subscription). This is the default.
	DeadLetter UnknownAction = iota
	// Skip acknowledges the message without handling it and counts it in
	// Stats.Skipped: for a consumer of a topic that carries types it does not
	// care about.
	Skip
)

// String returns "DeadLetter" or "Skip".
func (a UnknownAction) String() string {
	switch a {
	case DeadLetter:
		return "DeadLetter"
	case Skip:
		return "Skip"
	}
	return fmt.Sprintf("UnknownAction(%d)", int(a))
}

// WithUnknown sets what the Router does with a message of a type it has no
// handler for: DeadLetter (default) or Skip. WithFallback is the third choice.
func WithUnknown(a UnknownAction) RouterOption {
	return routerOption(func(c *routerConfig) {
		if a != DeadLetter && a != Skip {
			invalid(&c.errs, "WithUnknown(%v): not DeadLetter or Skip", a)
			return
		}
		c.unknown, c.unknownSet = a, true
	})
}

// WithFallback hands a message of a type the Router has no handler for to h,
// as it came from the broker. It cannot be combined with WithUnknown.
func WithFallback(h broker.Handler) RouterOption {
	return routerOption(func(c *routerConfig) {
		if h == nil {
			invalid(&c.errs, "WithFallback(nil)")
			return
		}
		c.fallback, c.fallbackSet = h, true
	})
}
