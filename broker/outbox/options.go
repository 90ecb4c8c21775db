package outbox

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-integration/patterns/internal/backoff"
	"github.com/go-integration/patterns/internal/hooks"
)

// Defaults of the relay's options.
const (
	DefaultBatchSize       = 500
	DefaultClaimBuckets    = Buckets
	DefaultWorkers         = 1
	DefaultPollInterval    = time.Second
	DefaultMinBackoff      = 100 * time.Millisecond
	DefaultMaxBackoff      = 30 * time.Second
	DefaultPublishTimeout  = 30 * time.Second
	DefaultRetention       = 24 * time.Hour
	DefaultCleanupInterval = time.Minute
	DefaultDrainTimeout    = 30 * time.Second
)

// ErrInvalidOption is returned by NewRelay and NewTable for an option they
// cannot use; the error names the option.
var ErrInvalidOption = errors.New("outbox: invalid option")

// Option configures a Relay. Options are made only by the WithX functions of
// this package.
type Option interface{ apply(*config) }

type option func(*config)

func (o option) apply(c *config) { o(c) }

type config struct {
	table           string
	batchSize       int
	claimBuckets    int
	workers         int
	pollInterval    time.Duration
	noListen        bool
	backoff         backoff.Policy
	publishTimeout  time.Duration
	retention       time.Duration
	cleanupInterval time.Duration // 0: off
	drainTimeout    time.Duration
	logger          *slog.Logger
	tracers         []any

	errs []error
}

func (c *config) invalid(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func newConfig(opts []Option) (config, error) {
	c := config{
		table:           DefaultTable,
		batchSize:       DefaultBatchSize,
		claimBuckets:    DefaultClaimBuckets,
		workers:         DefaultWorkers,
		pollInterval:    DefaultPollInterval,
		backoff:         backoff.Policy{Min: DefaultMinBackoff, Max: DefaultMaxBackoff},
		publishTimeout:  DefaultPublishTimeout,
		retention:       DefaultRetention,
		cleanupInterval: DefaultCleanupInterval,
		drainTimeout:    DefaultDrainTimeout,
		logger:          slog.Default(),
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

// WithTable sets the outbox table, "name" or "schema.name" (see NewTable).
// Default: DefaultTable.
func WithTable(name string) Option {
	return option(func(c *config) {
		if _, err := NewTable(name); err != nil {
			c.invalid("WithTable(%q): %v", name, err)
			return
		}
		c.table = name
	})
}

// WithBatchSize sets the most rows one batch reads, publishes and marks.
// Default: DefaultBatchSize.
func WithBatchSize(n int) Option {
	return option(func(c *config) {
		if n < 1 {
			c.invalid("WithBatchSize(%d): want at least 1", n)
			return
		}
		c.batchSize = n
	})
}

// WithClaimBuckets sets the most ordering buckets one batch claims, between
// 1 and Buckets. A batch claims up to this many of the buckets that have
// pending rows and that no other relay holds; after a batch that came back
// full it claims only as many as that batch drew rows from (so relays
// sharing a deep backlog each take a few buckets), and it goes back up to
// this limit, doubling, while batches are not full (so a relay under a
// steady load covers every key in one batch). Lower it to make relays share
// a light load more evenly at the cost of latency. Default: Buckets.
func WithClaimBuckets(n int) Option {
	return option(func(c *config) {
		if n < 1 || n > Buckets {
			c.invalid("WithClaimBuckets(%d): want 1 to %d", n, Buckets)
			return
		}
		c.claimBuckets = n
	})
}

// WithWorkers sets how many batches the relay runs at once, each on its own
// pool connection and its own buckets (keep the pool's MaxConns above it),
// between 1 and Buckets. Default: 1.
func WithWorkers(n int) Option {
	return option(func(c *config) {
		if n < 1 || n > Buckets {
			c.invalid("WithWorkers(%d): want 1 to %d", n, Buckets)
			return
		}
		c.workers = n
	})
}

// WithPollInterval sets how long an idle worker waits before looking for rows
// again when no notification arrives. Default: DefaultPollInterval.
func WithPollInterval(d time.Duration) Option {
	return option(func(c *config) {
		if d <= 0 {
			c.invalid("WithPollInterval(%v): want a positive duration", d)
			return
		}
		c.pollInterval = d
	})
}

// WithoutListen turns LISTEN/NOTIFY off, leaving polling alone (behind
// PgBouncer in transaction mode, for example). By default the relay holds
// one extra connection (outside the pool, with the pool's connection
// settings) that listens for the notification Add sends on commit.
func WithoutListen() Option {
	return option(func(c *config) { c.noListen = true })
}

// WithBackoff bounds the wait after a failed batch (broker or database down)
// and between reconnections of the LISTEN connection: exponential from
// minWait up to maxWait, with full jitter, reset after a success. Defaults:
// DefaultMinBackoff and DefaultMaxBackoff.
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

// WithPublishTimeout bounds one Publish call, and the marking of the rows it
// confirmed. Default: DefaultPublishTimeout.
func WithPublishTimeout(d time.Duration) Option {
	return option(func(c *config) {
		if d <= 0 {
			c.invalid("WithPublishTimeout(%v): want a positive duration", d)
			return
		}
		c.publishTimeout = d
	})
}

// WithRetention sets how long published rows are kept before Cleanup deletes
// them; zero deletes them at the next cleanup. Default: DefaultRetention.
func WithRetention(d time.Duration) Option {
	return option(func(c *config) {
		if d < 0 {
			c.invalid("WithRetention(%v): want zero or more", d)
			return
		}
		c.retention = d
	})
}

// WithCleanupInterval sets how often Run calls Cleanup. Default:
// DefaultCleanupInterval.
func WithCleanupInterval(d time.Duration) Option {
	return option(func(c *config) {
		if d <= 0 {
			c.invalid("WithCleanupInterval(%v): want a positive duration (WithoutCleanup turns cleanup off)", d)
			return
		}
		c.cleanupInterval = d
	})
}

// WithoutCleanup keeps Run from calling Cleanup: call it yourself, or delete
// published rows another way.
func WithoutCleanup() Option {
	return option(func(c *config) { c.cleanupInterval = 0 })
}

// WithDrainTimeout bounds how long Close waits for the batches in flight to
// be published and marked before it cancels them (their rows then stay
// pending and are published again later). Default: DefaultDrainTimeout.
func WithDrainTimeout(d time.Duration) Option {
	return option(func(c *config) {
		if d <= 0 {
			c.invalid("WithDrainTimeout(%v): want a positive duration", d)
			return
		}
		c.drainTimeout = d
	})
}

// WithLogger sets the logger: Warn for failed batches and a lost LISTEN
// connection, Info for recoveries, Error for messages set aside, Debug for
// every batch. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return option(func(c *config) {
		if l == nil {
			c.invalid("WithLogger(nil)")
			return
		}
		c.logger = l
	})
}

// Tracer interfaces each constructor takes, for ErrInvalidOption messages.
const (
	relayTracerNames = "outbox.BatchTracer, outbox.BackoffTracer (an outbox.AddTracer goes to NewTable)"
	tableTracerNames = "outbox.AddTracer (an outbox.BatchTracer or outbox.BackoffTracer goes to NewRelay)"
)

// TracerOption is both an Option for NewRelay and a TableOption for
// NewTable: WithTracer returns one.
type TracerOption interface {
	Option
	TableOption
}

type tracerOption struct{ t any }

func (o tracerOption) apply(c *config) {
	if err := hooks.Check(o.t, relayTracerNames, hooks.Is[BatchTracer](), hooks.Is[BackoffTracer]()); err != nil {
		c.invalid("WithTracer: %v", err)
		return
	}
	c.tracers = append(c.tracers, o.t)
}

func (o tracerOption) applyTable(c *tableConfig) {
	if err := hooks.Check(o.t, tableTracerNames, hooks.Is[AddTracer]()); err != nil {
		c.errs = append(c.errs, fmt.Errorf("WithTracer: %w", err))
		return
	}
	c.tracers = append(c.tracers, o.t)
}

// WithTracer installs t, checked against the interfaces of the constructor
// it is given to: for NewRelay a value implementing BatchTracer and/or
// BackoffTracer, for NewTable one implementing AddTracer. A value
// implementing none of them is refused with ErrInvalidOption (so one that
// only traces Add is refused by NewRelay, and the other way round); a value
// implementing all three, such as an OpenTelemetry adapter, may be given
// to both. It may be given several times: tracers are called in the order
// given.
func WithTracer(t any) TracerOption { return tracerOption{t} }

// TableOption configures a Table (NewTable). Options are made only by the
// WithX functions of this package; WithTracer is the one there is.
type TableOption interface{ applyTable(*tableConfig) }

type tableConfig struct {
	tracers []any
	errs    []error
}

func newTableConfig(opts []TableOption) (tableConfig, error) {
	var c tableConfig
	for _, o := range opts {
		if o == nil {
			c.errs = append(c.errs, errors.New("nil option"))
			continue
		}
		o.applyTable(&c)
	}
	if len(c.errs) > 0 {
		return c, fmt.Errorf("%w: %w", ErrInvalidOption, errors.Join(c.errs...))
	}
	return c, nil
}
