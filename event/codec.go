package event

import (
	"context"
	"encoding/json"
	"reflect"
)

// TypeInfo describes a registered event type to a Codec.
type TypeInfo struct {
	// Name is the CloudEvents type ("com.example.order.placed").
	Name string
	// Version is the version of the data being marshalled or unmarshalled:
	// the registered version (WithVersion), since older data is upcast first.
	Version int
	// Schema is the schema given with WithSchema, "" when none. Registry
	// codecs (Avro, Protobuf with a schema registry) use it to register and
	// look up the type's schema.
	Schema string
	// GoType is the registered Go type T.
	GoType reflect.Type
	// Topic is the topic the event is published to (Encode, Publish) or was
	// delivered from (the Router); "" when unknown. Schema Registry codecs
	// derive the subject from it under the TopicNameStrategy ("<topic>-value").
	Topic string
}

// Codec turns a value into bytes and back. It must be safe for concurrent use.
//
// Marshal gets the value as given to Encode or Publish (a T). Unmarshal gets
// a non-nil pointer to decode into: a *T, or, when T is itself a pointer type
// (*pb.Order), a new T, so that a Protobuf codec receives the proto.Message.
//
// A codec that depends on a service (a schema registry) wraps ErrUnavailable
// in the error it returns while that service cannot be reached: Publish then
// fails with a transient error and a received message is retried, where any
// other Unmarshal error dead-letters it as ErrDecode. The context is the
// Publish call's or the handler's, for such I/O.
type Codec interface {
	// ContentType is the CloudEvents datacontenttype of what Marshal returns
	// ("application/json").
	ContentType() string
	Marshal(ctx context.Context, t TypeInfo, v any) ([]byte, error)
	Unmarshal(ctx context.Context, t TypeInfo, data []byte, v any) error
}

// JSON is the default Codec: encoding/json, datacontenttype
// "application/json".
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) ContentType() string { return "application/json" }

func (jsonCodec) Marshal(_ context.Context, _ TypeInfo, v any) ([]byte, error) {
	return json.Marshal(v)
}

func (jsonCodec) Unmarshal(_ context.Context, _ TypeInfo, data []byte, v any) error {
	return json.Unmarshal(data, v)
}

// Upcaster turns the payload of one version of an event type into the payload
// of the next version, in the type's codec format (see WithUpcaster). An
// error is permanent (ErrUpcast) unless it wraps ErrUnavailable.
type Upcaster func(ctx context.Context, data []byte) ([]byte, error)

// UpcastJSON returns an Upcaster for JSON payloads that decodes the old
// version into From, converts it with f and encodes the result.
func UpcastJSON[From, To any](f func(From) (To, error)) Upcaster {
	return func(_ context.Context, data []byte) ([]byte, error) {
		var old From
		if err := json.Unmarshal(data, &old); err != nil {
			return nil, err
		}
		v, err := f(old)
		if err != nil {
			return nil, err
		}
		return json.Marshal(v)
	}
}
