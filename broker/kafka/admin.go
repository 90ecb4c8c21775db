package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Topic describes a topic to create or verify with Admin.EnsureTopic (and the
// defaults for topics created by CreateTopics and Provision).
type Topic struct {
	// Name of the topic. Required by EnsureTopic.
	Name string
	// Partitions is the partition count; 0 means the broker's default.
	Partitions int32
	// ReplicationFactor is the replica count; 0 means the broker's default.
	ReplicationFactor int16
	// Retention sets retention.ms: how long records are kept. 0 keeps the
	// broker's default; a negative value keeps records forever (-1).
	Retention time.Duration
	// RetentionBytes sets retention.bytes per partition. 0 keeps the
	// broker's default; a negative value means no size limit (-1).
	RetentionBytes int64
	// CleanupPolicy sets cleanup.policy: "delete", "compact" or
	// "compact,delete". With compaction, a message with a nil Payload is a
	// tombstone that deletes its key. Empty keeps the broker's default.
	CleanupPolicy string
	// Config holds any other topic configs (for example
	// "max.message.bytes"); the fields above win over the same keys here.
	Config map[string]string
}

// configs returns the topic configs t sets.
func (t Topic) configs() map[string]string {
	c := maps.Clone(t.Config)
	if c == nil {
		c = map[string]string{}
	}
	switch {
	case t.Retention > 0:
		c["retention.ms"] = strconv.FormatInt(t.Retention.Milliseconds(), 10)
	case t.Retention < 0:
		c["retention.ms"] = "-1"
	}
	switch {
	case t.RetentionBytes > 0:
		c["retention.bytes"] = strconv.FormatInt(t.RetentionBytes, 10)
	case t.RetentionBytes < 0:
		c["retention.bytes"] = "-1"
	}
	if t.CleanupPolicy != "" {
		c["cleanup.policy"] = t.CleanupPolicy
	}
	return c
}

// Admin creates and verifies topics, moves consumer groups' offsets and
// reports lag. It wraps a franz-go client and kadm.
type Admin struct {
	cfg  config
	hook *dialHook
	cl   *kgo.Client
	adm  *kadm.Client
}

// NewAdmin returns an Admin for the seed brokers. It does not connect until
// used; call Ping to check the cluster answers.
func NewAdmin(brokers []string, opts ...AdminOption) (*Admin, error) {
	cfg, err := adminConfig(brokers, opts)
	if err != nil {
		return nil, err
	}
	return newAdmin(cfg)
}

func newAdmin(cfg config) (*Admin, error) {
	h := &dialHook{brokers: cfg.brokers}
	cl, err := kgo.NewClient(cfg.baseOpts(h)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: new client: %w", err)
	}
	return &Admin{cfg: cfg, hook: h, cl: cl, adm: kadm.NewClient(cl)}, nil
}

// Client returns the underlying franz-go client (the escape hatch). Do not
// close it: Close does.
func (a *Admin) Client() *kgo.Client { return a.cl }

// Ping checks that a broker answers before ctx ends; an unreachable cluster
// is an error wrapping ErrUnreachable.
func (a *Admin) Ping(ctx context.Context) error {
	return a.hook.wrap(ctx, "ping", a.cl.Ping(ctx))
}

// Close releases the client.
func (a *Admin) Close() error {
	a.cl.Close()
	return nil
}

// EnsureTopic creates t, or verifies an existing topic: it must have at
// least t.Partitions partitions and the configs t sets, otherwise the error
// wraps ErrTopicMismatch and names each difference. A name Kafka does not
// allow fails at once with ErrInvalidTopic.
func (a *Admin) EnsureTopic(ctx context.Context, t Topic) error {
	if err := validateTopicName(t.Name, ErrInvalidTopic); err != nil {
		return err
	}
	created, err := a.createTopic(ctx, t)
	if err != nil || created {
		return err
	}
	return a.verifyTopic(ctx, t)
}

// createTopic creates t and reports whether it did; an existing topic is not an error.
func (a *Admin) createTopic(ctx context.Context, t Topic) (bool, error) {
	parts, rf := t.Partitions, t.ReplicationFactor
	if parts == 0 {
		parts = -1
	}
	if rf == 0 {
		rf = -1
	}
	var cfgs map[string]*string
	for k, v := range t.configs() {
		if cfgs == nil {
			cfgs = map[string]*string{}
		}
		cfgs[k] = &v
	}
	resp, err := a.adm.CreateTopic(ctx, parts, rf, cfgs, t.Name)
	if err == nil {
		err = resp.Err
	}
	switch {
	case err == nil:
		a.cfg.logger.Info("kafka: created topic", "topic", t.Name, "partitions", resp.NumPartitions)
		// kadm answers from cached metadata, which may remember the
		// topic as unknown: forget it.
		a.cl.PurgeTopicsFromClient(t.Name)
		return true, a.waitTopic(ctx, t.Name)
	case errors.Is(err, kerr.TopicAlreadyExists):
		return false, nil
	}
	msg := ""
	if resp.ErrMessage != "" {
		msg = " (" + resp.ErrMessage + ")"
	}
	return false, a.hook.wrap(ctx, "create topic "+t.Name+msg, err)
}

// waitTopic waits until the client's metadata knows the new topic, so a
// publish right after creation does not race topic propagation.
func (a *Admin) waitTopic(ctx context.Context, topic string) error {
	for i := 0; ; i++ {
		td, err := a.adm.ListTopics(ctx, topic)
		if err == nil {
			if d, ok := td[topic]; ok && d.Err == nil && len(d.Partitions) > 0 {
				return nil
			}
		}
		if i == 50 {
			return a.hook.wrap(ctx, "wait for new topic "+topic, fmt.Errorf("topic not in metadata after creation: %v", err))
		}
		select {
		case <-ctx.Done():
			return a.hook.wrap(ctx, "wait for new topic "+topic, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (a *Admin) verifyTopic(ctx context.Context, t Topic) error {
	td, err := a.adm.ListTopics(ctx, t.Name)
	if err != nil {
		return a.hook.wrap(ctx, "describe topic "+t.Name, err)
	}
	d, ok := td[t.Name]
	if !ok || d.Err != nil {
		return a.hook.wrap(ctx, "describe topic "+t.Name, cmpErr(d.Err, kerr.UnknownTopicOrPartition))
	}
	var diffs []string
	if t.Partitions > 0 && int32(len(d.Partitions)) < t.Partitions {
		diffs = append(diffs, fmt.Sprintf("partitions %d, want %d", len(d.Partitions), t.Partitions))
	}
	if t.ReplicationFactor > 0 {
		for _, p := range d.Partitions {
			if len(p.Replicas) != int(t.ReplicationFactor) {
				diffs = append(diffs, fmt.Sprintf("replication factor %d, want %d", len(p.Replicas), t.ReplicationFactor))
				break
			}
		}
	}
	want := t.configs()
	if len(want) > 0 {
		rcs, err := a.adm.DescribeTopicConfigs(ctx, t.Name)
		if err != nil {
			return a.hook.wrap(ctx, "describe configs of topic "+t.Name, err)
		}
		rc, err := rcs.On(t.Name, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			return a.hook.wrap(ctx, "describe configs of topic "+t.Name, err)
		}
		have := map[string]string{}
		for _, c := range rc.Configs {
			if c.Value != nil {
				have[c.Key] = *c.Value
			}
		}
		for _, k := range slices.Sorted(maps.Keys(want)) {
			if have[k] != want[k] {
				diffs = append(diffs, fmt.Sprintf("%s=%q, want %q", k, have[k], want[k]))
			}
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%w: %q: %s", ErrTopicMismatch, t.Name, strings.Join(diffs, "; "))
	}
	return nil
}

func cmpErr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// topicExists reports whether topic exists.
func (a *Admin) topicExists(ctx context.Context, topic string) (bool, error) {
	ok, err := a.topicExistsCached(ctx, topic)
	if err != nil || ok {
		return ok, err
	}
	// Metadata may be cached from before someone created it: ask again.
	a.cl.PurgeTopicsFromClient(topic)
	return a.topicExistsCached(ctx, topic)
}

func (a *Admin) topicExistsCached(ctx context.Context, topic string) (bool, error) {
	td, err := a.adm.ListTopics(ctx, topic)
	if err != nil {
		return false, a.hook.wrap(ctx, "look up topic "+topic, err)
	}
	d, ok := td[topic]
	switch {
	case !ok, errors.Is(d.Err, kerr.UnknownTopicOrPartition):
		return false, nil
	case d.Err != nil:
		return false, a.hook.wrap(ctx, "look up topic "+topic, d.Err)
	}
	return true, nil
}

// requireTopic makes sure topic exists: it creates it with defaults when
// create is set and returns ErrUnknownTopic otherwise.
func (a *Admin) requireTopic(ctx context.Context, topic string, create bool, defaults Topic) error {
	ok, err := a.topicExists(ctx, topic)
	if err != nil || ok {
		return err
	}
	if !create {
		return fmt.Errorf("%w: %q does not exist (create it with Admin.EnsureTopic or Provision, or use the CreateTopics option)", ErrUnknownTopic, topic)
	}
	defaults.Name = topic
	_, err = a.createTopic(ctx, defaults)
	return err
}

// DeleteTopic deletes topic.
func (a *Admin) DeleteTopic(ctx context.Context, topic string) error {
	resp, err := a.adm.DeleteTopic(ctx, topic)
	if err == nil {
		err = resp.Err
	}
	return a.hook.wrap(ctx, "delete topic "+topic, err)
}

// startOffsets resolves o for every partition of topic.
func (a *Admin) startOffsets(ctx context.Context, topic string, o Offset) (map[int32]int64, error) {
	starts, err := a.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, a.hook.wrap(ctx, "list start offsets of "+topic, err)
	}
	ends, err := a.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, a.hook.wrap(ctx, "list end offsets of "+topic, err)
	}
	out := make(map[int32]int64, len(ends[topic]))
	switch o.kind {
	case kindEarliest:
		for p, lo := range starts[topic] {
			out[p] = lo.Offset
		}
	case kindLatest:
		for p, lo := range ends[topic] {
			out[p] = lo.Offset
		}
	case kindTime:
		at, err := a.adm.ListOffsetsAfterMilli(ctx, o.at.UnixMilli(), topic)
		if err == nil {
			err = at.Error()
		}
		if err != nil {
			return nil, a.hook.wrap(ctx, "list offsets of "+topic+" at "+o.String(), err)
		}
		for p, lo := range ends[topic] {
			out[p] = lo.Offset
			if l, ok := at.Lookup(topic, p); ok && l.Offset >= 0 {
				out[p] = l.Offset
			}
		}
	case kindExact:
		for p := range o.offsets {
			if _, ok := ends[topic][p]; !ok {
				return nil, fmt.Errorf("%w: topic %q has no partition %d (it has %d)", ErrInvalidOffset, topic, p, len(ends[topic]))
			}
		}
		for p, lo := range starts[topic] {
			off, ok := o.offsets[p]
			if !ok {
				out[p] = lo.Offset
				continue
			}
			end := ends[topic][p].Offset
			if off < lo.Offset || off > end {
				return nil, fmt.Errorf("%w: offset %d for %s/%d is outside [%d, %d]", ErrInvalidOffset, off, topic, p, lo.Offset, end)
			}
			out[p] = off
		}
	default:
		return nil, fmt.Errorf("%w: unresolved start position", ErrInvalidOffset)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, topic)
	}
	return out, nil
}

// ResetOffsets moves group's committed offsets on topic to o (for example
// AtTime(yesterday) to replay a day). Kafka accepts the commit only while the
// group has no active member: stop its subscribers first.
func (a *Admin) ResetOffsets(ctx context.Context, group, topic string, o Offset) error {
	if group == "" {
		return fmt.Errorf("kafka: ResetOffsets: empty group")
	}
	if err := o.resolve(true).validate(); err != nil {
		return err
	}
	offs, err := a.startOffsets(ctx, topic, o.resolve(true))
	if err != nil {
		return err
	}
	return a.commit(ctx, group, topic, offs)
}

func (a *Admin) commit(ctx context.Context, group, topic string, offs map[int32]int64) error {
	os := make(kadm.Offsets)
	for p, at := range offs {
		os.Add(kadm.Offset{Topic: topic, Partition: p, At: at, LeaderEpoch: -1})
	}
	resp, err := a.adm.CommitOffsets(ctx, group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return a.hook.wrap(ctx, fmt.Sprintf("commit offsets of group %q on %q (a group with active members cannot be moved)", group, topic), err)
	}
	return nil
}

// committed returns group's committed offsets on topic (partitions without
// a commit are absent).
func (a *Admin) committed(ctx context.Context, group, topic string) (map[int32]int64, error) {
	resp, err := a.adm.FetchOffsetsForTopics(ctx, group, topic)
	if err == nil {
		err = resp.Error()
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{}, nil // a group that never committed
	}
	if err != nil {
		return nil, a.hook.wrap(ctx, fmt.Sprintf("fetch offsets of group %q", group), err)
	}
	out := map[int32]int64{}
	for p, r := range resp[topic] {
		if r.At >= 0 {
			out[p] = r.At
		}
	}
	return out, nil
}

// Lag returns, per partition of topic, how many records group has not
// committed yet (end offset minus committed offset; the whole partition when
// the group has no commit there).
func (a *Admin) Lag(ctx context.Context, group, topic string) (map[int32]int64, error) {
	com, err := a.committed(ctx, group, topic)
	if err != nil {
		return nil, err
	}
	starts, err := a.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, a.hook.wrap(ctx, "list start offsets of "+topic, err)
	}
	ends, err := a.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, a.hook.wrap(ctx, "list end offsets of "+topic, err)
	}
	out := map[int32]int64{}
	for p, e := range ends[topic] {
		from, ok := com[p]
		if !ok {
			from = starts[topic][p].Offset
		}
		out[p] = max(e.Offset-from, 0)
	}
	return out, nil
}
