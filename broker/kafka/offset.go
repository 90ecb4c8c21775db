package kafka

import (
	"fmt"
	"maps"
	"time"
)

type offsetKind uint8

const (
	kindDefault offsetKind = iota // earliest for groups, latest for readers
	kindEarliest
	kindLatest
	kindTime
	kindExact
)

// Offset is a start position in a topic: the earliest record, the end, the
// first record at or after a time, or explicit per-partition offsets. Build
// one with Earliest, Latest, AtTime or AtOffsets.
type Offset struct {
	kind    offsetKind
	at      time.Time
	offsets map[int32]int64
}

// Earliest starts at the oldest record the topic still holds.
func Earliest() Offset { return Offset{kind: kindEarliest} }

// Latest starts after the last record: only records published from now on.
func Latest() Offset { return Offset{kind: kindLatest} }

// AtTime starts at the first record of each partition whose timestamp is at
// or after t (Kafka timestamps have millisecond precision; t is rounded
// down to its millisecond). Partitions with no such record start at their end.
func AtTime(t time.Time) Offset { return Offset{kind: kindTime, at: t} }

// AtOffsets starts each listed partition at its offset (the next record to
// read). Partitions not listed start at their earliest record. An offset
// below the partition's start or above its end is an error wrapping
// ErrInvalidOffset.
func AtOffsets(offsets map[int32]int64) Offset {
	return Offset{kind: kindExact, offsets: maps.Clone(offsets)}
}

// String describes the position for logs and errors.
func (o Offset) String() string {
	switch o.kind {
	case kindEarliest:
		return "earliest"
	case kindLatest:
		return "latest"
	case kindTime:
		return "time " + o.at.UTC().Format(time.RFC3339Nano)
	case kindExact:
		return fmt.Sprintf("offsets %v", o.offsets)
	}
	return "default"
}

func (o Offset) validate() error {
	switch o.kind {
	case kindTime:
		if o.at.IsZero() || o.at.UnixMilli() < 0 {
			return fmt.Errorf("%w: time %v is before 1970", ErrInvalidOffset, o.at)
		}
	case kindExact:
		for p, off := range o.offsets {
			if p < 0 {
				return fmt.Errorf("%w: partition %d is negative", ErrInvalidOffset, p)
			}
			if off < 0 {
				return fmt.Errorf("%w: offset %d for partition %d is negative", ErrInvalidOffset, off, p)
			}
		}
	}
	return nil
}

// resolve returns the default-resolved kind: groups default to earliest,
// readers without a group to latest.
func (o Offset) resolve(group bool) Offset {
	if o.kind != kindDefault {
		return o
	}
	if group {
		return Earliest()
	}
	return Latest()
}
