package avro_test

import (
	"context"
	"fmt"
	"log"

	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/avro"
)

// The schema is given at registration; the struct maps to it by its avro
// tags. The payload is Avro's binary encoding.
func Example() {
	const schema = `{"type":"record","name":"OrderPlaced","namespace":"com.example",
		"fields":[{"name":"order","type":"string"},{"name":"seq","type":"long"}]}`
	type OrderPlaced struct {
		Order string `avro:"order"`
		Seq   int64  `avro:"seq"`
	}
	codec, err := avro.New()
	if err != nil {
		log.Fatal(err)
	}
	reg, err := event.NewRegistry(event.WithSource("/orders"))
	if err != nil {
		log.Fatal(err)
	}
	if err := event.Register[OrderPlaced](reg, "com.example.order.placed", event.WithCodec(codec), event.WithSchema(schema)); err != nil {
		log.Fatal(err)
	}
	m, err := event.Encode(context.Background(), reg, "orders", "o-1", OrderPlaced{Order: "o-1", Seq: 2})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s % x\n", m.Header["content-type"], m.Payload)
	// Output: application/avro 06 6f 2d 31 04
}
