package avro_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/avro"
	"github.com/go-integration/patterns/event/eventtest"
)

const orderSchema = `{"type":"record","name":"Order","namespace":"com.example","fields":[
	{"name":"order","type":"string"},
	{"name":"seq","type":"long"},
	{"name":"items","type":{"type":"array","items":"string"}},
	{"name":"total","type":"double"},
	{"name":"note","type":["null","string"],"default":null},
	{"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}}]}`

type Order struct {
	Order string    `avro:"order"`
	Seq   int64     `avro:"seq"`
	Items []string  `avro:"items"`
	Total float64   `avro:"total"`
	Note  *string   `avro:"note"`
	At    time.Time `avro:"at"`
}

const orderV2Schema = `{"type":"record","name":"Order","namespace":"com.example","fields":[
	{"name":"order","type":"string"},
	{"name":"seq","type":"long"},
	{"name":"channel","type":"string","default":"web"}]}`

type OrderV2 struct {
	Order   string `avro:"order"`
	Seq     int64  `avro:"seq"`
	Channel string `avro:"channel"`
}

func TestConformance(t *testing.T) {
	note := "fragile"
	at := time.Date(2026, 12, 1, 1, 2, 3, 4000, time.UTC)
	eventtest.Run(t, eventtest.Harness{
		Codec: func(t *testing.T) event.Codec {
			c, err := avro.New()
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		Cases: []eventtest.Case{
			{Name: "full", Type: event.TypeInfo{Name: "order", Schema: orderSchema},
				Value: Order{Order: "o-1", Seq: 7, Items: []string{"tent"}, Total: 12.5, Note: &note, At: at}},
			{Name: "pointer", Type: event.TypeInfo{Name: "order2", Schema: orderSchema},
				Value: &Order{Order: "o-2", Items: []string{}, At: at}},
			{Name: "v2", Type: event.TypeInfo{Name: "v2", Schema: orderV2Schema},
				Value: OrderV2{Order: "o-3", Seq: 1, Channel: "shop"}},
		},
	})
}

// TestUnmarshalWriter reads version-1 data with the version-2 schema by
// Avro's resolution rules: the added field takes its default.
func TestUnmarshalWriter(t *testing.T) {
	ctx := context.Background()
	c, err := avro.New()
	if err != nil {
		t.Fatal(err)
	}
	const v1 = `{"type":"record","name":"Order","namespace":"com.example","fields":[
		{"name":"order","type":"string"},{"name":"seq","type":"int"}]}`
	data, err := c.Marshal(ctx, event.TypeInfo{Name: "o", Schema: v1}, struct {
		Order string `avro:"order"`
		Seq   int32  `avro:"seq"`
	}{"o-1", 5})
	if err != nil {
		t.Fatal(err)
	}
	var got OrderV2
	if err := c.UnmarshalWriter(ctx, event.TypeInfo{Name: "o", Version: 2, Schema: orderV2Schema}, v1, data, &got); err != nil {
		t.Fatal(err)
	}
	if got != (OrderV2{Order: "o-1", Seq: 5, Channel: "web"}) { // int promoted to long, default filled
		t.Errorf("resolved %+v", got)
	}
	// A writer the reader cannot read: a field without default missing.
	const noSeq = `{"type":"record","name":"Order","namespace":"com.example","fields":[{"name":"order","type":"string"}]}`
	if err := c.UnmarshalWriter(ctx, event.TypeInfo{Name: "o", Schema: orderV2Schema}, noSeq, []byte{0x02, 'A'}, &got); !errors.Is(err, avro.ErrSchema) {
		t.Errorf("incompatible writer: %v, want ErrSchema", err)
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	c, err := avro.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Marshal(ctx, event.TypeInfo{Name: "o"}, OrderV2{}); !errors.Is(err, avro.ErrNoSchema) {
		t.Errorf("no schema: %v", err)
	}
	if _, err := c.Marshal(ctx, event.TypeInfo{Name: "o", Schema: `{"type":"record"`}, OrderV2{}); !errors.Is(err, avro.ErrSchema) {
		t.Errorf("bad schema: %v", err)
	}
	ti := event.TypeInfo{Name: "o", Schema: orderV2Schema}
	data, err := c.Marshal(ctx, ti, OrderV2{Order: "A", Seq: 1, Channel: "x"})
	if err != nil {
		t.Fatal(err)
	}
	var v OrderV2
	if err := c.Unmarshal(ctx, ti, append(data, 0), &v); !errors.Is(err, avro.ErrTrailingBytes) {
		t.Errorf("trailing byte: %v", err)
	}
	lax, _ := avro.New(avro.WithTrailingBytes())
	if err := lax.Unmarshal(ctx, ti, append(data, 0), &v); err != nil {
		t.Errorf("trailing byte with WithTrailingBytes: %v", err)
	}
	if n, err := c.RecordName(ti); err != nil || n != "com.example.Order" {
		t.Errorf("RecordName %q %v", n, err)
	}
}
