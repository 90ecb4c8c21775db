package middleware

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-integration/patterns/broker"
)

// ClaimResult says what a DedupStore knows of a message ID.
type ClaimResult int

const (
	// Claimed: the ID is new; the caller handles it and then calls Done or Release.
	Claimed ClaimResult = iota
	// InProgress: another delivery of the ID is being handled right now.
	InProgress
	// Handled: the ID was handled successfully within the TTL.
	Handled
)

// DedupStore remembers which message IDs were handled. Implementations must be
// safe for concurrent use; a shared one (a database table) makes dedup work
// across processes.
type DedupStore interface {
	// Claim marks id as in progress for up to ttl unless it is already in
	// progress or handled.
	Claim(ctx context.Context, id string, ttl time.Duration) (ClaimResult, error)
	// Done marks a claimed id as handled for ttl.
	Done(ctx context.Context, id string, ttl time.Duration) error
	// Release forgets a claim whose handling failed, so a redelivery runs again.
	Release(ctx context.Context, id string) error
}

// ErrInProgress is returned by Dedup when another delivery of the same message
// ID is being handled; the broker redelivers it later.
var ErrInProgress = errors.New("middleware: message with this ID is being handled")

// Dedup skips messages whose ID was already handled within ttl (returns nil,
// so the broker acknowledges the duplicate). A failed or panicking handler
// releases its claim so the redelivery runs again. Messages without an ID pass through.
func Dedup(store DedupStore, ttl time.Duration) broker.Middleware {
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m broker.Message) error {
			if m.ID == "" {
				return next(ctx, m)
			}
			res, err := store.Claim(ctx, m.ID, ttl)
			if err != nil {
				return fmt.Errorf("dedup claim %s: %w", m.ID, err)
			}
			switch res {
			case Handled:
				return nil
			case InProgress:
				return ErrInProgress
			}
			if err := callReleasing(ctx, store, m, next); err != nil {
				if rerr := store.Release(context.WithoutCancel(ctx), m.ID); rerr != nil {
					return errors.Join(err, fmt.Errorf("dedup release %s: %w", m.ID, rerr))
				}
				return err
			}
			if err := store.Done(context.WithoutCancel(ctx), m.ID, ttl); err != nil {
				return fmt.Errorf("dedup done %s: %w", m.ID, err)
			}
			return nil
		}
	}
}

// callReleasing runs next; if it panics, it releases m's claim before the
// panic goes on, so that the redelivery (after a Recover further out) runs
// instead of meeting a claim held in progress until its TTL.
func callReleasing(ctx context.Context, store DedupStore, m broker.Message, next broker.Handler) error {
	ok := false
	defer func() {
		if !ok {
			_ = store.Release(context.WithoutCancel(ctx), m.ID)
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
}

type dedupEntry struct {
	done    bool
	expires time.Time
}

// NewMemoryDedupStore returns an empty store.
func NewMemoryDedupStore() *MemoryDedupStore {
	return &MemoryDedupStore{entries: make(map[string]dedupEntry), now: time.Now}
}

// Claim implements DedupStore.
func (s *MemoryDedupStore) Claim(_ context.Context, id string, ttl time.Duration) (ClaimResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if now.Sub(s.lastSweep) > time.Minute {
		for k, e := range s.entries {
			if now.After(e.expires) {
				delete(s.entries, k)
			}
		}
		s.lastSweep = now
	}
	if e, ok := s.entries[id]; ok && now.Before(e.expires) {
		if e.done {
			return Handled, nil
		}
		return InProgress, nil
	}
	s.entries[id] = dedupEntry{expires: now.Add(ttl)}
	return Claimed, nil
}

// Done implements DedupStore.
func (s *MemoryDedupStore) Done(_ context.Context, id string, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries[id] = dedupEntry{done: true, expires: s.now().Add(ttl)}
	return nil
}

// Release implements DedupStore.
func (s *MemoryDedupStore) Release(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.entries, id)
	return nil
}

// Len reports how many IDs the store remembers, expired ones not yet swept included.
func (s *MemoryDedupStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}
