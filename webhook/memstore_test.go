package webhook_test

import (
	"testing"

	"github.com/go-integration/patterns/webhook"
	"github.com/go-integration/patterns/webhook/storetest"
)

func TestMemoryStore(t *testing.T) {
	storetest.RunStore(t, func(*testing.T) webhook.Store { return webhook.NewMemoryStore() })
}
