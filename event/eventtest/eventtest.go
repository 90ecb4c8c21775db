// Package eventtest is the conformance suite for event.Codec
// implementations: the JSON codec passes it, and so must the Protobuf, Avro
// and Schema Registry codecs in other packages.
//
//	func TestConformance(t *testing.T) {
//		eventtest.Run(t, eventtest.Harness{
//			Codec: func(t *testing.T) event.Codec { return mycodec.New(...) },
//			Cases: []eventtest.Case{{Name: "order", Type: event.TypeInfo{Name: "com.example.order", Version: 1}, Value: Order{ID: 1}}},
//		})
//	}
package eventtest

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"reflect"
	"sync"
	"testing"

	"github.com/go-integration/patterns/event"
)

// Harness builds the codec under test and says what it encodes.
type Harness struct {
	// Codec returns the codec under test; called once per test.
	Codec func(t *testing.T) event.Codec
	// Cases are values the codec must round-trip; at least one.
	Cases []Case
	// Features switch off checks a codec cannot pass.
	Features Features
}

// Case is one value of one registered type.
type Case struct {
	Name string
	// Type is given to Marshal and Unmarshal as registered; a nil GoType is
	// filled from Value, a zero Version with 1.
	Type event.TypeInfo
	// Value is a T as Publish would pass it (for a Protobuf codec, the
	// *pb.Message itself).
	Value any
	// Equal compares the decoded T with Value; nil means reflect.DeepEqual
	// (Protobuf codecs pass proto.Equal).
	Equal func(got, want any) bool
}

// Features are promises a codec may not keep.
type Features struct {
	// AcceptsAnyBytes: every byte string decodes (a raw-bytes codec), so
	// garbage and truncated payloads are not refused.
	AcceptsAnyBytes bool
	// TruncationUndetected: a truncated payload may decode without error
	// (some binary formats end where the bytes end).
	TruncationUndetected bool
	// EmptyIsValid: the empty payload is a value (Protobuf's message with
	// every field at its default), so it is not offered as garbage.
	EmptyIsValid bool
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Codec == nil || len(h.Cases) == 0 {
		t.Fatal("eventtest: Harness needs Codec and at least one Case")
	}
	cases := make([]Case, len(h.Cases))
	for i, c := range h.Cases {
		if c.Type.GoType == nil {
			c.Type.GoType = reflect.TypeOf(c.Value)
		}
		if c.Type.Version == 0 {
			c.Type.Version = 1
		}
		if c.Equal == nil {
			c.Equal = reflect.DeepEqual
		}
		if c.Name == "" {
			c.Name = fmt.Sprintf("case%d", i)
		}
		cases[i] = c
	}
	t.Run("ContentType", func(t *testing.T) {
		ct := h.Codec(t).ContentType()
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			t.Errorf("ContentType %q is not a media type: %v", ct, err)
		}
	})
	t.Run("RoundTrip", func(t *testing.T) {
		c := h.Codec(t)
		for _, tc := range cases {
			got, err := roundTrip(c, tc)
			if err != nil {
				t.Errorf("%s: %v", tc.Name, err)
			} else if !tc.Equal(got, tc.Value) {
				t.Errorf("%s: decoded %#v, want %#v", tc.Name, got, tc.Value)
			}
		}
	})
	t.Run("Garbage", func(t *testing.T) {
		if h.Features.AcceptsAnyBytes {
			t.Skip("codec accepts any bytes")
		}
		c := h.Codec(t)
		for _, tc := range cases {
			for _, bad := range [][]byte{nil, {0xff, 0x00, 0x13, 0x37}, []byte("{\"unterminated")} {
				if bad == nil && h.Features.EmptyIsValid {
					continue
				}
				err := unmarshal(c, tc, bad)
				if err == nil {
					t.Errorf("%s: Unmarshal(%q) accepted garbage", tc.Name, bad)
				} else if errors.Is(err, event.ErrUnavailable) {
					t.Errorf("%s: Unmarshal(%q) = %v: garbage is permanent, not ErrUnavailable", tc.Name, bad, err)
				}
			}
		}
	})
	t.Run("Truncated", func(t *testing.T) {
		if h.Features.AcceptsAnyBytes || h.Features.TruncationUndetected {
			t.Skip("codec cannot detect truncation")
		}
		c := h.Codec(t)
		for _, tc := range cases {
			data, err := c.Marshal(context.Background(), tc.Type, tc.Value)
			if err != nil {
				t.Fatalf("%s: Marshal: %v", tc.Name, err)
			}
			if len(data) < 2 {
				continue
			}
			if err := unmarshal(c, tc, data[:len(data)/2]); err == nil {
				t.Errorf("%s: Unmarshal accepted the first half of %q", tc.Name, data)
			}
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		c := h.Codec(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8*len(cases))
		for range 8 {
			wg.Go(func() {
				for range 25 {
					for _, tc := range cases {
						got, err := roundTrip(c, tc)
						if err == nil && !tc.Equal(got, tc.Value) {
							err = fmt.Errorf("decoded %#v", got)
						}
						if err != nil {
							errs <- fmt.Errorf("%s: %w", tc.Name, err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// target returns where Unmarshal decodes a case's value and how to read
// it back, as event.Router does: a *T, or a new T when T is a pointer.
func target(gt reflect.Type) (ptr any, value func() any) {
	if gt.Kind() == reflect.Pointer {
		v := reflect.New(gt.Elem())
		return v.Interface(), func() any { return v.Interface() }
	}
	v := reflect.New(gt)
	return v.Interface(), func() any { return v.Elem().Interface() }
}

func unmarshal(c event.Codec, tc Case, data []byte) error {
	ptr, _ := target(tc.Type.GoType)
	return c.Unmarshal(context.Background(), tc.Type, data, ptr)
}

func roundTrip(c event.Codec, tc Case) (any, error) {
	data, err := c.Marshal(context.Background(), tc.Type, tc.Value)
	if err != nil {
		return nil, fmt.Errorf("marshal: %w", err)
	}
	ptr, value := target(tc.Type.GoType)
	if err := c.Unmarshal(context.Background(), tc.Type, data, ptr); err != nil {
		return nil, fmt.Errorf("unmarshal %q: %w", data, err)
	}
	return value(), nil
}
