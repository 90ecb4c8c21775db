package cdc_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/internal/testenv"
)

type tracer struct {
	mu       sync.Mutex
	starts   []cdc.TracePublishStartData
	ends     []cdc.TracePublishEndData
	confirms []cdc.TraceConfirmData
}

type ctxKey struct{}

func (tr *tracer) TracePublishStart(ctx context.Context, d cdc.TracePublishStartData) context.Context {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.starts = append(tr.starts, d)
	return context.WithValue(ctx, ctxKey{}, len(tr.starts))
}

func (tr *tracer) TracePublishEnd(ctx context.Context, d cdc.TracePublishEndData) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if ctx.Value(ctxKey{}) != len(tr.starts) {
		d.Err = errors.New("end without its start's context")
	}
	tr.ends = append(tr.ends, d)
}

func (tr *tracer) TraceConfirm(_ context.Context, d cdc.TraceConfirmData) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.confirms = append(tr.confirms, d)
}

func TestTracer(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table items (id int primary key)`)
	e.exec(t, `insert into items values (1)`)
	r := newRecorder(t)
	tr := &tracer{}
	s, _ := e.start(t, r, cdc.WithTables("items"), cdc.WithTracer(tr))
	e.streaming(t, s)
	r.fail.Store(true)
	e.exec(t, `insert into items values (2)`)
	testenv.Eventually(t, 10*time.Second, "a failed publish", func() bool { return s.Stats().PublishFailures > 0 })
	r.fail.Store(false)
	testenv.Eventually(t, 10*time.Second, "the change", func() bool { return s.Stats().Changes == 1 })
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.starts) < 3 || len(tr.starts) != len(tr.ends) {
		t.Fatalf("%d starts, %d ends", len(tr.starts), len(tr.ends))
	}
	if st := tr.starts[0]; !st.Snapshot || st.Attempt != 1 || len(st.Messages) != 1 || tr.ends[0].Err != nil {
		t.Errorf("snapshot publish traced as %+v, %+v", st, tr.ends[0])
	}
	last := len(tr.starts) - 1
	if st := tr.starts[last]; st.Snapshot || st.Attempt < 2 || tr.ends[last].Err != nil || tr.ends[1].Err == nil {
		t.Errorf("retried publish traced as %+v, %+v; first attempt %+v", st, tr.ends[last], tr.ends[1])
	}
	if n := len(tr.confirms); n == 0 || tr.confirms[n-1].LSN > s.Stats().ConfirmedLSN || tr.confirms[n-1].LSN == 0 {
		t.Errorf("confirms %+v, confirmed %s", tr.confirms, s.Stats().ConfirmedLSN)
	}
	if _, err := cdc.New(context.Background(), e.dsn, r, cdc.WithTracer(struct{}{})); !errors.Is(err, cdc.ErrInvalidOption) {
		t.Errorf("a tracer implementing nothing: %v", err)
	}
}
