package middleware_test

import (
	"testing"

	"github.com/go-integration/patterns/broker/middleware"
	"github.com/go-integration/patterns/broker/middleware/deduptest"
)

func TestMemoryDedupStoreConformance(t *testing.T) {
	deduptest.Run(t, deduptest.Harness{
		New:      func(*testing.T) middleware.DedupStore { return middleware.NewMemoryDedupStore() },
		Features: deduptest.Features{Bubble: true},
	})
}
