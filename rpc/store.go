package rpc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-integration/patterns/internal/claims"
)

// IdempotencyStore keeps the state of idempotency keys for the Idempotency
// middleware. Implementations must be safe for concurrent use, and Begin must
// be atomic across every server that shares the store: of many concurrent
// Begin calls for one key, exactly one claims it. Keys arrive already scoped
// per caller. MemoryStore is one implementation, rpc/pgstore another;
// rpc/rpctest has a conformance test for new ones.
//
// Every claim gets a new owner token (fencing): a request whose claim lapsed
// and was taken over by another Begin can no longer complete or release the
// key, so it cannot overwrite the newer owner's claim or stored response.
type IdempotencyStore interface {
	// Begin claims key for a request with the given fingerprint. When the key
	// was free (unknown or expired) it returns a Claim with a nil Record and
	// a new owner Token: the caller now owns the key and must run the
	// request, then call Complete or Release with the token; its claim lapses
	// after lock if it never does (a crashed server). Otherwise it returns
	// the key's Record (Token empty), whose Response is nil while the owning
	// request still runs.
	Begin(ctx context.Context, key, fingerprint string, lock time.Duration) (Claim, error)
	// Complete stores the response of the key, kept for ttl, if token still
	// owns it (no other Begin has taken it over since). Otherwise it changes
	// nothing and returns an error wrapping ErrStaleClaim.
	Complete(ctx context.Context, key, token string, resp *StoredResponse, ttl time.Duration) error
	// Release forgets the running claim of key whose request produced no
	// response worth keeping, so a retry runs the request again. It changes
	// nothing and returns nil when token completed the key; when token no
	// longer owns the key it changes nothing and returns an error wrapping
	// ErrStaleClaim.
	Release(ctx context.Context, key, token string) error
}

// ErrStaleClaim is returned (wrapped) by IdempotencyStore.Complete and
// Release when the token no longer owns the key: its lock timeout passed and
// another request claimed the key, or the claim was released or swept.
var ErrStaleClaim = errors.New("rpc: idempotency claim is no longer owned by this request")

// Claim is the answer of IdempotencyStore.Begin.
type Claim struct {
	// Record is the key's state when the caller did not get the key; nil
	// when the caller now owns it.
	Record *Record
	// Token identifies the owner when Record is nil (empty otherwise).
	Token string
}

// Record is the state of a known idempotency key.
type Record struct {
	// Fingerprint of the first request's payload.
	Fingerprint string
	// Response of the first request; nil while it is still running.
	Response *StoredResponse
}

// StoredResponse is a response kept for replay. Treat it as read-only.
type StoredResponse struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

// MemoryStore is an IdempotencyStore in process memory, for a single server
// and for tests. Expired keys are swept at most once a minute.
type MemoryStore struct {
	m *claims.Map[memValue]
}

type memValue struct {
	fp   string
	resp *StoredResponse
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{m: claims.New[memValue](nil)}
}

// Begin implements IdempotencyStore.
func (s *MemoryStore) Begin(ctx context.Context, key, fingerprint string, lock time.Duration) (Claim, error) {
	if err := ctx.Err(); err != nil {
		return Claim{}, err
	}
	held, token, claimed := s.m.ClaimWith(key, lock, memValue{fp: fingerprint})
	if !claimed {
		return Claim{Record: &Record{Fingerprint: held.Value.fp, Response: held.Value.resp}}, nil
	}
	return Claim{Token: token}, nil
}

// Complete implements IdempotencyStore.
func (s *MemoryStore) Complete(ctx context.Context, key, token string, resp *StoredResponse, ttl time.Duration) error {
	e, ok := s.m.Owned(key, token)
	// Complete checks the token again: the claim may have lapsed since.
	if !ok || !s.m.Complete(key, token, memValue{fp: e.Value.fp, resp: resp}, ttl) {
		return fmt.Errorf("rpc: complete key %.64q: %w", key, ErrStaleClaim)
	}
	return nil
}

// Release implements IdempotencyStore.
func (s *MemoryStore) Release(ctx context.Context, key, token string) error {
	if ok, _ := s.m.Release(key, token); !ok {
		return fmt.Errorf("rpc: release key %.64q: %w", key, ErrStaleClaim)
	}
	return nil
}

// Len returns how many keys the store holds, expired ones not yet swept
// included (a gauge for metrics).
func (s *MemoryStore) Len() int { return s.m.Len() }
