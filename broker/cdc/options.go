package cdc

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/go-integration/patterns/internal/backoff"
	"github.com/go-integration/patterns/internal/pgschema"
)

// Defaults of the options.
const (
	DefaultSlot             = "patterns_cdc"
	DefaultPublication      = "patterns_cdc"
	DefaultTopicPrefix      = "cdc"
	DefaultStateTable       = "public.patterns_cdc_snapshot"
	DefaultMaxBatch         = 500
	DefaultStatusInterval   = time.Second
	DefaultPublishTimeout   = 30 * time.Second
	DefaultDrainTimeout     = 30 * time.Second
	DefaultMinBackoff       = 100 * time.Millisecond
	DefaultMaxBackoff       = 30 * time.Second
	DefaultRetainedWarning  = 1 << 30 // 1 GiB
	DefaultRetainedInterval = 30 * time.Second
)

// Errors of this package; test them with errors.Is. Each error New returns
// for a server that is not ready wraps one of them and names the fix.
var (
	// ErrInvalidOption is returned by New for an option it cannot use; the
	// error names the option.
	ErrInvalidOption = errors.New("cdc: invalid option")
	// ErrClosed is returned by Run after Close, and by Lag after Close.
	ErrClosed = errors.New("cdc: source closed")
	// ErrRunning is returned by Run when the source is already running.
	ErrRunning = errors.New("cdc: source already running")
	// ErrWALLevel: the server's wal_level is not logical.
	ErrWALLevel = errors.New("cdc: wal_level is not logical")
	// ErrStandby: the server is a standby (in recovery), which is read-only:
	// the source creates its publication, state table and slot, so it
	// streams from the primary.
	ErrStandby = errors.New("cdc: server is a standby")
	// ErrNoPublication: the publication does not exist and WithTables was
	// not given, or it publishes no table.
	ErrNoPublication = errors.New("cdc: publication missing")
	// ErrSlotInUse: another process streams from the slot.
	ErrSlotInUse = errors.New("cdc: replication slot in use")
	// ErrNoReplicaIdentity: a published table has neither a primary key
	// nor a replica identity that identifies its rows.
	ErrNoReplicaIdentity = errors.New("cdc: table without primary key or replica identity")
	// ErrPermission: the role may not replicate (or create what is missing).
	ErrPermission = errors.New("cdc: permission denied")
	// ErrSlot: the slot exists but cannot be used (another plugin or
	// another database).
	ErrSlot = errors.New("cdc: unusable replication slot")
	// ErrRejected: the publisher refused a change as invalid
	// (broker.ErrInvalidMessage, broker.ErrUnroutable or a
	// broker.Permanent error). Run stops
	// with it without confirming the change: retrying cannot help, and
	// skipping it would lose it.
	ErrRejected = errors.New("cdc: publisher rejected a change")
	// ErrSlotLost: the slot this source streamed from (in this process,
	// or in an earlier one that recorded its snapshot) no longer exists:
	// it was dropped, or the server failed over to a standby that does not
	// have it (PostgreSQL before 17 does not copy logical slots to
	// standbys). The changes made since its last confirmed position cannot
	// be read any more, so Run stops with it instead of silently starting
	// over; WithRecreateLostSlot starts over with a new slot and a new
	// snapshot.
	ErrSlotLost = errors.New("cdc: replication slot lost")
)

// DecimalMode says how numeric/decimal values are written (Debezium's
// decimal.handling.mode).
type DecimalMode int

const (
	// DecimalString writes numeric values as JSON strings holding the exact
	// value ("12.50"), Debezium's decimal.handling.mode=string. It is the
	// default: Debezium's own default (precise) writes the unscaled value as
	// bytes and the scale only in the schema, which a consumer of JSON
	// without schemas cannot read.
	DecimalString DecimalMode = iota
	// DecimalDouble writes numeric values as JSON numbers (may lose
	// precision in the consumer), decimal.handling.mode=double. NaN and
	// infinities are written as the strings "NaN", "Infinity", "-Infinity".
	DecimalDouble
)

// Option configures a Source. Options are made only by the WithX functions
// of this package.
type Option interface{ apply(*config) }

type option func(*config)

func (o option) apply(c *config) { o(c) }

type config struct {
	slot             string
	publication      string
	tables           []string
	topicPrefix      string
	snapshot         bool
	stateTable       string
	maxBatch         int
	statusInterval   time.Duration
	publishTimeout   time.Duration
	recreateLost     bool
	drainTimeout     time.Duration
	backoff          backoff.Policy
	retainedWarning  int64
	retainedInterval time.Duration
	decimal          DecimalMode
	logger           *slog.Logger
	tracers          []any

	errs []error
}

func (c *config) invalid(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func newConfig(opts []Option) (config, error) {
	c := config{
		slot:             DefaultSlot,
		publication:      DefaultPublication,
		topicPrefix:      DefaultTopicPrefix,
		snapshot:         true,
		stateTable:       DefaultStateTable,
		maxBatch:         DefaultMaxBatch,
		statusInterval:   DefaultStatusInterval,
		publishTimeout:   DefaultPublishTimeout,
		drainTimeout:     DefaultDrainTimeout,
		backoff:          backoff.Policy{Min: DefaultMinBackoff, Max: DefaultMaxBackoff},
		retainedWarning:  DefaultRetainedWarning,
		retainedInterval: DefaultRetainedInterval,
		logger:           slog.Default(),
	}
	for _, o := range opts {
		if o == nil {
			c.invalid("nil option")
			continue
		}
		o.apply(&c)
	}
	if len(c.errs) > 0 {
		return c, fmt.Errorf("%w: %w", ErrInvalidOption, errors.Join(c.errs...))
	}
	return c, nil
}

// slotName is what PostgreSQL accepts as a replication slot name.
var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// WithSlot sets the logical replication slot: lower-case letters, digits
// and underscores, at most 63 bytes. It is created (pgoutput plugin) when
// missing and reused otherwise: the slot is what makes a restart resume
// where the last confirmed change was. Default: DefaultSlot.
func WithSlot(name string) Option {
	return option(func(c *config) {
		if !slotName.MatchString(name) {
			c.invalid("WithSlot(%q): want 1 to 63 of [a-z0-9_]", name)
			return
		}
		c.slot = name
	})
}

// WithPublication sets the publication whose tables are captured. Without
// WithTables it must exist. Default: DefaultPublication.
func WithPublication(name string) Option {
	return option(func(c *config) {
		if name == "" || len(name) > 63 {
			c.invalid("WithPublication(%q): want 1 to 63 bytes", name)
			return
		}
		c.publication = name
	})
}

// WithTables names the tables ("table" or "schema.table", resolved with the
// connection's search_path) New publishes with CREATE PUBLICATION ... FOR
// TABLE when the publication does not exist. An existing publication is
// used as it is.
func WithTables(tables ...string) Option {
	return option(func(c *config) {
		if len(tables) == 0 {
			c.invalid("WithTables(): want at least one table")
			return
		}
		for _, t := range tables {
			if t == "" {
				c.invalid("WithTables: empty table name")
				return
			}
		}
		c.tables = append([]string(nil), tables...)
	})
}

// WithTopicPrefix sets the first part of every topic: prefix.schema.table,
// Debezium's naming (its topic.prefix); it is also source.name in the
// envelope. Default: DefaultTopicPrefix.
func WithTopicPrefix(p string) Option {
	return option(func(c *config) {
		if p == "" || len(p) > 100 {
			c.invalid("WithTopicPrefix(%q): want 1 to 100 bytes", p)
			return
		}
		c.topicPrefix = p
	})
}

// WithSnapshot turns the initial snapshot on or off. On (the default), the
// rows that exist when the slot is created are published first, as op "r",
// consistent with the stream that follows. Off, only changes committed
// after the slot was created are published.
func WithSnapshot(on bool) Option {
	return option(func(c *config) { c.snapshot = on })
}

// WithStateTable sets the table ("schema.table") where the snapshot's
// progress is kept, one row per slot and captured table, so an interrupted
// snapshot resumes. It is created when missing. Default: DefaultStateTable.
func WithStateTable(name string) Option {
	return option(func(c *config) {
		if _, _, err := pgschema.ParseTable(name); err != nil {
			c.invalid("WithStateTable(%q): %v", name, err)
			return
		}
		c.stateTable = name
	})
}

// WithMaxBatch sets the most changes one Publish call carries. Changes of
// one topic that arrive together are published together; a batch is sent
// as soon as no more changes are waiting, so batching adds no latency.
// Default: DefaultMaxBatch.
func WithMaxBatch(n int) Option {
	return option(func(c *config) {
		if n < 1 {
			c.invalid("WithMaxBatch(%d): want at least 1", n)
			return
		}
		c.maxBatch = n
	})
}

// WithStatusInterval sets how often the source tells the server how far it
// has confirmed (the standby status update), also while the publisher is
// down. It bounds what a crash repeats: the server resumes from the last
// position it heard of. Keep it well below the server's wal_sender_timeout
// (60 s by default). Default: DefaultStatusInterval.
func WithStatusInterval(d time.Duration) Option {
	return option(func(c *config) {
		if d <= 0 {
			c.invalid("WithStatusInterval(%v): want a positive duration", d)
			return
		}
		c.statusInterval = d
	})
}

// WithRecreateLostSlot makes Run create a new slot and take a new
// snapshot when the slot it streamed from is gone (see ErrSlotLost),
// logging it at Error, instead of stopping with ErrSlotLost. Changes made
// while no slot existed are not published: consumers must treat the new
// snapshot as a full resync (a row deleted in between reaches them only as
// missing from it). Default: off.
func WithRecreateLostSlot() Option {
	return option(func(c *config) { c.recreateLost = true })
}

// WithPublishTimeout bounds one Publish call: one that takes longer is
// cancelled and retried (with backoff), as a failed one. Default:
// DefaultPublishTimeout.
func WithPublishTimeout(d time.Duration) Option {
	return option(func(c *config) {
		if d <= 0 {
			c.invalid("WithPublishTimeout(%v): want a positive duration", d)
			return
		}
		c.publishTimeout = d
	})
}

// WithDrainTimeout bounds how long Close waits for the Publish call in
// flight before it cancels it (its changes are then published again after
// a restart). Default: DefaultDrainTimeout.
func WithDrainTimeout(d time.Duration) Option {
	return option(func(c *config) {
		if d <= 0 {
			c.invalid("WithDrainTimeout(%v): want a positive duration", d)
			return
		}
		c.drainTimeout = d
	})
}

// WithBackoff bounds the wait between Publish attempts while the publisher
// fails: exponential from minWait up to maxWait, with full jitter.
// Defaults: DefaultMinBackoff and DefaultMaxBackoff.
func WithBackoff(minWait, maxWait time.Duration) Option {
	return option(func(c *config) {
		p := backoff.Policy{Min: minWait, Max: maxWait}
		if err := p.Validate(); err != nil {
			c.invalid("WithBackoff(%v, %v): %v", minWait, maxWait, err)
			return
		}
		c.backoff = p
	})
}

// WithRetainedWarning sets when the WAL the slot retains is worth a
// warning: while the publisher fails, the retained size
// (pg_current_wal_lsn() - restart_lsn) is logged at Warn every interval
// whatever its size, and at Error once it is over bytes. Defaults:
// DefaultRetainedWarning and DefaultRetainedInterval.
func WithRetainedWarning(bytes int64, interval time.Duration) Option {
	return option(func(c *config) {
		if bytes <= 0 || interval <= 0 {
			c.invalid("WithRetainedWarning(%d, %v): want a positive size and interval", bytes, interval)
			return
		}
		c.retainedWarning, c.retainedInterval = bytes, interval
	})
}

// WithDecimal sets how numeric values are written. Default: DecimalString.
func WithDecimal(m DecimalMode) Option {
	return option(func(c *config) {
		if m != DecimalString && m != DecimalDouble {
			c.invalid("WithDecimal(%d): want DecimalString or DecimalDouble", m)
			return
		}
		c.decimal = m
	})
}

// WithLogger sets the logger: Warn while the publisher fails (with the WAL
// the slot retains), Info at start, snapshot and stop. Default:
// slog.Default().
func WithLogger(l *slog.Logger) Option {
	return option(func(c *config) {
		if l == nil {
			c.invalid("WithLogger(nil)")
			return
		}
		c.logger = l
	})
}
