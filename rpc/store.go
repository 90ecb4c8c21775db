package rpc

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// IdempotencyStore keeps the state of idempotency keys for the Idempotency
// middleware. Implementations must be safe for concurrent use, and Begin must
// be atomic across every server that shares the store: of many concurrent
// Begin calls for one key, exactly one claims it. Keys arrive already scoped
// per caller. MemoryStore is one implementation, rpc/pgstore another;
// rpc/rpctest has a conformance test for new ones.
type IdempotencyStore interface {
	// Begin claims key for a request with the given fingerprint. It returns
	// (nil, nil) when the key was free (unknown or expired): the caller now
	// owns it and must run the request, then call Complete or Release; its
	// claim lapses after lock if it never does (a crashed server). Otherwise
	// it returns the key's record, whose Response is nil while the first
	// request still runs.
	Begin(ctx context.Context, key, fingerprint string, lock time.Duration) (*Record, error)
	// Complete stores the response of the claimed key, kept for ttl.
	Complete(ctx context.Context, key string, resp *StoredResponse, ttl time.Duration) error
	// Release forgets a claimed key whose request produced no response worth
	// keeping, so a retry runs the request again.
	Release(ctx context.Context, key string) error
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
	mu        sync.Mutex
	m         map[string]*memEntry
	lastSweep time.Time
}

type memEntry struct {
	fp      string
	resp    *StoredResponse
	expires time.Time
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{m: map[string]*memEntry{}, lastSweep: time.Now()}
}

// Begin implements IdempotencyStore.
func (s *MemoryStore) Begin(ctx context.Context, key, fingerprint string, lock time.Duration) (*Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.lastSweep) > time.Minute {
		s.sweep(now)
	}
	if e, ok := s.m[key]; ok && now.Before(e.expires) {
		return &Record{Fingerprint: e.fp, Response: e.resp}, nil
	}
	s.m[key] = &memEntry{fp: fingerprint, expires: now.Add(lock)}
	return nil, nil
}

// Complete implements IdempotencyStore.
func (s *MemoryStore) Complete(ctx context.Context, key string, resp *StoredResponse, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		e.resp = resp
		e.expires = time.Now().Add(ttl)
	}
	return nil
}

// Release implements IdempotencyStore.
func (s *MemoryStore) Release(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok && e.resp == nil {
		delete(s.m, key)
	}
	return nil
}

// Len returns how many keys the store holds, expired ones not yet swept included.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func (s *MemoryStore) sweep(now time.Time) {
	for k, e := range s.m {
		if !now.Before(e.expires) {
			delete(s.m, k)
		}
	}
	s.lastSweep = now
}
