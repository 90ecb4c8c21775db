package webhook_test

import (
	"testing"

	"github.com/go-integration/patterns/webhook"
	"github.com/go-integration/patterns/webhook/storetest"
)

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		NewStore: func(*testing.T) webhook.Store { return webhook.NewMemoryStore() },
		NewDedup: func(*testing.T) webhook.DedupStore { return webhook.NewMemoryDedup() },
		Features: storetest.Features{Purge: true},
	})
}
