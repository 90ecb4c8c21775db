package schemaregistry_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/go-integration/patterns/event/internal/eventbrokers"
	"github.com/go-integration/patterns/internal/testenv"
)

// TestMain fails the package when a test leaves goroutines behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The broker set-up and the CPU clock of the benchmarks are shared with
// event's tests.
var (
	brokers      = eventbrokers.Cases
	run          = eventbrokers.Run
	newCollector = eventbrokers.NewCollector
	processCPU   = testenv.ProcessCPU
)
