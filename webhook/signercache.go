package webhook

import (
	"container/list"
	"sync"
)

// signerCacheSize bounds the Sender's cache of Signers, one per distinct list
// of endpoint secrets: beyond it the least recently used is dropped (and its
// secrets parsed again when next needed).
const signerCacheSize = 1024

// signerCache is a mutex-guarded LRU of Signers keyed by their secrets.
type signerCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*list.Element
	lru list.List // of *signerEntry, most recently used first
}

type signerEntry struct {
	key    string
	signer *Signer
}

func newSignerCache(max int) *signerCache {
	return &signerCache{max: max, m: make(map[string]*list.Element)}
}

// get returns the Signer cached for key, or nil.
func (c *signerCache) get(key string) *Signer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		c.lru.MoveToFront(el)
		return el.Value.(*signerEntry).signer
	}
	return nil
}

// add caches sg for key, unless another goroutine cached one first, and
// returns the cached Signer. It evicts the least recently used beyond max.
func (c *signerCache) add(key string, sg *Signer) *Signer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		c.lru.MoveToFront(el)
		return el.Value.(*signerEntry).signer
	}
	c.m[key] = c.lru.PushFront(&signerEntry{key: key, signer: sg})
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*signerEntry).key)
	}
	return sg
}

// len returns how many Signers are cached.
func (c *signerCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
