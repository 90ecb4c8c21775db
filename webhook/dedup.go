package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DedupState is what a DedupStore knows about a message ID.
type DedupState int

// States of a message ID in a DedupStore.
const (
	// DedupNew: the ID was unknown (or its earlier claim expired) and is now
	// claimed by the caller, who must call Done or Forget with the token.
	DedupNew DedupState = iota
	// DedupInFlight: another request with this ID is being handled.
	DedupInFlight
	// DedupDone: a request with this ID was handled successfully.
	DedupDone
)

// String returns "new", "in flight" or "done".
func (s DedupState) String() string {
	switch s {
	case DedupNew:
		return "new"
	case DedupInFlight:
		return "in flight"
	case DedupDone:
		return "done"
	}
	return "unknown"
}

// DedupClaim is the answer of DedupStore.Begin.
type DedupClaim struct {
	// State says whether the caller now owns the ID (DedupNew).
	State DedupState
	// Token identifies the owner when State is DedupNew (empty otherwise).
	// Done and Forget take it, so that a handler whose claim expired and was
	// taken over cannot change the new owner's claim (fencing).
	Token string
}

// ErrStaleClaim is returned (wrapped) by DedupStore.Done and Forget when the
// token no longer owns the ID: the claim's lease expired and another request
// claimed the ID, or the entry was forgotten or swept.
var ErrStaleClaim = errors.New("webhook: dedup claim is no longer owned by this request")

// DedupStore remembers which message IDs a Receiver has handled, so a replayed
// or retried request is not handled twice. Implementations: MemoryDedup (one
// process) and pgstore.Dedup (shared by several processes); conformance
// tests: storetest.RunDedup.
type DedupStore interface {
	// Begin claims id until the time until, under a new owner token. It
	// returns DedupNew and the token when id is unknown or its entry expired
	// before now, and otherwise the entry's state (no token) without changing
	// it. Only one of several concurrent callers gets DedupNew.
	Begin(ctx context.Context, id string, now, until time.Time) (DedupClaim, error)
	// Done marks id as handled and keeps it until the time until, if token
	// still owns it (no other Begin has taken it over since). Otherwise it
	// changes nothing and returns an error wrapping ErrStaleClaim.
	Done(ctx context.Context, id, token string, until time.Time) error
	// Forget removes id if token still owns it, so a later request with it is
	// handled again (the handler failed). Otherwise it changes nothing and
	// returns an error wrapping ErrStaleClaim.
	Forget(ctx context.Context, id, token string) error
}

// NewDedupToken returns a random owner token (16 bytes, hex), for stores.
func NewDedupToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// MemoryDedup is a DedupStore in memory, for a single process and for tests.
// Expired entries are swept as new ones arrive. The zero value is not usable;
// call NewMemoryDedup.
type MemoryDedup struct {
	mu      sync.Mutex
	entries map[string]dedupEntry
	adds    int
}

type dedupEntry struct {
	owner string
	done  bool
	until time.Time
}

// NewMemoryDedup returns an empty MemoryDedup.
func NewMemoryDedup() *MemoryDedup { return &MemoryDedup{entries: make(map[string]dedupEntry)} }

// Begin implements DedupStore.
func (m *MemoryDedup) Begin(_ context.Context, id string, now, until time.Time) (DedupClaim, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[id]; ok && e.until.After(now) {
		if e.done {
			return DedupClaim{State: DedupDone}, nil
		}
		return DedupClaim{State: DedupInFlight}, nil
	}
	token := NewDedupToken()
	m.entries[id] = dedupEntry{owner: token, until: until}
	if m.adds++; m.adds >= 1024 && m.adds >= len(m.entries) {
		m.adds = 0
		for k, e := range m.entries {
			if !e.until.After(now) {
				delete(m.entries, k)
			}
		}
	}
	return DedupClaim{State: DedupNew, Token: token}, nil
}

// Done implements DedupStore.
func (m *MemoryDedup) Done(_ context.Context, id, token string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[id]; !ok || token == "" || e.owner != token {
		return fmt.Errorf("webhook: dedup done %.64q: %w", id, ErrStaleClaim)
	}
	m.entries[id] = dedupEntry{owner: token, done: true, until: until}
	return nil
}

// Forget implements DedupStore.
func (m *MemoryDedup) Forget(_ context.Context, id, token string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[id]; !ok || token == "" || e.owner != token {
		return fmt.Errorf("webhook: dedup forget %.64q: %w", id, ErrStaleClaim)
	}
	delete(m.entries, id)
	return nil
}

// Len returns how many entries the store holds (expired ones included until swept).
func (m *MemoryDedup) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}
