package storetest

import (
	"testing"

	"github.com/go-integration/patterns/webhook"
)

// Harness builds the implementations under test. Run runs the Store tests
// when NewStore is set and the DedupStore tests when NewDedup is set; at
// least one must be.
type Harness struct {
	// NewStore returns an empty webhook.Store, of its own for the test
	// (a fresh schema, say), cleaned up with t.Cleanup.
	NewStore func(t *testing.T) webhook.Store
	// NewDedup returns an empty webhook.DedupStore, likewise.
	NewDedup func(t *testing.T) webhook.DedupStore
	// Features declares what the implementations promise.
	Features Features
}

// Features switches tests on or off. The zero value runs everything every
// implementation must pass.
type Features struct {
	// Purge: the Store implements Purger; its test runs.
	Purge bool
	// NoConcurrency: the implementation is not safe for concurrent use
	// (it is driven by one goroutine), so the tests of concurrent claims
	// are skipped. Every store shipped with this module is concurrent.
	NoConcurrency bool
}

// Run runs the conformance tests of h's implementations, as subtests
// "Store/..." and "Dedup/...".
func Run(t *testing.T, h Harness) {
	if h.NewStore == nil && h.NewDedup == nil {
		t.Fatal("storetest: Harness needs NewStore, NewDedup or both")
	}
	if h.NewStore != nil {
		t.Run("Store", func(t *testing.T) { runStore(t, h) })
	}
	if h.NewDedup != nil {
		t.Run("Dedup", func(t *testing.T) { runDedup(t, h) })
	}
}
