package middleware

import (
	"errors"
	"fmt"
	"time"

	"github.com/go-integration/patterns/internal/backoff"
	"github.com/go-integration/patterns/internal/hooks"
)

// ErrInvalidOption is returned (wrapped) by Dedup and Retry for a bad
// argument or option, and by the handler of Timeout or DeadLetter built with
// a bad argument; the error names the option.
var ErrInvalidOption = errors.New("middleware: invalid option")

// DedupOption configures Dedup; RetryOption configures Retry. Options that
// fit both (WithTracer) are of type Option. Passing a Retry option to Dedup
// (or the reverse) does not compile.
type (
	DedupOption interface{ applyDedup(*dedupConfig) }
	RetryOption interface{ applyRetry(*retryConfig) }
	// Option configures Dedup or Retry.
	Option interface {
		DedupOption
		RetryOption
	}
)

type dedupOption func(*dedupConfig)

func (o dedupOption) applyDedup(c *dedupConfig) { o(c) }

type retryOption func(*retryConfig)

func (o retryOption) applyRetry(c *retryConfig) { o(c) }

type tracerOption struct{ t any }

func (o tracerOption) applyDedup(c *dedupConfig) {
	if err := hooks.Check(o.t, "DedupTracer", hooks.Is[DedupTracer]()); err != nil {
		c.errs = append(c.errs, fmt.Errorf("WithTracer: %w", err))
		return
	}
	c.tracers = append(c.tracers, o.t.(DedupTracer))
}

func (o tracerOption) applyRetry(c *retryConfig) {
	if err := hooks.Check(o.t, "RetryTracer", hooks.Is[RetryTracer]()); err != nil {
		c.errs = append(c.errs, fmt.Errorf("WithTracer: %w", err))
		return
	}
	c.tracers = append(c.tracers, o.t.(RetryTracer))
}

// WithTracer installs t, which must implement the tracer interface of what
// it is given to (DedupTracer for Dedup, RetryTracer for Retry; a value may
// implement both and be given to each). A value implementing none of them is
// refused with ErrInvalidOption, so a misspelt method is not a silent no-op.
// It may be given several times: the tracers are called in order.
func WithTracer(t any) Option { return tracerOption{t} }

// Default values of the options.
const (
	// DefaultHandled is how long Dedup remembers a handled ID (WithHandledFor).
	DefaultHandled = 24 * time.Hour
	// DefaultInProgress is how long a claim blocks other deliveries of its ID
	// when its owner neither finishes nor releases it, because the process
	// crashed (WithInProgressFor).
	DefaultInProgress = time.Minute
	// DefaultMaxAttempts bounds Retry's handler calls per delivery (WithMaxAttempts).
	DefaultMaxAttempts = 5
	// DefaultBackoffMin and DefaultBackoffMax are Retry's backoff (WithBackoff).
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
)

type dedupConfig struct {
	handled, inProgress time.Duration
	tracers             []DedupTracer
	errs                []error
}

// WithHandledFor sets how long an ID stays handled: duplicates arriving
// within d are acknowledged without calling the handler. It must be
// positive; default DefaultHandled (24 h).
func WithHandledFor(d time.Duration) DedupOption {
	return dedupOption(func(c *dedupConfig) { c.handled = positive(&c.errs, "WithHandledFor", d) })
}

// WithInProgressFor sets the lifetime of a claim: while a delivery is
// handled, other deliveries of its ID are refused with ErrInProgress. A
// consumer that dies while handling blocks redeliveries of the ID for at
// most d. Set it above the longest handler run (a shorter Timeout in the
// chain bounds it): a handler that outlives its claim may see another
// delivery of the same ID run concurrently, and its own Done then fails with
// ErrStaleClaim. It must be positive; default DefaultInProgress (1 min).
func WithInProgressFor(d time.Duration) DedupOption {
	return dedupOption(func(c *dedupConfig) { c.inProgress = positive(&c.errs, "WithInProgressFor", d) })
}

type retryConfig struct {
	maxAttempts int
	backoff     backoff.Policy
	maxElapsed  time.Duration
	tracers     []RetryTracer
	errs        []error
}

// WithMaxAttempts bounds the calls of the handler per delivery, the first
// included; n >= 1 (1: no retry). Default DefaultMaxAttempts (5).
func WithMaxAttempts(n int) RetryOption {
	return retryOption(func(c *retryConfig) {
		if n < 1 {
			c.errs = append(c.errs, fmt.Errorf("WithMaxAttempts(%d): must be at least 1", n))
		}
		c.maxAttempts = n
	})
}

// WithBackoff sets the wait between attempts: after the n-th failure a
// uniformly random duration in [0, min(maxWait, minWait·2^(n-1))] (full
// jitter, so many failing consumers spread out). 0 < minWait <= maxWait;
// default DefaultBackoffMin (100 ms) and DefaultBackoffMax (10 s).
func WithBackoff(minWait, maxWait time.Duration) RetryOption {
	return retryOption(func(c *retryConfig) {
		p := backoff.Policy{Min: minWait, Max: maxWait}
		if err := p.Validate(); err != nil {
			c.errs = append(c.errs, fmt.Errorf("WithBackoff(%v, %v): %w", minWait, maxWait, err))
		}
		c.backoff = p
	})
}

// WithMaxElapsed stops retrying once d has passed since the first attempt
// (the attempt running then still completes). It must be positive; by
// default only WithMaxAttempts bounds Retry.
func WithMaxElapsed(d time.Duration) RetryOption {
	return retryOption(func(c *retryConfig) { c.maxElapsed = positive(&c.errs, "WithMaxElapsed", d) })
}

// positive returns d, recording an error naming option when d is not positive.
func positive(errs *[]error, option string, d time.Duration) time.Duration {
	if d <= 0 {
		*errs = append(*errs, fmt.Errorf("%s(%v): must be positive", option, d))
	}
	return d
}

// invalid joins errs into one error wrapping ErrInvalidOption, or nil.
func invalid(what string, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s: %w", ErrInvalidOption, what, errors.Join(errs...))
}
