package schemaregistry_test

import (
	"context"
	"errors"
	"testing"

	"github.com/go-integration/patterns/event/avro"
	"github.com/go-integration/patterns/event/protobuf/testpb"
	"github.com/go-integration/patterns/event/schemaregistry"
)

func TestNewChecks(t *testing.T) {
	f := newFake(t)
	a, _ := avro.New()
	for name, err := range map[string]error{
		"nil client": func() error { _, err := schemaregistry.New(nil, a); return err }(),
		"nil format": func() error { _, err := schemaregistry.New(f.client(t), nil); return err }(),
		"nil option": func() error { _, err := schemaregistry.New(f.client(t), a, nil); return err }(),
		"strategy": func() error {
			_, err := schemaregistry.New(f.client(t), a, schemaregistry.WithSubjectStrategy(7))
			return err
		}(),
	} {
		if !errors.Is(err, schemaregistry.ErrInvalidOption) {
			t.Errorf("%s: %v, want ErrInvalidOption", name, err)
		}
	}
}

// TestSubjects: the three naming strategies, and one lookup per subject
// whatever the topic under RecordName.
func TestSubjects(t *testing.T) {
	ctx := context.Background()
	at := typeOf[OrderV1](typeOrder, "orders", orderSchemaV1)
	pt := typeOf[*testpb.OrderShipped_Parcel]("parcel", "parcels", testpb.OrderProto)
	for _, tc := range []struct {
		s          schemaregistry.SubjectStrategy
		avro, prot string
	}{
		{schemaregistry.TopicName, "orders-value", "parcels-value"},
		{schemaregistry.RecordName, "com.example.Order", "patterns.event.testpb.OrderShipped.Parcel"},
		{schemaregistry.TopicRecordName, "orders-com.example.Order", "parcels-patterns.event.testpb.OrderShipped.Parcel"},
	} {
		f := newFake(t)
		if got, err := newAvro(t, f, schemaregistry.WithSubjectStrategy(tc.s)).Subject(at); err != nil || got != tc.avro {
			t.Errorf("%v: Avro subject %q %v, want %q", tc.s, got, err, tc.avro)
		}
		if got, err := newProto(t, f, schemaregistry.WithSubjectStrategy(tc.s)).Subject(pt); err != nil || got != tc.prot {
			t.Errorf("%v: Protobuf subject %q %v, want %q", tc.s, got, err, tc.prot)
		}
	}
	f := newFake(t)
	c := newAvro(t, f, schemaregistry.WithSubjectStrategy(schemaregistry.RecordName))
	for _, topic := range []string{"a", "b", "c", ""} {
		ti := at
		ti.Topic = topic
		if _, err := c.Marshal(ctx, ti, OrderV1{}); err != nil {
			t.Fatal(err)
		}
	}
	if s := c.Stats(); s.Requests != 3 || s.Registered != 1 || s.Encoded != 4 {
		t.Errorf("RecordName over four topics: %+v, want one lookup, check and registration", s)
	}
	if !f.SubjectExists("com.example.Order") {
		t.Error("subject com.example.Order not registered")
	}
}

// TestSchemaID: resolving at start-up caches the id for the first publish,
// and reports an incompatible schema there.
func TestSchemaID(t *testing.T) {
	ctx := context.Background()
	f := newFake(t)
	c := newAvro(t, f)
	at := typeOf[OrderV1](typeOrder, "orders", orderSchemaV1)
	id, err := c.SchemaID(ctx, at)
	if err != nil || id != 1 {
		t.Fatalf("SchemaID = %d, %v", id, err)
	}
	before := f.requests.Load()
	if _, err := c.Marshal(ctx, at, OrderV1{}); err != nil {
		t.Fatal(err)
	}
	if n := f.requests.Load() - before; n != 0 {
		t.Errorf("%d requests on the first Marshal after SchemaID", n)
	}
	f.setIncompatible("other-value")
	ot := at
	ot.Topic = "other"
	if _, err := c.SchemaID(ctx, ot); !errors.Is(err, schemaregistry.ErrIncompatible) {
		t.Errorf("SchemaID of an incompatible schema: %v", err)
	}
}
