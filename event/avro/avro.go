// Package avro is an event.Codec for Apache Avro with
// github.com/hamba/avro/v2, content type application/avro.
//
// A type's Avro schema is given at registration with event.WithSchema; Go
// structs map to records by their `avro:"name"` field tags:
//
//	codec, _ := avro.New()
//	event.Register[OrderPlaced](reg, "com.example.order.placed",
//		event.WithCodec(codec), event.WithSchema(orderPlacedSchema))
//
// The payload is the plain Avro binary encoding, which cannot be read
// without the schema it was written with. Across versions of a type, wrap the
// codec with event/schemaregistry: the registry framing names the writer's
// schema, and this codec resolves it against the registered (reader) schema
// (UnmarshalWriter), as Avro's schema resolution rules say.
package avro

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hamba/avro/v2"

	"github.com/go-integration/patterns/event"
)

// ContentType is the codec's CloudEvents datacontenttype.
const ContentType = "application/avro"

// SchemaType is the Schema Registry's name of the Avro schema type.
const SchemaType = "AVRO"

var (
	// ErrInvalidOption is returned (wrapped) by New for a bad option.
	ErrInvalidOption = errors.New("avro: invalid option")
	// ErrNoSchema is returned (wrapped) for a type registered without
	// event.WithSchema.
	ErrNoSchema = errors.New("avro: no schema")
	// ErrSchema is a schema that does not parse, or a writer schema the
	// registered schema cannot read (not compatible).
	ErrSchema = errors.New("avro: bad schema")
	// ErrTrailingBytes is a payload longer than the value it encodes.
	ErrTrailingBytes = errors.New("avro: trailing bytes after the value")
)

// Option configures New.
type Option interface{ apply(*Codec) }

type option func(*Codec)

func (o option) apply(c *Codec) { o(c) }

// WithTrailingBytes accepts payloads with bytes after the encoded value
// (refused by default, since they mean a payload of another schema).
func WithTrailingBytes() Option {
	return option(func(c *Codec) { c.trailingOK = true })
}

// Codec encodes Go values with Avro schemas. It is safe for concurrent use;
// parsed schemas and writer-to-reader resolutions are cached.
type Codec struct {
	trailingOK bool
	schemas    sync.Map // schema text -> avro.Schema
	resolved   sync.Map // pair{reader, writer} -> avro.Schema
	compat     *avro.SchemaCompatibility
}

type pair struct{ reader, writer string }

var _ event.Codec = (*Codec)(nil)

// New returns an Avro codec. Option: WithTrailingBytes.
func New(opts ...Option) (*Codec, error) {
	c := &Codec{compat: avro.NewSchemaCompatibility()}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil Option", ErrInvalidOption)
		}
		o.apply(c)
	}
	return c, nil
}

// ContentType returns "application/avro".
func (c *Codec) ContentType() string { return ContentType }

// Parse returns the parsed schema for its text, from the cache after the
// first call. Each text is parsed on its own, so two versions of one record
// name do not collide in hamba/avro's global name cache.
func (c *Codec) Parse(schema string) (avro.Schema, error) {
	if s, ok := c.schemas.Load(schema); ok {
		return s.(avro.Schema), nil
	}
	s, err := avro.ParseWithCache(schema, "", &avro.SchemaCache{})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSchema, err)
	}
	actual, _ := c.schemas.LoadOrStore(schema, s)
	return actual.(avro.Schema), nil
}

func (c *Codec) schemaOf(t event.TypeInfo) (avro.Schema, error) {
	if t.Schema == "" {
		return nil, fmt.Errorf("%w: %s: register it with event.WithSchema(<Avro schema JSON>)", ErrNoSchema, t.Name)
	}
	return c.Parse(t.Schema)
}

// Marshal encodes v with t's schema.
func (c *Codec) Marshal(_ context.Context, t event.TypeInfo, v any) ([]byte, error) {
	s, err := c.schemaOf(t)
	if err != nil {
		return nil, err
	}
	return avro.Marshal(s, v)
}

// Unmarshal decodes data, written with t's own schema, into v.
func (c *Codec) Unmarshal(_ context.Context, t event.TypeInfo, data []byte, v any) error {
	s, err := c.schemaOf(t)
	if err != nil {
		return err
	}
	return c.decode(s, data, v)
}

// UnmarshalWriter decodes data written with the writer schema into v, by
// Avro's resolution rules against t's schema (fields added with defaults,
// fields removed, promotions). event/schemaregistry calls it with the schema
// the frame's id names.
func (c *Codec) UnmarshalWriter(ctx context.Context, t event.TypeInfo, writer string, data []byte, v any) error {
	if writer == t.Schema {
		return c.Unmarshal(ctx, t, data, v)
	}
	reader, err := c.schemaOf(t)
	if err != nil {
		return err
	}
	key := pair{t.Schema, writer}
	if s, ok := c.resolved.Load(key); ok {
		return c.decode(s.(avro.Schema), data, v)
	}
	w, err := c.Parse(writer)
	if err != nil {
		return err
	}
	s, err := c.compat.Resolve(reader, w)
	if err != nil {
		return fmt.Errorf("%w: %s cannot read the writer's schema: %w", ErrSchema, t.Name, err)
	}
	c.resolved.Store(key, s)
	return c.decode(s, data, v)
}

// decode reads one value with a Reader of its own rather than
// avro.Unmarshal, which ignores bytes after the value (and turns an io.EOF
// into success): unless allowed, trailing bytes mean the payload was written
// with another schema.
func (c *Codec) decode(s avro.Schema, data []byte, v any) error {
	r := readers.Get().(*avro.Reader).Reset(data)
	defer func() {
		r.Error = nil
		r.Reset(nil)
		readers.Put(r)
	}()
	r.ReadVal(s, v)
	if r.Error != nil {
		return r.Error
	}
	if !c.trailingOK {
		r.Peek()
		if r.Error == nil {
			return ErrTrailingBytes
		}
	}
	return nil
}

// readers are pooled as hamba's Unmarshal pools its own: a Reader carves
// strings out of a 1 KiB slab it allocates, which a new Reader per message
// would allocate each time. Decoded strings keep their slab alive; a reused
// Reader never writes over what it handed out.
var readers = sync.Pool{New: func() any { return avro.NewReader(nil, 0) }}

// SchemaType returns "AVRO", for event/schemaregistry.
func (c *Codec) SchemaType() string { return SchemaType }

// Schema returns t's schema text (event.WithSchema), for a schema registry.
func (c *Codec) Schema(t event.TypeInfo) (string, error) {
	if _, err := c.schemaOf(t); err != nil {
		return "", err
	}
	return t.Schema, nil
}

// RecordName returns the full name of t's named schema ("com.example.Order"),
// the subject of the RecordNameStrategy.
func (c *Codec) RecordName(t event.TypeInfo) (string, error) {
	s, err := c.schemaOf(t)
	if err != nil {
		return "", err
	}
	n, ok := s.(avro.NamedSchema)
	if !ok {
		return "", fmt.Errorf("%w: %s: a %s schema has no name", ErrSchema, t.Name, s.Type())
	}
	return n.FullName(), nil
}
