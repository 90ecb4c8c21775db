package event_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/event"
)

// TestUpcastChain: upcasters run step by step from the version sent to the
// registered one; a version below the chain is refused with ErrVersion; an
// upcaster whose dependency is down makes the message retried.
func TestUpcastChain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type V3 struct {
		Path string `json:"path"`
	}
	step := func(tag string) event.Upcaster {
		return event.UpcastJSON(func(v V3) (V3, error) { return V3{Path: v.Path + tag}, nil })
	}
	encodeAt := func(version int, path string) broker.Message {
		t.Helper()
		r, err := event.NewRegistry(event.WithSource("/old"))
		must(t, err)
		must(t, event.Register[V3](r, "com.example.path", event.WithVersion(version)))
		m, err := event.Encode(ctx, r, "t", "k", V3{Path: path})
		must(t, err)
		return m
	}

	reg, err := event.NewRegistry()
	must(t, err)
	down := true
	must(t, event.Register[V3](reg, "com.example.path", event.WithVersion(4),
		event.WithUpcaster(2, step(">3")),
		event.WithUpcaster(3, func(ctx context.Context, b []byte) ([]byte, error) {
			if down {
				return nil, fmt.Errorf("lookup table: %w", event.ErrUnavailable)
			}
			return step(">4")(ctx, b)
		})))
	rt, err := event.NewRouter(reg)
	must(t, err)
	var got event.Event[V3]
	must(t, event.Handle(rt, func(_ context.Context, e event.Event[V3]) error { got = e; return nil }))
	h := rt.Handler()

	err = h(ctx, encodeAt(2, "v2"))
	if !errors.Is(err, event.ErrUnavailable) || broker.IsPermanent(err) {
		t.Fatalf("upcaster down: %v, want a transient ErrUnavailable", err)
	}
	down = false
	must(t, h(ctx, encodeAt(2, "v2")))
	if got.Data.Path != "v2>3>4" || got.Version != 2 {
		t.Errorf("from v2: %+v", got)
	}
	must(t, h(ctx, encodeAt(3, "v3")))
	if got.Data.Path != "v3>4" || got.Version != 3 {
		t.Errorf("from v3: %+v", got)
	}
	must(t, h(ctx, encodeAt(4, "v4")))
	if got.Data.Path != "v4" || got.Version != 4 {
		t.Errorf("from v4: %+v", got)
	}
	err = h(ctx, encodeAt(1, "v1"))
	if !errors.Is(err, event.ErrVersion) || !broker.IsPermanent(err) || !strings.Contains(err.Error(), "no upcaster from version 1") {
		t.Errorf("below the chain: %v", err)
	}
	if s := rt.Stats(); s.Handled != 3 || s.Failed != 1 || s.Rejected != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestRegisterWhileRouting: Register and Handle may run while the Router
// handles messages (run with -race).
func TestRegisterWhileRouting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := registry(t)
	rt, err := event.NewRouter(reg, event.WithUnknown(event.Skip))
	must(t, err)
	must(t, event.Handle(rt, func(context.Context, event.Event[OrderPlaced]) error { return nil }))
	m, err := event.Encode(ctx, reg, "t", "k", OrderPlaced{})
	must(t, err)
	type A struct{}
	type B struct{}
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 200 {
			if err := rt.Handler()(ctx, m); err != nil {
				t.Error(err)
				return
			}
			_, _ = reg.Lookup(typePlaced)
		}
	})
	wg.Go(func() {
		// t.Error, not t.Fatal: this is not the test's goroutine.
		if err := event.Register[A](reg, "com.example.a"); err != nil {
			t.Error(err)
		}
		if err := event.Handle(rt, func(context.Context, event.Event[A]) error { return nil }); err != nil {
			t.Error(err)
		}
		if err := event.Register[B](reg, "com.example.b"); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	if info, ok := reg.Lookup("com.example.b"); !ok || info.Name != "com.example.b" || len(reg.Types()) != 5 {
		t.Errorf("Lookup %+v %v, %d types", info, ok, len(reg.Types()))
	}
}
