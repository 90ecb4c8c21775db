package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-integration/patterns/internal/hooks"
)

// ErrInvalidOption is wrapped by the errors NewVerifier, NewSender and
// NewReceiver return for an option they cannot accept (a non-positive
// WithAttemptTimeout, a WithTransport function that removes the SSRF guard,
// a WithTracer value implementing none of the tracer interfaces, ...); the
// error names the option.
var ErrInvalidOption = errors.New("webhook: invalid option")

// ErrClosed is returned by a Sender's methods after Close.
var ErrClosed = errors.New("webhook: sender closed")

// optionError is an invalid-option error whose message names the option; it
// matches ErrInvalidOption with errors.Is.
type optionError struct{ msg string }

func (e *optionError) Error() string { return e.msg }
func (e *optionError) Unwrap() error { return ErrInvalidOption }

func optionErrorf(format string, args ...any) error {
	return &optionError{msg: fmt.Sprintf(format, args...)}
}

// VerifierOption configures a Verifier (NewVerifier). It is made only by the
// With functions of this package.
type VerifierOption interface {
	applyVerifier(*verifierConfig) error
}

// SenderOption configures a Sender (NewSender).
type SenderOption interface {
	applySender(*senderConfig) error
}

// ReceiverOption configures a Receiver (NewReceiver).
type ReceiverOption interface {
	applyReceiver(*receiverConfig) error
}

// Option configures a Sender or a Receiver: WithLogger and WithTracer.
type Option interface {
	SenderOption
	ReceiverOption
}

// ClockOption configures a Verifier, a Sender or a Receiver: WithClock.
type ClockOption interface {
	Option
	VerifierOption
}

// common holds the settings every component shares.
type common struct {
	logger  *slog.Logger // nil: slog.Default() when logging
	tracers []any
	now     func() time.Time
}

func defaultCommon() common { return common{now: time.Now} }

// log returns the logger: WithLogger's, or slog.Default() as it is now.
func (c *common) log() *slog.Logger {
	if c.logger != nil {
		return c.logger
	}
	return slog.Default()
}

// logStoreError logs a store failure that the component survives: level
// Error, or Warn for a lost lease or a stale claim, which are expected now
// and then.
func (c *common) logStoreError(ctx context.Context, msg string, err error) {
	level := slog.LevelError
	if errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrStaleClaim) {
		level = slog.LevelWarn
	}
	c.log().Log(ctx, level, msg, "err", err)
}

type senderOpt func(*senderConfig) error

func (f senderOpt) applySender(c *senderConfig) error { return f(c) }

type receiverOpt func(*receiverConfig) error

func (f receiverOpt) applyReceiver(c *receiverConfig) error { return f(c) }

type verifierOpt func(*verifierConfig) error

func (f verifierOpt) applyVerifier(c *verifierConfig) error { return f(c) }

// commonOpt sets a field of common; it implements every option interface,
// and the return type of its With function decides where it is accepted.
type commonOpt func(*common) error

func (f commonOpt) applySender(c *senderConfig) error     { return f(&c.common) }
func (f commonOpt) applyReceiver(c *receiverConfig) error { return f(&c.common) }
func (f commonOpt) applyVerifier(c *verifierConfig) error { return f(&c.common) }

// WithLogger sets the logger of the failures a Sender or Receiver survives:
// store errors (a failed claim, record or disable; a dedup store that fails,
// or refuses a stale claim), at level Error, or Warn for ErrLeaseLost and
// ErrStaleClaim, with the error as the "err" attribute. They are logged
// whether or not a tracer also sees them (TraceStoreError). Default
// slog.Default(), as it is when the error happens. A nil logger is refused.
func WithLogger(l *slog.Logger) Option {
	return commonOpt(func(c *common) error {
		if l == nil {
			return optionErrorf("webhook: WithLogger(nil)")
		}
		c.logger = l
		return nil
	})
}

// WithTracer adds a tracer: a value implementing one or more of the tracer
// interfaces of the component it is given to (AttemptTracer, DisableTracer
// and StoreErrorTracer for a Sender; ReceiveTracer, RejectTracer and
// StoreErrorTracer for a Receiver). Several WithTracer add several tracers,
// called in order. A value implementing none of them is refused with
// ErrInvalidOption, so a misspelt method is an error and not a silent no-op.
// Tracers are called synchronously and must not block.
func WithTracer(t any) Option {
	return commonOpt(func(c *common) error {
		c.tracers = append(c.tracers, t)
		return nil
	})
}

// WithClock sets the clock: of a Verifier, the time webhook timestamps are
// compared with; of a Sender, the time of timestamps, schedules and leases;
// of a Receiver, the time of dedup claims and their expiry. Default
// time.Now. It is for tests (of your receiver with fixed test vectors, of
// lease expiry) and for verifying archived requests; a nil clock is refused.
func WithClock(now func() time.Time) ClockOption {
	return commonOpt(func(c *common) error {
		if now == nil {
			return optionErrorf("webhook: WithClock(nil)")
		}
		c.now = now
		return nil
	})
}

// applyOptions applies opts to c, failing on a nil option or the first bad one.
func applyOptions[O any](opts []O, apply func(O) error) error {
	for i, o := range opts {
		if any(o) == nil {
			return optionErrorf("webhook: option %d is nil", i)
		}
		if err := apply(o); err != nil {
			return err
		}
	}
	return nil
}

// checkTracers refuses a WithTracer value that implements none of the
// component's tracer interfaces.
func checkTracers(ts []any, names string, implements ...func(any) bool) error {
	for _, t := range ts {
		if err := hooks.Check(t, names, implements...); err != nil {
			return optionErrorf("webhook: WithTracer: %v", err)
		}
	}
	return nil
}
