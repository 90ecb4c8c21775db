package webhook

import (
	"context"
	"sync"
	"time"
)

// DedupState is what a DedupStore knows about a message ID.
type DedupState int

// States of a message ID in a DedupStore.
const (
	// DedupNew: the ID was unknown (or its earlier claim expired) and is now
	// claimed by the caller, who must call Done or Forget.
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

// DedupStore remembers which message IDs a Receiver has handled, so a replayed
// or retried request is not handled twice. Implementations: MemoryDedup (one
// process) and pgstore.Dedup (shared by several processes).
type DedupStore interface {
	// Begin claims id until the time until. It returns DedupNew when id is
	// unknown or its entry expired before now, and otherwise the entry's state
	// without changing it. Only one of several concurrent callers gets DedupNew.
	Begin(ctx context.Context, id string, now, until time.Time) (DedupState, error)
	// Done marks a claimed id as handled and keeps it until the time until.
	Done(ctx context.Context, id string, until time.Time) error
	// Forget removes id, so a later request with it is handled again (the
	// handler failed).
	Forget(ctx context.Context, id string) error
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
	done  bool
	until time.Time
}

// NewMemoryDedup returns an empty MemoryDedup.
func NewMemoryDedup() *MemoryDedup { return &MemoryDedup{entries: make(map[string]dedupEntry)} }

// Begin implements DedupStore.
func (m *MemoryDedup) Begin(_ context.Context, id string, now, until time.Time) (DedupState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[id]; ok && e.until.After(now) {
		if e.done {
			return DedupDone, nil
		}
		return DedupInFlight, nil
	}
	m.entries[id] = dedupEntry{until: until}
	if m.adds++; m.adds >= 1024 && m.adds >= len(m.entries) {
		m.adds = 0
		for k, e := range m.entries {
			if !e.until.After(now) {
				delete(m.entries, k)
			}
		}
	}
	return DedupNew, nil
}

// Done implements DedupStore.
func (m *MemoryDedup) Done(_ context.Context, id string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[id] = dedupEntry{done: true, until: until}
	return nil
}

// Forget implements DedupStore.
func (m *MemoryDedup) Forget(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, id)
	return nil
}

// Len returns how many entries the store holds (expired ones included until swept).
func (m *MemoryDedup) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}
