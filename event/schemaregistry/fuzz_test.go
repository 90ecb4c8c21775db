package schemaregistry_test

import (
	"context"
	"errors"
	"testing"

	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/protobuf/testpb"
)

// FuzzUnmarshal feeds arbitrary frames to both framed codecs: no panic, and
// with the registry up no error is transient (every one dead-letters).
//
//	go test -run '^$' -fuzz FuzzUnmarshal -fuzztime 30s ./event/schemaregistry
func FuzzUnmarshal(f *testing.F) {
	reg := newFake(f)
	ctx := context.Background()
	ac, pc := newAvro(f, reg), newProto(f, reg)
	at := typeOf[Order](typeOrder, "orders", orderSchemaV2)
	pt := typeOf[*testpb.OrderShipped](typeShipped, "orders-pb", testpb.OrderProto)
	a, err := ac.Marshal(ctx, at, Order{Order: "o-1", Seq: 3, Channel: "shop"})
	must(f, err)
	p, err := pc.Marshal(ctx, pt, &testpb.OrderShipped{Order: "o-1", Parcels: []*testpb.OrderShipped_Parcel{{Id: "p", Grams: 1}}})
	must(f, err)
	f.Add(a)
	f.Add(p)
	f.Add([]byte{0, 0, 0, 0, 2, 0x04, 0x02, 0x00, 0x0a, 0x01, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, err := range []error{
			ac.Unmarshal(ctx, at, data, new(Order)),
			pc.Unmarshal(ctx, pt, data, new(testpb.OrderShipped)),
		} {
			if errors.Is(err, event.ErrUnavailable) {
				t.Fatalf("frame % x: %v is transient", data, err)
			}
		}
	})
}
