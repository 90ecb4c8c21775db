package middleware

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/claims"
)

// ClaimResult says what a DedupStore knows of a message ID.
type ClaimResult int

const (
	// Claimed: the ID is new (or its earlier claim expired); the caller
	// handles it and then calls Done or Release with the claim's token.
	Claimed ClaimResult = iota
	// InProgress: another delivery of the ID is being handled right now.
	InProgress
	// Handled: the ID was handled successfully within the handled lifetime.
	Handled
)

// String returns the result's name.
func (r ClaimResult) String() string {
	switch r {
	case Claimed:
		return "Claimed"
	case InProgress:
		return "InProgress"
	case Handled:
		return "Handled"
	}
	return "ClaimResult(" + strconv.Itoa(int(r)) + ")"
}

// Claim is the answer of DedupStore.Claim.
type Claim struct {
	// Result says whether the caller now owns the ID.
	Result ClaimResult
	// Token identifies the owner when Result is Claimed (empty otherwise).
	// Done and Release take it, so that an owner whose claim expired and was
	// taken over cannot change the new owner's claim (fencing).
	Token string
}

// DedupStore remembers which message IDs were handled. Implementations must be
// safe for concurrent use; a shared one (a database table, see
// broker/middleware/pgdedup) makes dedup work across processes. The
// conformance suite broker/middleware/deduptest checks the promises below.
type DedupStore interface {
	// Claim marks id as in progress for up to inProgressTTL, under a new
	// owner token, unless it is in progress (an unexpired claim) or handled
	// (unexpired). An expired claim or handled entry is taken over. Of any
	// number of concurrent claims of one id exactly one gets Claimed.
	Claim(ctx context.Context, id string, inProgressTTL time.Duration) (Claim, error)
	// Done marks id as handled for handledTTL if token still owns it (no
	// other Claim has taken it over since). Otherwise it changes nothing and
	// returns an error wrapping ErrStaleClaim.
	Done(ctx context.Context, id, token string, handledTTL time.Duration) error
	// Release forgets the in-progress claim of id if token still owns it, so
	// a redelivery runs again. Otherwise it changes nothing and returns an
	// error wrapping ErrStaleClaim.
	Release(ctx context.Context, id, token string) error
}

// ErrInProgress is returned by Dedup when another delivery of the same message
// ID is being handled; the broker redelivers it later.
var ErrInProgress = errors.New("middleware: message with this ID is being handled")

// ErrStaleClaim is returned (wrapped) by DedupStore.Done and Release when the
// token no longer owns the ID: the claim outlived its in-progress lifetime and
// another delivery claimed the ID, or it was released or swept. Dedup returns
// it too, so the broker redelivers the message; the redelivery then meets the
// new owner's claim (in progress or handled).
var ErrStaleClaim = errors.New("middleware: dedup claim is no longer owned by this delivery")

// DedupResult is what Dedup did with a delivery, as its tracers see it.
type DedupResult int

const (
	// DedupClaimed: the delivery claimed its ID and the handler runs.
	DedupClaimed DedupResult = iota
	// DedupSkipped: the ID was handled before; the duplicate is acknowledged
	// without calling the handler.
	DedupSkipped
	// DedupInProgress: another delivery holds the ID's claim; Dedup returns
	// ErrInProgress and the broker redelivers later.
	DedupInProgress
	// DedupStaleClaim: the handler finished after its claim had been taken
	// over by another delivery; its outcome was not recorded (Err wraps
	// ErrStaleClaim).
	DedupStaleClaim
	// DedupError: the store failed (Err says how), claiming the ID or
	// settling the claim.
	DedupError
)

// String returns the result's name.
func (r DedupResult) String() string {
	switch r {
	case DedupClaimed:
		return "claimed"
	case DedupSkipped:
		return "skipped"
	case DedupInProgress:
		return "in-progress"
	case DedupStaleClaim:
		return "stale-claim"
	case DedupError:
		return "error"
	}
	return "DedupResult(" + strconv.Itoa(int(r)) + ")"
}

// TraceDedupData describes one Dedup decision.
type TraceDedupData struct {
	MessageID string
	Topic     string // the delivery's topic (empty when the broker does not set it)
	Result    DedupResult
	// Err is the store's error for DedupStaleClaim and DedupError, else nil.
	Err error
}

// DedupTracer traces Dedup (installed with WithTracer). TraceDedup is a
// point event called in the handler's goroutine: once when Dedup has asked
// the store (DedupClaimed before the handler runs, DedupSkipped,
// DedupInProgress, or DedupError when the claim failed), and once more after
// the handler when settling the claim fails (DedupStaleClaim or DedupError).
// It must not block.
type DedupTracer interface {
	TraceDedup(ctx context.Context, data TraceDedupData)
}

// Dedup returns middleware that skips messages whose ID was already handled
// within the handled lifetime (it returns nil, so the broker acknowledges
// the duplicate) and refuses, with ErrInProgress, a message whose ID another
// delivery is handling. A failed or panicking handler releases its claim so
// the redelivery runs again. Messages without an ID pass through.
//
// If the claim expired while the handler ran and another delivery took it
// over, the handler's outcome is not recorded: Dedup returns an error
// wrapping ErrStaleClaim (joined with the handler's error, if any), so the
// adapter counts a failed attempt and redelivers; the redelivery is then
// settled by the new owner's claim, never marked handled by the stale one.
//
// store is required; WithHandledFor, WithInProgressFor and WithTracer are
// optional. A nil store or a bad option is an error wrapping
// ErrInvalidOption.
func Dedup(store DedupStore, opts ...DedupOption) (broker.Middleware, error) {
	c := dedupConfig{handled: DefaultHandled, inProgress: DefaultInProgress}
	if store == nil {
		c.errs = append(c.errs, errors.New("nil DedupStore"))
	}
	for _, o := range opts {
		if o == nil {
			c.errs = append(c.errs, errors.New("nil option"))
			continue
		}
		o.applyDedup(&c)
	}
	if err := invalid("Dedup", c.errs); err != nil {
		return nil, err
	}
	d := &dedup{store: store, cfg: c}
	return d.wrap, nil
}

type dedup struct {
	store DedupStore
	cfg   dedupConfig
}

func (d *dedup) trace(ctx context.Context, m broker.Message, r DedupResult, err error) {
	for _, t := range d.cfg.tracers {
		t.TraceDedup(ctx, TraceDedupData{MessageID: m.ID, Topic: m.Topic, Result: r, Err: err})
	}
}

// settled traces a failure to settle a claim and returns err.
func (d *dedup) settled(ctx context.Context, m broker.Message, err error) error {
	if errors.Is(err, ErrStaleClaim) {
		d.trace(ctx, m, DedupStaleClaim, err)
	} else {
		d.trace(ctx, m, DedupError, err)
	}
	return err
}

func (d *dedup) wrap(next broker.Handler) broker.Handler {
	return func(ctx context.Context, m broker.Message) error {
		if m.ID == "" {
			return next(ctx, m)
		}
		c, err := d.store.Claim(ctx, m.ID, d.cfg.inProgress)
		if err != nil {
			err = fmt.Errorf("dedup claim %s: %w", m.ID, err)
			d.trace(ctx, m, DedupError, err)
			return err
		}
		switch c.Result {
		case Handled:
			d.trace(ctx, m, DedupSkipped, nil)
			return nil
		case InProgress:
			d.trace(ctx, m, DedupInProgress, nil)
			return ErrInProgress
		}
		d.trace(ctx, m, DedupClaimed, nil)
		if err := callReleasing(ctx, d.store, m, c.Token, next); err != nil {
			if rerr := d.store.Release(context.WithoutCancel(ctx), m.ID, c.Token); rerr != nil {
				rerr = fmt.Errorf("dedup release %s: %w", m.ID, rerr)
				return errors.Join(err, d.settled(ctx, m, rerr))
			}
			return err
		}
		if err := d.store.Done(context.WithoutCancel(ctx), m.ID, c.Token, d.cfg.handled); err != nil {
			return d.settled(ctx, m, fmt.Errorf("dedup done %s: %w", m.ID, err))
		}
		return nil
	}
}

// callReleasing runs next; if it panics, it releases m's claim before the
// panic goes on, so that the redelivery (after a Recover further out) runs
// instead of meeting a claim held in progress until it expires.
func callReleasing(ctx context.Context, store DedupStore, m broker.Message, token string, next broker.Handler) error {
	ok := false
	defer func() {
		if !ok {
			_ = store.Release(context.WithoutCancel(ctx), m.ID, token)
		}
	}()
	err := next(ctx, m)
	ok = true
	return err
}

// MemoryDedupStore is a DedupStore in process memory (internal/claims),
// for tests and single processes. Expired entries are swept as new claims
// arrive.
type MemoryDedupStore struct {
	m *claims.Map[struct{}]
}

// NewMemoryDedupStore returns an empty store on the system clock. (Tests
// that need time to pass run it in a testing/synctest bubble.)
func NewMemoryDedupStore() *MemoryDedupStore {
	return &MemoryDedupStore{m: claims.New[struct{}](nil)}
}

// Claim implements DedupStore.
func (s *MemoryDedupStore) Claim(_ context.Context, id string, inProgressTTL time.Duration) (Claim, error) {
	held, token, claimed := s.m.Claim(id, inProgressTTL)
	switch {
	case claimed:
		return Claim{Result: Claimed, Token: token}, nil
	case held.Done:
		return Claim{Result: Handled}, nil
	}
	return Claim{Result: InProgress}, nil
}

// Done implements DedupStore.
func (s *MemoryDedupStore) Done(_ context.Context, id, token string, handledTTL time.Duration) error {
	if !s.m.Complete(id, token, struct{}{}, handledTTL) {
		return fmt.Errorf("middleware: done %.64q: %w", id, ErrStaleClaim)
	}
	return nil
}

// Release implements DedupStore.
func (s *MemoryDedupStore) Release(_ context.Context, id, token string) error {
	if owned, done := s.m.Release(id, token); !owned || done {
		return fmt.Errorf("middleware: release %.64q: %w", id, ErrStaleClaim)
	}
	return nil
}

// Len reports how many IDs the store remembers, expired ones not yet swept included.
func (s *MemoryDedupStore) Len() int { return s.m.Len() }
