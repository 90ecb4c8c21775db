// Package protobuf is an event.Codec for Protocol Buffers messages
// (google.golang.org/protobuf), content type application/protobuf.
//
// Register the message's pointer type, so handlers receive the message
// itself:
//
//	codec, _ := protobuf.New()
//	event.Register[*orderpb.OrderPlaced](reg, "com.example.order.placed", event.WithCodec(codec))
//
// The payload is the plain Protobuf encoding. To carry the Confluent Schema
// Registry framing (magic byte, schema id, message indexes), wrap the codec
// with event/schemaregistry and give the type its .proto source with
// event.WithSchema.
package protobuf

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/go-integration/patterns/event"
)

// ContentType is the codec's CloudEvents datacontenttype.
const ContentType = "application/protobuf"

// SchemaType is the Schema Registry's name of the Protobuf schema type.
const SchemaType = "PROTOBUF"

// ErrInvalidOption is returned (wrapped) by New for a bad option.
var ErrInvalidOption = errors.New("protobuf: invalid option")

// ErrNoSchema is returned (wrapped) by Schema for a type registered without
// event.WithSchema: a schema registry needs the .proto source.
var ErrNoSchema = errors.New("protobuf: no schema")

// ErrNotMessage is returned (wrapped) by Marshal and Unmarshal for a value
// that is not a proto.Message: register the message's pointer type.
var ErrNotMessage = errors.New("protobuf: not a proto.Message")

// Option configures New.
type Option interface{ apply(*Codec) }

type option func(*Codec)

func (o option) apply(c *Codec) { o(c) }

// WithDeterministic makes Marshal order map entries, so equal messages give
// equal bytes (for deduplication by content hash); it costs a sort per map.
func WithDeterministic() Option {
	return option(func(c *Codec) { c.marshal.Deterministic = true })
}

// WithDiscardUnknown drops fields the registered message does not know
// instead of keeping them (kept by default, so a consumer that re-publishes a
// message does not lose a newer producer's fields).
func WithDiscardUnknown() Option {
	return option(func(c *Codec) { c.unmarshal.DiscardUnknown = true })
}

// Codec encodes proto.Message values. It is safe for concurrent use.
type Codec struct {
	marshal   proto.MarshalOptions
	unmarshal proto.UnmarshalOptions
}

var _ event.Codec = (*Codec)(nil)

// New returns a Protobuf codec. Options: WithDeterministic,
// WithDiscardUnknown.
func New(opts ...Option) (*Codec, error) {
	c := &Codec{}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil Option", ErrInvalidOption)
		}
		o.apply(c)
	}
	return c, nil
}

// ContentType returns "application/protobuf".
func (c *Codec) ContentType() string { return ContentType }

// Marshal encodes v, a proto.Message.
func (c *Codec) Marshal(_ context.Context, _ event.TypeInfo, v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%w: %T", ErrNotMessage, v)
	}
	return c.marshal.Marshal(m)
}

// Unmarshal decodes data into v, a proto.Message (the Router passes a new
// message when the registered type is a message pointer).
func (c *Codec) Unmarshal(_ context.Context, _ event.TypeInfo, data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("%w: %T", ErrNotMessage, v)
	}
	return c.unmarshal.Unmarshal(data, m)
}

// SchemaType returns "PROTOBUF", for event/schemaregistry.
func (c *Codec) SchemaType() string { return SchemaType }

// Schema returns the schema of t for a schema registry: the .proto source
// given with event.WithSchema, which must be the file the message was
// generated from (Protobuf has no printer for descriptors in its Go module,
// so the source is not derived).
func (c *Codec) Schema(t event.TypeInfo) (string, error) {
	if t.Schema == "" {
		return "", fmt.Errorf("%w: %s: register it with event.WithSchema(<.proto source>)", ErrNoSchema, t.Name)
	}
	return t.Schema, nil
}

// RecordName returns the message's full name ("pkg.Order"), the subject of
// the RecordNameStrategy.
func (c *Codec) RecordName(t event.TypeInfo) (string, error) {
	md, err := descriptor(t.GoType)
	if err != nil {
		return "", err
	}
	return string(md.FullName()), nil
}

// MessageIndexes returns the path of t's message in its .proto file, as the
// Confluent wire format carries it: [0] for the first top-level message,
// [1, 0] for the first message nested in the second.
func (c *Codec) MessageIndexes(t event.TypeInfo) ([]int, error) {
	md, err := descriptor(t.GoType)
	if err != nil {
		return nil, err
	}
	return Indexes(md), nil
}

// Indexes returns md's path of indexes from its file: top-level message
// index first, then nested ones.
func Indexes(md protoreflect.MessageDescriptor) []int {
	var rev []int
	for d := protoreflect.Descriptor(md); ; d = d.Parent() {
		if _, ok := d.(protoreflect.MessageDescriptor); !ok {
			break
		}
		rev = append(rev, d.Index())
	}
	out := make([]int, len(rev))
	for i, x := range rev {
		out[len(rev)-1-i] = x
	}
	return out
}

var messageType = reflect.TypeFor[proto.Message]()

// descriptor returns the descriptor of a generated message type (or a
// pointer to one).
func descriptor(gt reflect.Type) (protoreflect.MessageDescriptor, error) {
	if gt == nil {
		return nil, fmt.Errorf("%w: no Go type", ErrNotMessage)
	}
	if gt.Kind() != reflect.Pointer && reflect.PointerTo(gt).Implements(messageType) {
		gt = reflect.PointerTo(gt)
	}
	if !gt.Implements(messageType) || gt.Kind() != reflect.Pointer {
		return nil, fmt.Errorf("%w: %v", ErrNotMessage, gt)
	}
	m := reflect.New(gt.Elem()).Interface().(proto.Message)
	md := m.ProtoReflect().Descriptor()
	if md == nil {
		// A dynamicpb.Message without a descriptor: it cannot be told from
		// its Go type.
		return nil, fmt.Errorf("%w: %v has no descriptor of its own (dynamic messages are not supported)", ErrNotMessage, gt)
	}
	return md, nil
}
