package schemaregistry_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/avro"
	"github.com/go-integration/patterns/event/protobuf"
	"github.com/go-integration/patterns/event/protobuf/testpb"
	"github.com/go-integration/patterns/event/schemaregistry"
)

const orderSchemaV1 = `{"type":"record","name":"Order","namespace":"com.example","fields":[
	{"name":"order","type":"string"},
	{"name":"seq","type":"long"}]}`

// orderSchemaV2 adds a field with a default: BACKWARD compatible, so a v2
// reader resolves v1 data.
const orderSchemaV2 = `{"type":"record","name":"Order","namespace":"com.example","fields":[
	{"name":"order","type":"string"},
	{"name":"seq","type":"long"},
	{"name":"channel","type":"string","default":"web"}]}`

type OrderV1 struct {
	Order string `avro:"order"`
	Seq   int64  `avro:"seq"`
}

type Order struct {
	Order   string `avro:"order"`
	Seq     int64  `avro:"seq"`
	Channel string `avro:"channel"`
}

func newAvro(t testing.TB, f *fake, opts ...schemaregistry.Option) *schemaregistry.Codec {
	t.Helper()
	a, err := avro.New()
	must(t, err)
	c, err := schemaregistry.New(f.client(t), a, opts...)
	must(t, err)
	return c
}

func newProto(t testing.TB, f *fake, opts ...schemaregistry.Option) *schemaregistry.Codec {
	t.Helper()
	p, err := protobuf.New()
	must(t, err)
	c, err := schemaregistry.New(f.client(t), p, opts...)
	must(t, err)
	return c
}

func typeOf[T any](name, topic, schema string) event.TypeInfo {
	return event.TypeInfo{Name: name, Version: 1, Schema: schema, GoType: reflect.TypeFor[T](), Topic: topic}
}

// TestFrameAvro compares a frame with bytes computed by hand from the Avro
// spec and Confluent's wire format.
func TestFrameAvro(t *testing.T) {
	f := newFake(t)
	c := newAvro(t, f)
	ctx := context.Background()
	ti := typeOf[OrderV1]("com.example.order", "orders", orderSchemaV1)
	got, err := c.Marshal(ctx, ti, OrderV1{Order: "A", Seq: 2})
	must(t, err)
	want := []byte{
		0x00,                   // magic byte
		0x00, 0x00, 0x00, 0x01, // schema id 1, big-endian (the fake's first id)
		0x02, 'A', // string: zigzag length 1, then the byte
		0x04, // long 2, zigzag
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("frame % x, want % x", got, want)
	}
	ss, ok := f.GetSchema("orders-value", 1)
	if !ok || ss.ID != 1 {
		t.Fatalf("subject orders-value version 1: %+v %v", ss, ok)
	}
	// A larger id, to see the byte order.
	f.SeedSchema("big-value", 1, 0x01020304, ss.Schema)
	got, err = c.Marshal(ctx, typeOf[OrderV1]("com.example.order", "big", orderSchemaV1), OrderV1{Order: "A", Seq: 2})
	must(t, err)
	if want := []byte{0, 1, 2, 3, 4, 0x02, 'A', 0x04}; !bytes.Equal(got, want) {
		t.Fatalf("frame % x, want % x", got, want)
	}
	var back OrderV1
	must(t, c.Unmarshal(ctx, ti, want, &back))
	if back != (OrderV1{Order: "A", Seq: 2}) {
		t.Fatalf("decoded %+v", back)
	}
}

// TestFrameProtobuf checks the message indexes: the single byte 0 for the
// first message of the file, else the zigzag count and path, as Confluent's
// MessageIndexes writes them.
func TestFrameProtobuf(t *testing.T) {
	f := newFake(t)
	c := newProto(t, f)
	ctx := context.Background()
	cases := []struct {
		name    string
		ti      event.TypeInfo
		v       proto.Message
		index   []byte
		payload []byte
	}{
		{"first", typeOf[*testpb.OrderPlaced]("placed", "placed", testpb.OrderProto),
			&testpb.OrderPlaced{Order: "A", Seq: 2}, []byte{0x00},
			[]byte{0x0a, 0x01, 'A', 0x10, 0x02}}, // field 1 len 1 "A", field 2 varint 2
		{"second", typeOf[*testpb.OrderShipped]("shipped", "shipped", testpb.OrderProto),
			&testpb.OrderShipped{Seq: 1}, []byte{0x02, 0x02}, // count 1, index 1
			[]byte{0x10, 0x01}},
		{"nested", typeOf[*testpb.OrderShipped_Parcel]("parcel", "parcel", testpb.OrderProto),
			&testpb.OrderShipped_Parcel{Grams: 3}, []byte{0x04, 0x02, 0x00}, // count 2, path 1.0
			[]byte{0x10, 0x03}},
	}
	for _, tc := range cases {
		got, err := c.Marshal(ctx, tc.ti, tc.v)
		must(t, err)
		// One schema text, one id, whatever the subject.
		want := append([]byte{0x00, 0x00, 0x00, 0x00, 0x01}, tc.index...)
		want = append(want, tc.payload...)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: frame % x, want % x", tc.name, got, want)
			continue
		}
		back := tc.v.ProtoReflect().New().Interface()
		must(t, c.Unmarshal(ctx, tc.ti, got, back))
		if !proto.Equal(back, tc.v) {
			t.Errorf("%s: decoded %v, want %v", tc.name, back, tc.v)
		}
	}
	ss, ok := f.GetSchema("placed-value", 1)
	if !ok || ss.Type.String() != "PROTOBUF" || ss.Schema.Schema != testpb.OrderProto {
		t.Errorf("registered %+v", ss)
	}
	// A frame whose indexes name another message of our file is refused.
	frame, err := c.Marshal(ctx, cases[0].ti, cases[0].v)
	must(t, err)
	frame[5] = 0x02 // not [0]: count 1 ...
	frame = append(frame[:6], append([]byte{0x02}, frame[6:]...)...)
	if err := c.Unmarshal(ctx, cases[0].ti, frame, new(testpb.OrderPlaced)); !errors.Is(err, event.ErrDecode) {
		t.Errorf("indexes [1] read as OrderPlaced: %v, want ErrDecode", err)
	}
}

// TestBadFrames: short, wrong magic byte, bad indexes: ErrBadFrame, which
// is event.ErrDecode and never ErrUnavailable; no registry request.
func TestBadFrames(t *testing.T) {
	f := newFake(t)
	ctx := context.Background()
	pc := newProto(t, f)
	ac := newAvro(t, f)
	pt := typeOf[*testpb.OrderPlaced]("placed", "placed", testpb.OrderProto)
	at := typeOf[OrderV1]("order", "orders", orderSchemaV1)
	for _, bad := range [][]byte{nil, {0}, {0, 0, 0, 0}, {1, 0, 0, 0, 1, 0}, []byte(`{"order":"A"}`)} {
		for name, c := range map[string]*schemaregistry.Codec{"protobuf": pc, "avro": ac} {
			ti, v := at, any(new(OrderV1))
			if name == "protobuf" {
				ti, v = pt, any(new(testpb.OrderPlaced))
			}
			err := c.Unmarshal(ctx, ti, bad, v)
			if !errors.Is(err, schemaregistry.ErrBadFrame) || !errors.Is(err, event.ErrDecode) || errors.Is(err, event.ErrUnavailable) {
				t.Errorf("%s: Unmarshal(% x) = %v, want ErrBadFrame", name, bad, err)
			}
		}
	}
	if n := f.requests.Load(); n != 0 {
		t.Errorf("%d registry requests for bad frames", n)
	}
	// Protobuf indexes that do not parse: a count with no entries.
	_, err := pc.Marshal(ctx, pt, &testpb.OrderPlaced{})
	must(t, err)
	if err := pc.Unmarshal(ctx, pt, []byte{0, 0, 0, 0, 1, 0x04}, new(testpb.OrderPlaced)); !errors.Is(err, schemaregistry.ErrBadFrame) {
		t.Errorf("truncated indexes: %v", err)
	}
	// A count of 2^62 indexes: refused before anything is allocated for it.
	huge := binary.AppendVarint([]byte{0, 0, 0, 0, 1}, 1<<62)
	if err := pc.Unmarshal(ctx, pt, huge, new(testpb.OrderPlaced)); !errors.Is(err, schemaregistry.ErrBadFrame) {
		t.Errorf("huge index count: %v", err)
	}
	if err := pc.Unmarshal(ctx, pt, []byte{0, 0, 0, 0, 1, 0x01, 0x00}, new(testpb.OrderPlaced)); !errors.Is(err, schemaregistry.ErrBadFrame) {
		t.Errorf("negative index count: %v", err)
	}
}

// TestErrors: what each registry failure becomes.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	at := typeOf[OrderV1]("order", "orders", orderSchemaV1)

	t.Run("UnknownSchema", func(t *testing.T) {
		f := newFake(t)
		err := newAvro(t, f).Unmarshal(ctx, at, []byte{0, 0, 0, 0x30, 0x39, 0x02, 'A', 0x04}, new(OrderV1))
		if !errors.Is(err, schemaregistry.ErrUnknownSchema) || !errors.Is(err, event.ErrDecode) || errors.Is(err, event.ErrUnavailable) {
			t.Fatalf("unknown id: %v", err)
		}
	})
	t.Run("WrongSchemaType", func(t *testing.T) {
		f := newFake(t)
		frame, err := newAvro(t, f).Marshal(ctx, at, OrderV1{Order: "A"})
		must(t, err)
		err = newProto(t, f).Unmarshal(ctx, typeOf[*testpb.OrderPlaced]("placed", "orders", testpb.OrderProto), frame, new(testpb.OrderPlaced))
		if !errors.Is(err, schemaregistry.ErrUnknownSchema) {
			t.Fatalf("an Avro id read by the Protobuf codec: %v", err)
		}
	})
	t.Run("Down", func(t *testing.T) {
		f := newFake(t)
		c := newAvro(t, f)
		f.down.Store(true)
		if _, err := c.Marshal(ctx, at, OrderV1{}); !errors.Is(err, event.ErrUnavailable) {
			t.Errorf("Marshal with the registry down: %v, want ErrUnavailable", err)
		}
		if err := c.Unmarshal(ctx, at, []byte{0, 0, 0, 0, 1, 0x02, 'A', 0x04}, new(OrderV1)); !errors.Is(err, event.ErrUnavailable) || errors.Is(err, event.ErrDecode) {
			t.Errorf("Unmarshal with the registry down: %v, want ErrUnavailable", err)
		}
		f.down.Store(false)
		if _, err := c.Marshal(ctx, at, OrderV1{}); err != nil {
			t.Errorf("Marshal after the registry is back: %v (a failure must not be cached)", err)
		}
	})
	t.Run("Unreachable", func(t *testing.T) {
		f := newFake(t)
		c := newAvro(t, f)
		f.Close()
		if err := c.Unmarshal(ctx, at, []byte{0, 0, 0, 0, 1, 0x02, 'A', 0x04}, new(OrderV1)); !errors.Is(err, event.ErrUnavailable) {
			t.Errorf("Unmarshal with the registry gone: %v, want ErrUnavailable", err)
		}
	})
	t.Run("Incompatible", func(t *testing.T) {
		f := newFake(t)
		f.setIncompatible("orders-value")
		c := newAvro(t, f)
		for range 2 { // not cached: each attempt asks again, and fails again
			_, err := c.Marshal(ctx, at, OrderV1{})
			if !errors.Is(err, schemaregistry.ErrIncompatible) || errors.Is(err, event.ErrUnavailable) {
				t.Fatalf("incompatible schema: %v", err)
			}
		}
		if f.SubjectExists("orders-value") {
			t.Error("an incompatible schema was registered")
		}
	})
	t.Run("NoAutoRegister", func(t *testing.T) {
		f := newFake(t)
		c := newAvro(t, f, schemaregistry.WithAutoRegister(false))
		if _, err := c.Marshal(ctx, at, OrderV1{}); !errors.Is(err, schemaregistry.ErrNotRegistered) {
			t.Fatalf("unregistered schema without auto-registration: %v", err)
		}
		_, _, err := f.RegisterSchema("orders-value", srSchema(orderSchemaV1))
		must(t, err)
		if _, err := c.Marshal(ctx, at, OrderV1{}); err != nil {
			t.Fatalf("after registration: %v", err)
		}
	})
	t.Run("NoTopic", func(t *testing.T) {
		f := newFake(t)
		ti := at
		ti.Topic = ""
		if _, err := newAvro(t, f).Marshal(ctx, ti, OrderV1{}); !errors.Is(err, schemaregistry.ErrSubject) {
			t.Fatalf("no topic: %v", err)
		}
	})
}
