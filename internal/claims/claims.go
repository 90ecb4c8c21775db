// Package claims is the in-memory claim table behind every memory store of
// this module that hands out fenced claims (broker/middleware's
// MemoryDedupStore, rpc's MemoryStore, webhook's MemoryDedup): a key is
// claimed with an owner token for a while, then settled (done, with a value)
// or released, and only the owner's token can settle or release it.
package claims

import (
	"sync"
	"time"

	"github.com/go-integration/patterns/internal/ids"
)

// Entry is the state of a claimed key.
type Entry[V any] struct {
	Token   string    // owner token
	Done    bool      // settled by Complete
	Value   V         // what Complete stored
	Expires time.Time // end of the claim (or of the settled entry)
}

// Map is a table of claims with expiry. The zero value is not usable; call New.
type Map[V any] struct {
	mu        sync.Mutex
	m         map[string]*Entry[V]
	now       func() time.Time
	lastSweep time.Time
}

// New returns an empty Map reading time from now (time.Now when nil).
func New[V any](now func() time.Time) *Map[V] {
	if now == nil {
		now = time.Now
	}
	return &Map[V]{m: make(map[string]*Entry[V]), now: now, lastSweep: now()}
}

// Claim takes key for ttl with a new owner token unless a live entry holds it.
// claimed reports which: when false, held is a copy of the live entry (its
// Token cleared, so it cannot be used to settle).
func (c *Map[V]) Claim(key string, ttl time.Duration) (held Entry[V], token string, claimed bool) {
	var zero V
	return c.ClaimWith(key, ttl, zero)
}

// ClaimWith is Claim that gives the new, unsettled entry the Value v, which
// other claimants see in held while it runs (rpc's MemoryStore keeps the
// request fingerprint there). Complete replaces it.
func (c *Map[V]) ClaimWith(key string, ttl time.Duration, v V) (held Entry[V], token string, claimed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	return c.claim(key, now, now.Add(ttl), v)
}

// ClaimUntil is Claim for a caller that brings its own clock reading: the
// Map's clock is not read, the time is now and the claim lasts until until
// (webhook's MemoryDedup, whose DedupStore.Begin is given both).
func (c *Map[V]) ClaimUntil(key string, now, until time.Time) (held Entry[V], token string, claimed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	return c.claim(key, now, until, zero)
}

// claim sweeps expired entries (at most once a minute) and takes key at now
// until expires unless a live entry holds it. Callers hold c.mu.
func (c *Map[V]) claim(key string, now, expires time.Time, v V) (held Entry[V], token string, claimed bool) {
	if now.Sub(c.lastSweep) > time.Minute {
		for k, e := range c.m {
			if !now.Before(e.Expires) {
				delete(c.m, k)
			}
		}
		c.lastSweep = now
	}
	if e, ok := c.m[key]; ok && now.Before(e.Expires) {
		held = *e
		held.Token = ""
		return held, "", false
	}
	token = ids.Hex()
	c.m[key] = &Entry[V]{Token: token, Value: v, Expires: expires}
	return Entry[V]{}, token, true
}

// owned returns key's entry if token owns it. Callers hold c.mu.
func (c *Map[V]) owned(key, token string) *Entry[V] {
	e, ok := c.m[key]
	if !ok || token == "" || e.Token != token {
		return nil
	}
	return e
}

// Owned returns a copy of key's entry when token owns it (ok false
// otherwise), for an owner that settles with a value derived from the
// entry's (Complete still checks the token).
func (c *Map[V]) Owned(key, token string) (e Entry[V], ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.owned(key, token); p != nil {
		return *p, true
	}
	return Entry[V]{}, false
}

// Complete settles key with v for ttl. It reports false, changing nothing,
// when token does not own key (the claim expired and another owner took it,
// or it was released).
func (c *Map[V]) Complete(key, token string, v V, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.complete(key, token, v, c.now().Add(ttl))
}

// CompleteUntil is Complete keeping the settled entry until until rather
// than for a TTL from the Map's clock.
func (c *Map[V]) CompleteUntil(key, token string, v V, until time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.complete(key, token, v, until)
}

// complete settles key with v until expires if token owns it. Callers hold c.mu.
func (c *Map[V]) complete(key, token string, v V, expires time.Time) bool {
	e := c.owned(key, token)
	if e == nil {
		return false
	}
	e.Done, e.Value, e.Expires = true, v, expires
	return true
}

// Release drops token's claim on key so the key can be claimed at once. A
// settled entry is kept (done reports it). owned is false, and nothing
// changes, when token does not own key.
func (c *Map[V]) Release(key, token string) (owned, done bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.owned(key, token)
	if e == nil {
		return false, false
	}
	if e.Done {
		return true, true
	}
	delete(c.m, key)
	return true, false
}

// Forget drops token's entry on key, settled or not. It reports false, and
// changes nothing, when token does not own key.
func (c *Map[V]) Forget(key, token string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.owned(key, token) == nil {
		return false
	}
	delete(c.m, key)
	return true
}

// Len returns how many entries the Map holds, expired ones not yet swept included.
func (c *Map[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
