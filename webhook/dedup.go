package webhook

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-integration/patterns/internal/claims"
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
// tests: storetest.Run.
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

// MemoryDedup is a DedupStore in memory (an internal/claims table), for a
// single process and for tests. Expired entries are swept as new ones
// arrive. The zero value is not usable; call NewMemoryDedup.
type MemoryDedup struct {
	m *claims.Map[struct{}] // its clock unused: the callers give the times
}

// NewMemoryDedup returns an empty MemoryDedup.
func NewMemoryDedup() *MemoryDedup {
	return &MemoryDedup{m: claims.New[struct{}](nil)}
}

// Begin implements DedupStore.
func (d *MemoryDedup) Begin(_ context.Context, id string, now, until time.Time) (DedupClaim, error) {
	held, token, claimed := d.m.ClaimUntil(id, now, until)
	switch {
	case claimed:
		return DedupClaim{State: DedupNew, Token: token}, nil
	case held.Done:
		return DedupClaim{State: DedupDone}, nil
	default:
		return DedupClaim{State: DedupInFlight}, nil
	}
}

// Done implements DedupStore.
func (d *MemoryDedup) Done(_ context.Context, id, token string, until time.Time) error {
	if !d.m.CompleteUntil(id, token, struct{}{}, until) {
		return fmt.Errorf("webhook: dedup done %.64q: %w", id, ErrStaleClaim)
	}
	return nil
}

// Forget implements DedupStore.
func (d *MemoryDedup) Forget(_ context.Context, id, token string) error {
	if !d.m.Forget(id, token) {
		return fmt.Errorf("webhook: dedup forget %.64q: %w", id, ErrStaleClaim)
	}
	return nil
}

// Len returns how many entries the store holds (expired ones included until swept).
func (d *MemoryDedup) Len() int { return d.m.Len() }
