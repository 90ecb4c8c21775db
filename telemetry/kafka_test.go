package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
	"github.com/go-integration/patterns/telemetry"
)

// ktRig is a Telemetry on the SDK's manual metric reader, and a kfake
// cluster (or KAFKA_BROKERS).
type ktRig struct {
	tel     *telemetry.Telemetry
	reader  *sdkmetric.ManualReader
	brokers []string
	admin   *kafka.Admin
}

func newKTRig(t *testing.T) *ktRig {
	t.Helper()
	r := &ktRig{reader: sdkmetric.NewManualReader(), brokers: kafkaenv.Brokers(t)}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	var err error
	if r.tel, err = telemetry.New(telemetry.WithMeterProvider(mp)); err != nil {
		t.Fatal(err)
	}
	if r.admin, err = kafka.NewAdmin(r.brokers, kafka.WithLogger(ktQuiet())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.admin.Close() })
	return r
}

func ktQuiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func (r *ktRig) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

// ktGauge returns the gauge's value per partition id.
func ktGauge(t *testing.T, rm metricdata.ResourceMetrics, name, topic, group string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	m, ok := findMetric(rm, name)
	if !ok {
		return out
	}
	g, ok := m.Data.(metricdata.Gauge[int64])
	if !ok {
		t.Fatalf("%s is a %T, want an int64 gauge", name, m.Data)
	}
	for _, dp := range g.DataPoints {
		if v, _ := dp.Attributes.Value("messaging.system"); v.AsString() != "kafka" {
			t.Errorf("%s point %v: messaging.system not kafka", name, dp.Attributes.ToSlice())
		}
		tp, _ := dp.Attributes.Value("messaging.destination.name")
		gr, _ := dp.Attributes.Value("messaging.consumer.group.name")
		if tp.AsString() != topic || gr.AsString() != group {
			continue
		}
		p, _ := dp.Attributes.Value("messaging.destination.partition.id")
		out[p.AsString()] = dp.Value
	}
	return out
}

// ktSum returns the int64 sum's value for the points carrying want.
func ktSum(t *testing.T, rm metricdata.ResourceMetrics, name string, want ...attribute.KeyValue) int64 {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return 0
	}
	s, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s is a %T, want an int64 sum", name, m.Data)
	}
	var n int64
	for _, dp := range s.DataPoints {
		if ktMatch(dp.Attributes, want) {
			n += dp.Value
		}
	}
	return n
}

func ktMatch(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// TestKafkaStuckPartitionMetrics: a handler blocking on one key stalls its
// partition while the others go on. The stuck gauge of that partition goes
// to 1 (the others stay 0, with no lag), its lag gauge shows the records
// waiting, the stuck-events counter counts one; releasing the handler sets
// the gauge back to 0 and records the episode's duration. Rebalances are
// counted by event, and the gauges drop the partitions once Subscribe ends.
func TestKafkaStuckPartitionMetrics(t *testing.T) {
	r := newKTRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topic := testenv.Name(t, "kt")
	if err := r.admin.EnsureTopic(ctx, kafka.Topic{Name: topic, Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	pub, err := kafka.NewPublisher(r.brokers, kafka.WithLogger(ktQuiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	msgs := []broker.Message{{Key: "blocked", Payload: []byte("x")}}
	for i := range 30 {
		msgs = append(msgs, broker.Message{Key: fmt.Sprintf("k%d", i), Payload: []byte("x")})
	}
	if err := pub.Publish(ctx, topic, msgs...); err != nil {
		t.Fatal(err)
	}

	const stuckAfter = 300 * time.Millisecond
	s, err := kafka.NewSubscriber(r.brokers, kafka.WithLogger(ktQuiet()), kafka.WithStuckAfter(stuckAfter),
		kafka.WithTracer(r.tel.Kafka()), kafka.WithGroupTimeouts(2*time.Second, 10*time.Second, 100*time.Millisecond),
		kafka.WithCommitInterval(200*time.Millisecond), kafka.WithDrainTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	unregister, err := r.tel.ObserveKafka(s)
	if err != nil {
		t.Fatal(err)
	}

	release := make(chan struct{})
	blocked := make(chan *kgo.Record, 1)
	handled := make(chan struct{}, len(msgs))
	subCtx, stopSub := context.WithCancel(ctx)
	subDone := make(chan error, 1)
	go func() {
		subDone <- s.Subscribe(subCtx, broker.Subscription{Topic: topic, Group: "billing", Concurrency: 4}, func(ctx context.Context, m broker.Message) error {
			if m.Key == "blocked" {
				blocked <- m.Raw.(*kgo.Record)
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			handled <- struct{}{}
			return nil
		})
	}()
	var rec *kgo.Record
	select {
	case rec = <-blocked:
	case <-ctx.Done():
		t.Fatal("the blocked record never reached its handler")
	}
	for range 30 {
		select {
		case <-handled:
		case <-ctx.Done():
			t.Fatal("the other records were not handled")
		}
	}
	part := strconv.Itoa(int(rec.Partition))
	var rm metricdata.ResourceMetrics
	testenv.Eventually(t, 10*time.Second, "the stuck gauge at 1", func() bool {
		rm = r.collect(t)
		return ktGauge(t, rm, "patterns.kafka.partition.stuck", topic, "billing")[part] == 1
	})
	stuck := ktGauge(t, rm, "patterns.kafka.partition.stuck", topic, "billing")
	lag := ktGauge(t, rm, "patterns.kafka.consumer.lag", topic, "billing")
	var wantLag int64
	for _, ps := range s.Partitions() {
		if ps.Partition == rec.Partition {
			wantLag = ps.Lag
		}
	}
	if wantLag < 1 || lag[part] != wantLag {
		t.Errorf("lag gauge %v, want %d for partition %s (Partitions)", lag, wantLag, part)
	}
	for p, v := range stuck {
		if p != part && (v != 0 || lag[p] != 0) {
			t.Errorf("partition %s: stuck %d, lag %d; want a healthy partition", p, v, lag[p])
		}
	}
	partAttrs := []attribute.KeyValue{attribute.String("messaging.system", "kafka"), attribute.String("messaging.destination.name", topic),
		attribute.String("messaging.consumer.group.name", "billing"), attribute.String("messaging.destination.partition.id", part)}
	if n := ktSum(t, rm, "patterns.kafka.partition.stuck_events", partAttrs...); n != 1 {
		t.Errorf("stuck events for partition %s: %d, want 1", part, n)
	}
	if n := ktSum(t, rm, "patterns.kafka.partition.stuck_events"); n != 1 {
		t.Errorf("stuck events in all: %d, want 1", n)
	}

	close(release)
	testenv.Eventually(t, 10*time.Second, "the stuck gauge back at 0", func() bool {
		rm = r.collect(t)
		g := ktGauge(t, rm, "patterns.kafka.partition.stuck", topic, "billing")
		v, ok := g[part]
		return ok && v == 0
	})
	m, ok := findMetric(rm, "patterns.kafka.partition.stuck_duration")
	if !ok {
		t.Fatal("no stuck_duration histogram")
	}
	h := m.Data.(metricdata.Histogram[float64])
	if len(h.DataPoints) != 1 || h.DataPoints[0].Count != 1 || h.DataPoints[0].Sum < stuckAfter.Seconds() ||
		!ktMatch(h.DataPoints[0].Attributes, append(partAttrs, attribute.Bool("patterns.kafka.partition.released", false))) || m.Unit != "s" {
		t.Errorf("stuck_duration %+v (unit %q), want one episode of at least %v, not released", h.DataPoints, m.Unit, stuckAfter)
	}

	stopSub()
	if err := <-subDone; err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	rm = r.collect(t)
	if g := ktGauge(t, rm, "patterns.kafka.consumer.lag", topic, "billing"); len(g) != 0 {
		t.Errorf("lag gauge after Subscribe returned: %v, want no partitions", g)
	}
	group := []attribute.KeyValue{attribute.String("messaging.destination.name", topic), attribute.String("messaging.consumer.group.name", "billing")}
	if n := ktSum(t, rm, "patterns.kafka.rebalance.partitions", append(group, attribute.String("patterns.kafka.rebalance.event", "assigned"))...); n != 3 {
		t.Errorf("assigned partitions counted: %d, want 3", n)
	}
	if n := ktSum(t, rm, "patterns.kafka.rebalance.partitions", append(group, attribute.String("patterns.kafka.rebalance.event", "revoked"))...); n != 3 {
		t.Errorf("revoked partitions counted: %d, want 3 (on stop)", n)
	}
	if n := ktSum(t, rm, "patterns.kafka.partition.stuck_events"); n != 1 {
		t.Errorf("stuck events after the run: %d, want 1", n)
	}
	if err := unregister(); err != nil {
		t.Fatal(err)
	}
}

// TestKafkaObserveBadInput: ObserveKafka refuses a nil subscriber, and the
// Kafka tracer is accepted by a Subscriber's WithTracer.
func TestKafkaObserveBadInput(t *testing.T) {
	tel, err := telemetry.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tel.ObserveKafka(nil); !errors.Is(err, telemetry.ErrInvalidOption) {
		t.Errorf("ObserveKafka(nil): %v, want ErrInvalidOption", err)
	}
	s, err := kafka.NewSubscriber([]string{"127.0.0.1:1"}, kafka.WithTracer(tel.Kafka()), kafka.WithTracer(tel.Broker()))
	if err != nil {
		t.Fatalf("NewSubscriber with the Kafka and Broker tracers: %v", err)
	}
	defer s.Close()
	// No provider: the no-op instruments take every event.
	k := tel.Kafka().(interface {
		kafka.PartitionHealthTracer
		kafka.RebalanceTracer
	})
	ctx := context.Background()
	k.TracePartitionStuck(ctx, kafka.TracePartitionStuckData{Topic: "t", Group: "g", Partition: 1, Lag: 3})
	k.TracePartitionRecovered(ctx, kafka.TracePartitionRecoveredData{Topic: "t", Partition: 1, StuckFor: time.Minute, Released: true})
	k.TraceRebalance(ctx, kafka.TraceRebalanceData{Event: kafka.PartitionsLost, Topic: "t", Group: "g", Partitions: []int32{0, 1}})
	stop, err := tel.ObserveKafka(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
