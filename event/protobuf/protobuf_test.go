package protobuf_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/eventtest"
	"github.com/go-integration/patterns/event/protobuf"
	"github.com/go-integration/patterns/event/protobuf/testpb"
)

func protoEqual(got, want any) bool { return proto.Equal(got.(proto.Message), want.(proto.Message)) }

// TestConformance runs the codec suite on generated messages, nested ones
// and well-known types.
func TestConformance(t *testing.T) {
	eventtest.Run(t, eventtest.Harness{
		Codec: func(t *testing.T) event.Codec {
			c, err := protobuf.New(protobuf.WithDeterministic())
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		Cases: []eventtest.Case{
			{Name: "placed", Type: event.TypeInfo{Name: "placed"}, Equal: protoEqual,
				Value: &testpb.OrderPlaced{Order: "o-1", Seq: 7, Items: []string{"tent", "stove"}, Total: 12.5}},
			{Name: "shipped", Type: event.TypeInfo{Name: "shipped"}, Equal: protoEqual,
				Value: &testpb.OrderShipped{Order: "o-1", Carrier: "poste", Parcels: []*testpb.OrderShipped_Parcel{{Id: "p", Grams: 900}}}},
			{Name: "timestamp", Type: event.TypeInfo{Name: "ts"}, Equal: protoEqual,
				Value: timestamppb.New(timestamppb.Now().AsTime())},
			{Name: "struct", Type: event.TypeInfo{Name: "struct"}, Equal: protoEqual,
				Value: mustStruct(t, map[string]any{"a": 1.5, "b": []any{"x", true}})},
		},
		// Protobuf has no end marker, and no bytes is the empty message.
		Features: eventtest.Features{TruncationUndetected: true, EmptyIsValid: true},
	})
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNotAMessage(t *testing.T) {
	c, err := protobuf.New()
	if err != nil {
		t.Fatal(err)
	}
	type plain struct{ A int }
	if _, err := c.Marshal(context.Background(), event.TypeInfo{}, plain{1}); !errors.Is(err, protobuf.ErrNotMessage) {
		t.Errorf("Marshal(struct): %v", err)
	}
	if err := c.Unmarshal(context.Background(), event.TypeInfo{}, nil, &plain{}); !errors.Is(err, protobuf.ErrNotMessage) {
		t.Errorf("Unmarshal(*struct): %v", err)
	}
	if _, err := protobuf.New(nil); !errors.Is(err, protobuf.ErrInvalidOption) {
		t.Errorf("New(nil): %v", err)
	}
}

// TestRegistryMethods: what event/schemaregistry asks of the codec.
func TestRegistryMethods(t *testing.T) {
	c, err := protobuf.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		gt    reflect.Type
		index []int
		name  string
	}{
		{reflect.TypeFor[*testpb.OrderPlaced](), []int{0}, "patterns.event.testpb.OrderPlaced"},
		{reflect.TypeFor[*testpb.OrderShipped](), []int{1}, "patterns.event.testpb.OrderShipped"},
		{reflect.TypeFor[*testpb.OrderShipped_Parcel](), []int{1, 0}, "patterns.event.testpb.OrderShipped.Parcel"},
		{reflect.TypeFor[*structpb.ListValue](), []int{2}, "google.protobuf.ListValue"},
	} {
		ti := event.TypeInfo{Name: "x", GoType: tc.gt, Schema: testpb.OrderProto}
		idx, err := c.MessageIndexes(ti)
		if err != nil || !slices.Equal(idx, tc.index) {
			t.Errorf("%v: indexes %v, %v, want %v", tc.gt, idx, err, tc.index)
		}
		if n, err := c.RecordName(ti); err != nil || n != tc.name {
			t.Errorf("%v: record name %q, %v, want %q", tc.gt, n, err, tc.name)
		}
	}
	if _, err := c.Schema(event.TypeInfo{Name: "x"}); !errors.Is(err, protobuf.ErrNoSchema) {
		t.Errorf("Schema without WithSchema: %v", err)
	}
	if _, err := c.MessageIndexes(event.TypeInfo{GoType: reflect.TypeFor[string]()}); !errors.Is(err, protobuf.ErrNotMessage) {
		t.Errorf("indexes of a string: %v", err)
	}
}

// TestDynamicRefused: a dynamic message has no descriptor of its own type,
// so a registry cannot be told which message it is.
func TestDynamicRefused(t *testing.T) {
	c, err := protobuf.New()
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.MessageIndexes(event.TypeInfo{GoType: reflect.TypeFor[*dynamicpb.Message]()})
	if !errors.Is(err, protobuf.ErrNotMessage) {
		t.Errorf("indexes of *dynamicpb.Message: %v", err)
	}
}
