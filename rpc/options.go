package rpc

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Options are typed by what they configure, as franz-go's ProducerOpt and
// ConsumerOpt are: NewTransport and NewClient take TransportOptions,
// Idempotency takes IdempotencyOptions, so an option the other would ignore
// does not compile. An Option (WithTracer) is both. Every option checks its
// arguments; an invalid one makes the constructor fail with an error
// wrapping ErrInvalidOption that names the option.

// TransportOption configures a Transport (see NewTransport and NewClient).
type TransportOption interface{ apply(*config) error }

// Option configures a Transport and the Idempotency middleware alike.
type Option interface {
	TransportOption
	IdempotencyOption
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

// Defaults of the client options.
const (
	DefaultMaxAttempts    = 3
	DefaultBaseDelay      = 100 * time.Millisecond
	DefaultMaxDelay       = 5 * time.Second
	DefaultMaxRetryAfter  = 30 * time.Second
	DefaultBudgetRatio    = 0.2
	DefaultBudgetMinRate  = 10.0
	DefaultBreakerFails   = 5
	DefaultBreakerOpenFor = 30 * time.Second
	// DefaultBreakerMaxHosts is BreakerConfig.MaxHosts when zero.
	DefaultBreakerMaxHosts = 1024
)

type config struct {
	base          http.RoundTripper
	maxAttempts   int
	attemptTO     time.Duration
	backoff       Backoff
	maxRetryAfter time.Duration
	retryStatus   map[int]bool
	budget        *budgetConfig
	noBudget      bool
	breaker       *BreakerConfig
	noBreaker     bool
	keyGen        func() string
	tracers       []any
	set           map[string]bool // options given, to name conflicts
}

type budgetConfig struct {
	ratio   float64
	minRate float64
}

func defaultConfig() config {
	return config{
		base:          nil, // http.DefaultTransport at construction
		maxAttempts:   DefaultMaxAttempts,
		backoff:       ExponentialBackoff{Base: DefaultBaseDelay, Max: DefaultMaxDelay},
		maxRetryAfter: DefaultMaxRetryAfter,
		retryStatus: map[int]bool{
			http.StatusTooManyRequests:    true,
			http.StatusBadGateway:         true,
			http.StatusServiceUnavailable: true,
			http.StatusGatewayTimeout:     true,
		},
		set: map[string]bool{},
	}
}

func (c *config) validate() error {
	conflicts := [][2]string{
		{"WithRetryBudget", "WithoutRetryBudget"},
		{"WithBreaker", "WithoutBreaker"},
	}
	for _, p := range conflicts {
		if c.set[p[0]] && c.set[p[1]] {
			return fmt.Errorf("%w: %s conflicts with %s", ErrInvalidOption, p[0], p[1])
		}
	}
	return nil
}

// ErrInvalidOption is returned (wrapped) by NewTransport, NewClient and
// Idempotency for a bad or conflicting option; the message names the options.
var ErrInvalidOption = errors.New("rpc: invalid option")

// WithBase sets the RoundTripper that sends each attempt. Default:
// http.DefaultTransport.
func WithBase(rt http.RoundTripper) TransportOption {
	return optionFunc(func(c *config) error {
		if rt == nil {
			return fmt.Errorf("%w: WithBase(nil)", ErrInvalidOption)
		}
		c.base = rt
		return nil
	})
}

// WithMaxAttempts sets how many times one request is sent at most, the first
// attempt included. Default 3; 1 disables retries.
func WithMaxAttempts(n int) TransportOption {
	return optionFunc(func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%w: WithMaxAttempts(%d): must be at least 1", ErrInvalidOption, n)
		}
		c.maxAttempts = n
		return nil
	})
}

// WithAttemptTimeout bounds each attempt, from sending the request to closing
// the response body. The request's context bounds the whole call, retries and
// waits included. Default: no per-attempt timeout.
func WithAttemptTimeout(d time.Duration) TransportOption {
	return optionFunc(func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: WithAttemptTimeout(%v): negative", ErrInvalidOption, d)
		}
		c.attemptTO = d
		return nil
	})
}

// WithBackoff sets the wait before each retry when the response carries no
// Retry-After. Default: ExponentialBackoff{Base: 100ms, Max: 5s} (full jitter).
func WithBackoff(b Backoff) TransportOption {
	return optionFunc(func(c *config) error {
		if b == nil {
			return fmt.Errorf("%w: WithBackoff(nil)", ErrInvalidOption)
		}
		if e, ok := b.(ExponentialBackoff); ok {
			if err := e.validate(); err != nil {
				return fmt.Errorf("%w: WithBackoff(%+v): %v", ErrInvalidOption, e, err)
			}
		}
		c.backoff = b
		return nil
	})
}

// WithMaxRetryAfter caps the wait a server can ask for with Retry-After (in
// seconds or as an HTTP date). A longer request is shortened to d. Default 30s.
func WithMaxRetryAfter(d time.Duration) TransportOption {
	return optionFunc(func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: WithMaxRetryAfter(%v): negative", ErrInvalidOption, d)
		}
		c.maxRetryAfter = d
		return nil
	})
}

// WithRetryStatus replaces the response statuses that are retried. Default:
// 429, 502, 503 and 504. Network errors and attempt timeouts are always retried
// (for retryable requests).
func WithRetryStatus(codes ...int) TransportOption {
	return optionFunc(func(c *config) error {
		c.retryStatus = map[int]bool{}
		for _, code := range codes {
			if code < 100 || code > 599 {
				return fmt.Errorf("%w: WithRetryStatus(%d): not an HTTP status", ErrInvalidOption, code)
			}
			c.retryStatus[code] = true
		}
		return nil
	})
}

// WithRetryBudget limits retries to ratio times the number of first attempts
// plus minPerSecond, so that during an outage retries cannot multiply the load
// by more than 1+ratio. Default: ratio 0.2, 10 per second. The budget is shared
// by all hosts of the Transport.
func WithRetryBudget(ratio, minPerSecond float64) TransportOption {
	return optionFunc(func(c *config) error {
		if ratio < 0 || minPerSecond < 0 {
			return fmt.Errorf("%w: WithRetryBudget(%v, %v): negative", ErrInvalidOption, ratio, minPerSecond)
		}
		c.budget = &budgetConfig{ratio: ratio, minRate: minPerSecond}
		c.set["WithRetryBudget"] = true
		return nil
	})
}

// WithoutRetryBudget removes the retry budget: every retryable failure is
// retried up to the maximum attempts.
func WithoutRetryBudget() TransportOption {
	return optionFunc(func(c *config) error {
		c.noBudget = true
		c.set["WithoutRetryBudget"] = true
		return nil
	})
}

// BreakerConfig configures the circuit breaker kept for each host. Zero fields
// take their defaults.
type BreakerConfig struct {
	// Failures is how many consecutive failed attempts (network errors,
	// attempt timeouts, 5xx responses) open the breaker. Default 5.
	Failures uint32
	// OpenFor is how long the breaker stays open before it lets trial
	// requests through (half-open). Default 30s.
	OpenFor time.Duration
	// HalfOpenRequests is how many trial requests may run while half-open;
	// that many successes close the breaker, one failure opens it again. Default 1.
	HalfOpenRequests uint32
	// Interval clears the failure counts of a closed breaker periodically.
	// Default 0: counts are cleared only by a success.
	Interval time.Duration
	// MaxHosts bounds how many closed breakers are kept (one per host): past
	// it, the least recently used closed breaker is dropped, and that host
	// gets a fresh closed breaker when called again. Open and half-open
	// breakers are never dropped, so the bound is MaxHosts plus the hosts
	// whose breakers are not closed. Default DefaultBreakerMaxHosts (1024).
	MaxHosts int
}

// WithBreaker sets the per-host circuit breaker's configuration. Default:
// BreakerConfig{Failures: 5, OpenFor: 30s, HalfOpenRequests: 1, MaxHosts: 1024}.
func WithBreaker(cfg BreakerConfig) TransportOption {
	return optionFunc(func(c *config) error {
		if cfg.OpenFor < 0 || cfg.Interval < 0 {
			return fmt.Errorf("%w: WithBreaker: negative duration", ErrInvalidOption)
		}
		if cfg.MaxHosts < 0 {
			return fmt.Errorf("%w: WithBreaker: negative MaxHosts %d", ErrInvalidOption, cfg.MaxHosts)
		}
		c.breaker = &cfg
		c.set["WithBreaker"] = true
		return nil
	})
}

// WithoutBreaker disables the circuit breakers.
func WithoutBreaker() TransportOption {
	return optionFunc(func(c *config) error {
		c.noBreaker = true
		c.set["WithoutBreaker"] = true
		return nil
	})
}

// WithIdempotencyKeys adds an Idempotency-Key header, made by gen, to every
// request whose method is not safe (POST, PUT, PATCH, DELETE and others except
// GET, HEAD, OPTIONS and TRACE) and has no key yet. The key is made once per
// call and kept across its retries, so POST and PATCH become retryable. A nil
// gen uses NewIdempotencyKey. Default: no keys are added.
func WithIdempotencyKeys(gen func() string) TransportOption {
	return optionFunc(func(c *config) error {
		if gen == nil {
			gen = NewIdempotencyKey
		}
		c.keyGen = gen
		return nil
	})
}
