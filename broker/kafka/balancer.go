package kafka

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The Keys union rule. A group's members may subscribe with different
// Subscription.Keys; the group's bindings are the union of their patterns,
// and any member may receive any message that matches the union (as on
// RabbitMQ, where a group is one queue bound with every member's patterns,
// and on the memory broker). Kafka has no server-side filter, so the union
// travels through the group protocol: keysBalancer wraps the client's
// balancer, puts each member's patterns in front of its JoinGroup metadata,
// and the leader puts the union in front of every member's assignment.

// keysProtocolPrefix names the wrapping protocol: "patterns-v1+" followed
// by the inner balancer's name. Only members running this package speak it,
// so consumers of other libraries cannot join such a group.
const keysProtocolPrefix = "patterns-v1+"

// keysMagic starts every encoded pattern list. Its first two bytes read as
// a negative ConsumerMemberMetadata version followed by an array length
// ("patt...") far larger than the data, so kgo's rack injection (which
// parses JoinGroup metadata as ConsumerMemberMetadata) fails to parse ours
// and leaves it alone.
const keysMagic = "\xff\xffpatterns-keys-v1"

// encodeKeys appends the pattern list: magic, a flag (1: every key), the
// count and each pattern, lengths as big-endian uint32.
func encodeKeys(dst []byte, all bool, pats []string) []byte {
	dst = append(dst, keysMagic...)
	if all {
		return append(dst, 1)
	}
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(pats)))
	for _, p := range pats {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(p)))
		dst = append(dst, p...)
	}
	return dst
}

var errNoKeys = errors.New("kafka: group member metadata without the patterns-v1 key list")

// decodeKeys reads a list written by encodeKeys and returns the rest of b.
func decodeKeys(b []byte) (all bool, pats []string, rest []byte, err error) {
	if !strings.HasPrefix(string(b), keysMagic) {
		return false, nil, nil, errNoKeys
	}
	b = b[len(keysMagic):]
	if len(b) < 1 {
		return false, nil, nil, errors.New("kafka: truncated key list")
	}
	if b[0] == 1 {
		return true, nil, b[1:], nil
	}
	b = b[1:]
	if len(b) < 4 {
		return false, nil, nil, errors.New("kafka: truncated key list")
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	if uint64(n)*4 > uint64(len(b)) {
		return false, nil, nil, errors.New("kafka: truncated key list")
	}
	pats = make([]string, 0, n)
	for range n {
		if len(b) < 4 {
			return false, nil, nil, errors.New("kafka: truncated key list")
		}
		l := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(l) > uint64(len(b)) {
			return false, nil, nil, errors.New("kafka: truncated key list")
		}
		pats = append(pats, string(b[:l]))
		b = b[l:]
	}
	return false, pats, b, nil
}

// keysBalancer wraps a kgo.GroupBalancer with the Keys union protocol. One
// is built per consuming client: keys are that member's patterns (sorted;
// empty means every key) and onUnion receives the union of every member's
// patterns at each assignment.
type keysBalancer struct {
	inner   kgo.GroupBalancer
	keys    []string
	onUnion func(all bool, pats []string)
}

func newKeysBalancer(inner kgo.GroupBalancer, keys []string, onUnion func(bool, []string)) *keysBalancer {
	k := slices.Clone(keys)
	slices.Sort(k)
	return &keysBalancer{inner: inner, keys: slices.Compact(k), onUnion: onUnion}
}

func (b *keysBalancer) ProtocolName() string { return keysProtocolPrefix + b.inner.ProtocolName() }
func (b *keysBalancer) IsCooperative() bool  { return b.inner.IsCooperative() }

func (b *keysBalancer) JoinGroupMetadata(interests []string, current map[string][]int32, generation int32) []byte {
	meta := encodeKeys(nil, len(b.keys) == 0, b.keys)
	return append(meta, b.inner.JoinGroupMetadata(interests, current, generation)...)
}

func (b *keysBalancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	if len(assignment) == 0 {
		// Nothing assigned (a leader that skipped assignment): no
		// partitions, so no filter to update.
		return b.inner.ParseSyncAssignment(assignment)
	}
	all, pats, rest, err := decodeKeys(assignment)
	if err != nil {
		return nil, err
	}
	b.onUnion(all, pats)
	return b.inner.ParseSyncAssignment(rest)
}

func (b *keysBalancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	stripped := make([]kmsg.JoinGroupResponseMember, len(members))
	all := false
	set := map[string]struct{}{}
	for i, m := range members {
		mAll, pats, rest, err := decodeKeys(m.ProtocolMetadata)
		if err != nil {
			return nil, nil, fmt.Errorf("member %s: %w", m.MemberID, err)
		}
		all = all || mAll
		for _, p := range pats {
			set[p] = struct{}{}
		}
		stripped[i] = m
		stripped[i].ProtocolMetadata = rest
	}
	var union []string
	if !all {
		for p := range set {
			union = append(union, p)
		}
		slices.Sort(union)
	}
	inner, topics, err := b.inner.MemberBalancer(stripped)
	if err != nil {
		return nil, nil, err
	}
	return &keysMemberBalancer{inner: inner, prefix: encodeKeys(nil, all, union)}, topics, nil
}

// keysMemberBalancer puts the union in front of every member's assignment.
type keysMemberBalancer struct {
	inner  kgo.GroupMemberBalancer
	prefix []byte
}

var (
	_ kgo.GroupMemberBalancerOrError = (*keysMemberBalancer)(nil)
	_ kgo.GroupMemberBalancerInfo    = (*keysMemberBalancer)(nil)
)

func (b *keysMemberBalancer) Balance(topics map[string]int32) kgo.IntoSyncAssignment {
	into := b.inner.Balance(topics)
	if into == nil {
		return nil
	}
	return &keysAssignment{inner: into, prefix: b.prefix}
}

func (b *keysMemberBalancer) BalanceOrError(topics map[string]int32) (kgo.IntoSyncAssignment, error) {
	eb, ok := b.inner.(kgo.GroupMemberBalancerOrError)
	if !ok {
		return b.Balance(topics), nil
	}
	into, err := eb.BalanceOrError(topics)
	if err != nil || into == nil {
		return into, err
	}
	return &keysAssignment{inner: into, prefix: b.prefix}, nil
}

func (b *keysMemberBalancer) SetBalanceInfo(info kgo.BalanceInfo) {
	if ib, ok := b.inner.(kgo.GroupMemberBalancerInfo); ok {
		ib.SetBalanceInfo(info)
	}
}

type keysAssignment struct {
	inner  kgo.IntoSyncAssignment
	prefix []byte
}

func (a *keysAssignment) IntoSyncAssignment() []kmsg.SyncGroupRequestGroupAssignment {
	as := a.inner.IntoSyncAssignment()
	for i := range as {
		as[i].MemberAssignment = append(slices.Clip(a.prefix), as[i].MemberAssignment...)
	}
	return as
}
