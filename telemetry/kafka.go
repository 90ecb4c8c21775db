package telemetry

import (
	"context"
	"fmt"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/go-integration/patterns/broker/kafka"
)

// Kafka consumer health: lag and stuck partitions as gauges read from
// kafka.Subscriber.Partitions at collection time (ObserveKafka), and the
// Kafka Subscriber's own events (stuck, recovered, rebalances) as counters
// (Kafka). The semantic conventions have no consumer-lag metric (only the
// attributes), so the names are this module's.

// Metric names.
const (
	kafkaMetricLag           = "patterns.kafka.consumer.lag"
	kafkaMetricStuck         = "patterns.kafka.partition.stuck"
	kafkaMetricStuckEvents   = "patterns.kafka.partition.stuck_events"
	kafkaMetricStuckDuration = "patterns.kafka.partition.stuck_duration"
	kafkaMetricRebalance     = "patterns.kafka.rebalance.partitions"
)

// Attributes where the semantic conventions have none.
const (
	// kafkaAttrRebalanceEvent is a rebalance's event: "assigned",
	// "revoked" or "lost".
	kafkaAttrRebalanceEvent = attribute.Key("patterns.kafka.rebalance.event")
	// kafkaAttrReleased is set on a stuck episode that ended because the
	// subscriber stopped consuming the partition, not because it moved.
	kafkaAttrReleased = attribute.Key("patterns.kafka.partition.released")
)

type kafkaInstruments struct {
	lag           metric.Int64ObservableGauge
	stuck         metric.Int64ObservableGauge
	stuckEvents   metric.Int64Counter
	stuckDuration metric.Float64Histogram
	rebalance     metric.Int64Counter
}

func (k *kafkaInstruments) init(m metric.Meter) error {
	var err error
	if k.lag, err = m.Int64ObservableGauge(kafkaMetricLag, metric.WithUnit("{message}"),
		metric.WithDescription("Records of a partition published and not yet done by the consumer: high watermark minus the offset it commits.")); err != nil {
		return err
	}
	if k.stuck, err = m.Int64ObservableGauge(kafkaMetricStuck, metric.WithUnit("1"),
		metric.WithDescription("1 while a partition is stuck: lag above zero and its committed offset unchanged for longer than the subscriber's threshold, else 0.")); err != nil {
		return err
	}
	if k.stuckEvents, err = m.Int64Counter(kafkaMetricStuckEvents, metric.WithUnit("{event}"),
		metric.WithDescription("Times a partition became stuck.")); err != nil {
		return err
	}
	if k.stuckDuration, err = m.Float64Histogram(kafkaMetricStuckDuration, metric.WithUnit("s"),
		metric.WithDescription("How long a stuck partition's committed offset stood still, recorded when it moved again or the partition was released."),
		metric.WithExplicitBucketBoundaries(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)); err != nil {
		return err
	}
	if k.rebalance, err = m.Int64Counter(kafkaMetricRebalance, metric.WithUnit("{partition}"),
		metric.WithDescription("Partitions assigned to, revoked from or lost by the consumer group members of Kafka subscribers.")); err != nil {
		return err
	}
	return nil
}

// kafkaPartitionAttrs are the attributes of one partition of a group.
func kafkaPartitionAttrs(topic, group string, partition int32, extra ...attribute.KeyValue) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 4+len(extra))
	attrs = append(attrs, semconv.MessagingSystemKafka, semconv.MessagingDestinationName(topic),
		semconv.MessagingDestinationPartitionID(strconv.Itoa(int(partition))))
	if group != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(group))
	}
	return append(attrs, extra...)
}

// ObserveKafka reports the partitions s consumes as two gauges, read from
// s.Partitions at each collection (no I/O):
//
//   - patterns.kafka.consumer.lag ({message}): high watermark minus the
//     offset the subscriber commits;
//   - patterns.kafka.partition.stuck (1): 1 while the partition is stuck
//     (see kafka.WithStuckAfter), else 0;
//
// each with messaging.system "kafka", messaging.destination.name,
// messaging.destination.partition.id and messaging.consumer.group.name (for
// a subscription with a group). A partition appears while s consumes it.
// The group comes from each partition's subscription, so one call covers
// every Subscribe call of s. stop unregisters the gauges; call it before
// closing s, or leave it: a closed subscriber reports nothing. A nil s is an
// error wrapping ErrInvalidOption.
func (t *Telemetry) ObserveKafka(s *kafka.Subscriber) (stop func() error, err error) {
	if s == nil {
		return nil, fmt.Errorf("%w: ObserveKafka(nil)", ErrInvalidOption)
	}
	in := &t.instr.kafka
	reg, err := t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		ps := s.Partitions()
		for i := 0; i < len(ps); i++ {
			p := ps[i]
			// Two subscriptions without a group on one topic share
			// attributes: report the worst of them (Partitions is
			// sorted, so they are adjacent).
			for i+1 < len(ps) && ps[i+1].Topic == p.Topic && ps[i+1].Group == p.Group && ps[i+1].Partition == p.Partition {
				i++
				p.Lag = max(p.Lag, ps[i].Lag)
				p.Stuck = p.Stuck || ps[i].Stuck
			}
			attrs := metric.WithAttributes(kafkaPartitionAttrs(p.Topic, p.Group, p.Partition)...)
			stuck := int64(0)
			if p.Stuck {
				stuck = 1
			}
			o.ObserveInt64(in.lag, p.Lag, attrs)
			o.ObserveInt64(in.stuck, stuck, attrs)
		}
		return nil
	}, in.lag, in.stuck)
	if err != nil {
		return nil, fmt.Errorf("telemetry: ObserveKafka: %w", err)
	}
	return reg.Unregister, nil
}

// Kafka returns the tracer for broker/kafka's WithTracer option on a
// Subscriber, for what only Kafka reports. It implements
// kafka.PartitionHealthTracer and kafka.RebalanceTracer:
//
//   - patterns.kafka.partition.stuck_events ({event}): a counter of
//     partitions becoming stuck;
//   - patterns.kafka.partition.stuck_duration (s): a histogram of how long
//     a stuck partition's offset stood still, recorded when the episode
//     ends, with patterns.kafka.partition.released true when it ended
//     because the subscriber stopped consuming the partition;
//   - patterns.kafka.rebalance.partitions ({partition}): a counter of
//     partitions assigned, revoked or lost, by patterns.kafka.rebalance.event.
//
// The partition metrics carry the attributes of ObserveKafka's; the
// rebalance counter carries the system, topic and group. The log line for
// a stuck partition is the Subscriber's own (kafka.WithLogger). Spans and
// the broker metrics come from Broker, which a Subscriber takes as well:
//
//	sub, err := kafka.NewSubscriber(brokers, kafka.WithTracer(tel.Broker()), kafka.WithTracer(tel.Kafka()))
func (t *Telemetry) Kafka() any { return &kafkaTracer{in: &t.instr.kafka} }

type kafkaTracer struct{ in *kafkaInstruments }

var (
	_ kafka.PartitionHealthTracer = (*kafkaTracer)(nil)
	_ kafka.RebalanceTracer       = (*kafkaTracer)(nil)
)

func (k *kafkaTracer) TracePartitionStuck(ctx context.Context, d kafka.TracePartitionStuckData) {
	k.in.stuckEvents.Add(ctx, 1, metric.WithAttributes(kafkaPartitionAttrs(d.Topic, d.Group, d.Partition)...))
}

func (k *kafkaTracer) TracePartitionRecovered(ctx context.Context, d kafka.TracePartitionRecoveredData) {
	k.in.stuckDuration.Record(ctx, d.StuckFor.Seconds(),
		metric.WithAttributes(kafkaPartitionAttrs(d.Topic, d.Group, d.Partition, kafkaAttrReleased.Bool(d.Released))...))
}

func (k *kafkaTracer) TraceRebalance(ctx context.Context, d kafka.TraceRebalanceData) {
	if len(d.Partitions) == 0 {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = append(attrs, semconv.MessagingSystemKafka, semconv.MessagingDestinationName(d.Topic), kafkaAttrRebalanceEvent.String(d.Event.String()))
	if d.Group != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(d.Group))
	}
	k.in.rebalance.Add(ctx, int64(len(d.Partitions)), metric.WithAttributes(attrs...))
}
