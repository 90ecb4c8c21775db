package kafka

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves goroutines behind: every
// Subscribe, client and in-process cluster must be shut down.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
