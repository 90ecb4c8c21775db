package shareddb

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/internal/hooks"
)

// Defaults of the options of New.
const (
	DefaultMaxLag          = 5 * time.Second
	DefaultCheckInterval   = time.Second
	DefaultCheckTimeout    = time.Second // capped at the check interval
	DefaultTokenWait       = 2 * time.Second
	DefaultFallbackReserve = 100 * time.Millisecond
	DefaultRetries         = 1
	DefaultDrainTimeout    = 30 * time.Second
)

// firstCheckTimeout is the least time New gives each node to answer its first check.
const firstCheckTimeout = 3 * time.Second

// maxReplicas bounds the replicas: the nodes a read tried are a 64-bit mask.
const maxReplicas = 63

// Option configures a ReplicaReader; pass options to New. Options are made
// by the WithX functions of this package only.
type Option interface{ applyReader(*config) }

// ReadOption sets a limit of the reads of a View; pass options to
// ReplicaReader.With. WithToken is one; WithMaxLag, WithMaxLagBytes and
// WithFallback are both a ReadOption and an Option (a reader's default).
type ReadOption interface{ applyRead(*readOpts) }

// LimitOption is an option that sets a read limit either for the whole
// reader (given to New) or for the reads of a View (given to With).
type LimitOption interface {
	Option
	ReadOption
}

type readerOption func(*config)

func (o readerOption) applyReader(c *config) { o(c) }

// limitOption sets a field of readOpts, for a reader (its default limits) or a View.
type limitOption func(*readOpts)

func (o limitOption) applyReader(c *config) { o(&c.read) }
func (o limitOption) applyRead(r *readOpts) { o(r) }

// config is what the options of New set.
type config struct {
	replicaURLs     []string
	read            readOpts // the reader's default read limits
	picker          Picker
	checkInterval   time.Duration
	checkTimeout    time.Duration // 0: DefaultCheckTimeout capped at checkInterval
	tokenWait       time.Duration
	fallbackReserve time.Duration
	retries         int
	contract        *Contract
	poolConfig      func(node string, cfg *pgxpool.Config)
	logger          *slog.Logger
	tracers         []any
	drainTimeout    time.Duration

	errs []error
}

func (c *config) invalid(format string, a ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, a...))
}

func newConfig(primaryURL string, opts []Option) (config, error) {
	c := config{
		read:            readOpts{maxLag: DefaultMaxLag, fallback: FallbackPrimary},
		picker:          LeastLag(),
		checkInterval:   DefaultCheckInterval,
		tokenWait:       DefaultTokenWait,
		fallbackReserve: DefaultFallbackReserve,
		retries:         DefaultRetries,
		logger:          slog.Default(),
		drainTimeout:    DefaultDrainTimeout,
	}
	if primaryURL == "" {
		c.invalid("primary URL is empty")
	}
	for _, o := range opts {
		if o == nil {
			c.invalid("nil Option")
			continue
		}
		o.applyReader(&c)
	}
	if c.read.err != nil {
		c.errs = append(c.errs, c.read.err)
	}
	if len(c.replicaURLs) > maxReplicas {
		c.invalid("WithReplicas: %d replicas, at most %d", len(c.replicaURLs), maxReplicas)
	}
	if c.read.fallback == FallbackRefuse && len(c.replicaURLs) == 0 {
		c.invalid("WithFallback(FallbackRefuse) conflicts with no WithReplicas: every read would be refused")
	}
	switch {
	case c.checkTimeout == 0:
		c.checkTimeout = min(DefaultCheckTimeout, c.checkInterval)
	case c.checkTimeout > c.checkInterval:
		c.invalid("WithCheckTimeout(%v) conflicts with WithCheckInterval(%v): the timeout is longer than the interval", c.checkTimeout, c.checkInterval)
	}
	if len(c.errs) > 0 {
		return c, fmt.Errorf("%w: %w", ErrInvalidOption, errors.Join(c.errs...))
	}
	return c, nil
}

// WithReplicas adds the streaming replicas of the primary (URL or
// key=value connection strings), named replica1, replica2, ... in order;
// given several times, the lists add up. Each must be in recovery (a
// primary is detected and refused by New); an unreachable one is logged and
// used once it answers. At most 63. Default: none, and every read goes to
// the primary (New logs a warning).
func WithReplicas(urls ...string) Option {
	return readerOption(func(c *config) {
		for _, u := range urls {
			if u == "" {
				c.invalid("WithReplicas: empty URL")
				return
			}
		}
		c.replicaURLs = append(c.replicaURLs, urls...)
	})
}

// WithMaxLag sets the largest replay lag a replica may have to serve a read:
// given to New, for every read (default DefaultMaxLag, 5 s); given to With,
// for the View's reads. Zero asks for a caught-up replica; negative accepts
// any lag, even an unknown one. Lag is measured every check interval, so a
// read may see data up to the limit plus the check interval old.
func WithMaxLag(d time.Duration) LimitOption {
	return limitOption(func(o *readOpts) { o.maxLag = d })
}

// WithMaxLagBytes sets the most WAL bytes a replica may be behind the
// primary (as of their last checks) to serve a read, for the reader (New)
// or a View (With). Zero means no byte limit (the default); negative is
// ErrInvalidOption.
func WithMaxLagBytes(n int64) LimitOption {
	return limitOption(func(o *readOpts) {
		if n < 0 {
			o.invalid("WithMaxLagBytes(%d): negative", n)
			return
		}
		o.maxBytes = n
	})
}

// WithFallback says what a read does when no replica qualifies, for the
// reader (New) or a View (With): FallbackPrimary (the default) or
// FallbackRefuse. Given to New, FallbackRefuse without WithReplicas is
// ErrInvalidOption.
func WithFallback(f Fallback) LimitOption {
	return limitOption(func(o *readOpts) {
		if f != FallbackPrimary && f != FallbackRefuse {
			o.invalid("WithFallback(%d): unknown Fallback", int(f))
			return
		}
		o.fallback = f
	})
}

// WithToken makes a View's reads see everything up to the token: a replica
// serves them only once it has replayed that far. When none has, the read
// waits (up to its context's deadline less the fallback reserve, or the
// token wait without a deadline; see WithTokenWait, WithFallbackReserve),
// then reads from the primary, even under FallbackRefuse: the token asks for
// correctness, not for a replica. A token ahead of the primary's current
// WAL position fails the read with ErrInvalidToken, at once: a token beyond
// every WAL position the reader has seen costs one pg_current_wal_lsn() on
// the primary to tell. The zero Token asks for nothing.
func WithToken(t Token) ReadOption {
	return limitOption(func(o *readOpts) { o.token = t.lsn })
}

// WithPicker sets how a read chooses among the replicas that qualify.
// Default: LeastLag().
func WithPicker(p Picker) Option {
	return readerOption(func(c *config) {
		if p == nil {
			c.invalid("WithPicker(nil)")
			return
		}
		c.picker = p
	})
}

// WithCheckInterval sets how often each node is checked in the background.
// It must be positive. Default DefaultCheckInterval (1 s). A stopped
// replica stops getting reads within one interval (at once if a read finds
// it down first).
func WithCheckInterval(d time.Duration) Option {
	return readerOption(func(c *config) {
		if d <= 0 {
			c.invalid("WithCheckInterval(%v): not positive", d)
			return
		}
		c.checkInterval = d
	})
}

// WithCheckTimeout bounds each check, connect included. It must be positive
// and at most the check interval. Default DefaultCheckTimeout (1 s), capped
// at the check interval.
func WithCheckTimeout(d time.Duration) Option {
	return readerOption(func(c *config) {
		if d <= 0 {
			c.invalid("WithCheckTimeout(%v): not positive", d)
			return
		}
		c.checkTimeout = d
	})
}

// WithTokenWait sets how long a read given a Token (WithToken) waits for a
// replica to replay up to it when its context has no deadline; then it
// reads the primary. With a deadline it waits until the deadline less the
// fallback reserve instead. Zero means no wait. Default DefaultTokenWait (2 s).
func WithTokenWait(d time.Duration) Option {
	return readerOption(func(c *config) {
		if d < 0 {
			c.invalid("WithTokenWait(%v): negative", d)
			return
		}
		c.tokenWait = d
	})
}

// WithFallbackReserve sets the part of a context's deadline kept for the
// primary read after waiting for a token. Default DefaultFallbackReserve (100 ms).
func WithFallbackReserve(d time.Duration) Option {
	return readerOption(func(c *config) {
		if d < 0 {
			c.invalid("WithFallbackReserve(%v): negative", d)
			return
		}
		c.fallbackReserve = d
	})
}

// WithRetries sets how many times a read that failed on one node because of
// a recovery conflict or a lost connection is retried on another node
// (another replica, else the primary). Zero means never. Default
// DefaultRetries (1).
func WithRetries(n int) Option {
	return readerOption(func(c *config) {
		if n < 0 {
			c.invalid("WithRetries(%d): negative", n)
			return
		}
		c.retries = n
	})
}

// WithContract has New verify the contract against the primary: a reader
// whose tables changed under it fails at start, listing every difference
// (ErrContract). ReplicaReader.Verify checks it again. Default: none.
func WithContract(ct *Contract) Option {
	return readerOption(func(c *config) {
		if ct == nil {
			c.invalid("WithContract(nil)")
			return
		}
		if err := ct.validate(); err != nil {
			c.invalid("WithContract: %w", err)
			return
		}
		c.contract = ct
	})
}

// WithPoolConfig has f adjust each node's pool config (MaxConns, a pgx
// tracer, ...) before New forces default_transaction_read_only=on; node is
// "primary", "replica1", ... New wraps AfterConnect, PrepareConn and
// BeforeClose (the deprecated BeforeAcquire is ignored: set PrepareConn
// instead).
func WithPoolConfig(f func(node string, cfg *pgxpool.Config)) Option {
	return readerOption(func(c *config) {
		if f == nil {
			c.invalid("WithPoolConfig(nil)")
			return
		}
		c.poolConfig = f
	})
}

// WithLogger sets the logger of health changes (Warn/Info), retries (Info)
// and fallbacks (Debug). Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return readerOption(func(c *config) {
		if l == nil {
			c.invalid("WithLogger(nil)")
			return
		}
		c.logger = l
	})
}

// WithTracer installs t, which implements one or more of QueryTracer,
// QueryRetryTracer, CheckTracer and NodeChangeTracer; a value implementing
// none is ErrInvalidOption. May be given several times: tracers are called
// in order.
func WithTracer(t any) Option {
	return readerOption(func(c *config) {
		if err := hooks.Check(t, "QueryTracer, QueryRetryTracer, CheckTracer, NodeChangeTracer",
			hooks.Is[QueryTracer](), hooks.Is[QueryRetryTracer](), hooks.Is[CheckTracer](), hooks.Is[NodeChangeTracer]()); err != nil {
			c.invalid("WithTracer: %w", err)
			return
		}
		c.tracers = append(c.tracers, t)
	})
}

// WithDrainTimeout bounds how long Close waits for reads in flight (a
// QueryRow, a ReadTx, rows not yet closed) before it cancels their queries
// on the server. It must be positive. Default DefaultDrainTimeout (30 s).
func WithDrainTimeout(d time.Duration) Option {
	return readerOption(func(c *config) {
		if d <= 0 {
			c.invalid("WithDrainTimeout(%v): not positive", d)
			return
		}
		c.drainTimeout = d
	})
}
