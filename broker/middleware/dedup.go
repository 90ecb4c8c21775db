package middleware

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/go-integration/patterns/broker"
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

// Default lifetimes of DedupConfig.
const (
	// DefaultHandled is how long a handled ID is remembered.
	DefaultHandled = 24 * time.Hour
	// DefaultInProgress is how long a claim blocks other deliveries of its ID
	// when its owner neither finishes nor releases it (the process crashed).
	DefaultInProgress = time.Minute
)

// DedupConfig configures DedupWith. Zero fields take the defaults.
type DedupConfig struct {
	// Handled is how long an ID stays handled: duplicates arriving within
	// it are acknowledged without calling the handler. Default 24 h.
	Handled time.Duration
	// InProgress is the lifetime of a claim: while a delivery is handled,
	// other deliveries of its ID are refused with ErrInProgress. A consumer
	// that dies while handling blocks redeliveries of the ID for at most this
	// long. Set it above the longest handler run (a shorter Timeout in the
	// chain bounds it): a handler that outlives its claim may see another delivery
	// of the same ID run concurrently, and its own Done then fails with
	// ErrStaleClaim. Default 1 min.
	InProgress time.Duration
}

func (c DedupConfig) withDefaults() DedupConfig {
	if c.Handled <= 0 {
		c.Handled = DefaultHandled
	}
	if c.InProgress <= 0 {
		c.InProgress = DefaultInProgress
	}
	return c
}

// Dedup is DedupWith(store, DedupConfig{Handled: handledTTL}): IDs are
// remembered as handled for handledTTL and claims last DefaultInProgress.
func Dedup(store DedupStore, handledTTL time.Duration) broker.Middleware {
	return DedupWith(store, DedupConfig{Handled: handledTTL})
}

// DedupWith skips messages whose ID was already handled within cfg.Handled
// (returns nil, so the broker acknowledges the duplicate) and refuses, with
// ErrInProgress, a message whose ID another delivery is handling. A failed or
// panicking handler releases its claim so the redelivery runs again. Messages
// without an ID pass through.
//
// If the claim expired while the handler ran and another delivery took it
// over, the handler's outcome is not recorded: Dedup returns an error
// wrapping ErrStaleClaim (joined with the handler's error, if any), so the
// adapter counts a failed attempt and redelivers; the redelivery is then
// settled by the new owner's claim, never marked handled by the stale one.
func DedupWith(store DedupStore, cfg DedupConfig) broker.Middleware {
	cfg = cfg.withDefaults()
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m broker.Message) error {
			if m.ID == "" {
				return next(ctx, m)
			}
			c, err := store.Claim(ctx, m.ID, cfg.InProgress)
			if err != nil {
				return fmt.Errorf("dedup claim %s: %w", m.ID, err)
			}
			switch c.Result {
			case Handled:
				return nil
			case InProgress:
				return ErrInProgress
			}
			if err := callReleasing(ctx, store, m, c.Token, next); err != nil {
				if rerr := store.Release(context.WithoutCancel(ctx), m.ID, c.Token); rerr != nil {
					return errors.Join(err, fmt.Errorf("dedup release %s: %w", m.ID, rerr))
				}
				return err
			}
			if err := store.Done(context.WithoutCancel(ctx), m.ID, c.Token, cfg.Handled); err != nil {
				return fmt.Errorf("dedup done %s: %w", m.ID, err)
			}
			return nil
		}
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

// MemoryDedupStore is a DedupStore in process memory, for tests and single
// processes. Expired entries are swept as new claims arrive.
type MemoryDedupStore struct {
	mu        sync.Mutex
	entries   map[string]dedupEntry
	now       func() time.Time
	lastSweep time.Time
	tokens    uint64
}

type dedupEntry struct {
	done    bool
	token   string
	expires time.Time
}

// NewMemoryDedupStore returns an empty store on the system clock.
func NewMemoryDedupStore() *MemoryDedupStore {
	return NewMemoryDedupStoreWithClock(time.Now)
}

// NewMemoryDedupStoreWithClock returns an empty store that reads the time
// from now, so tests can move time forward instead of sleeping.
func NewMemoryDedupStoreWithClock(now func() time.Time) *MemoryDedupStore {
	return &MemoryDedupStore{entries: make(map[string]dedupEntry), now: now}
}

// Claim implements DedupStore.
func (s *MemoryDedupStore) Claim(_ context.Context, id string, inProgressTTL time.Duration) (Claim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if now.Sub(s.lastSweep) > time.Minute {
		for k, e := range s.entries {
			if !now.Before(e.expires) {
				delete(s.entries, k)
			}
		}
		s.lastSweep = now
	}
	if e, ok := s.entries[id]; ok && now.Before(e.expires) {
		if e.done {
			return Claim{Result: Handled}, nil
		}
		return Claim{Result: InProgress}, nil
	}
	s.tokens++
	token := strconv.FormatUint(s.tokens, 10)
	s.entries[id] = dedupEntry{token: token, expires: now.Add(inProgressTTL)}
	return Claim{Result: Claimed, Token: token}, nil
}

// Done implements DedupStore.
func (s *MemoryDedupStore) Done(_ context.Context, id, token string, handledTTL time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[id]; !ok || e.token != token {
		return fmt.Errorf("middleware: done %.64q: %w", id, ErrStaleClaim)
	}
	s.entries[id] = dedupEntry{done: true, token: token, expires: s.now().Add(handledTTL)}
	return nil
}

// Release implements DedupStore.
func (s *MemoryDedupStore) Release(_ context.Context, id, token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[id]; !ok || e.token != token || e.done {
		return fmt.Errorf("middleware: release %.64q: %w", id, ErrStaleClaim)
	}
	delete(s.entries, id)
	return nil
}

// Len reports how many IDs the store remembers, expired ones not yet swept included.
func (s *MemoryDedupStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}
