package outbox

// FetchSQL returns the statement a relay reads pending rows with, and BeginSQL
// is the one that opens its batches, for the query-plan test.
func FetchSQL(r *Relay) string { return r.fetchSQL }

const BeginSQL = beginSQL

// SetHookBeforeMark runs f after the publisher confirmed a batch and before
// its rows are marked (the crash window of TestTxRelayKilledBetweenCommits).
func SetHookBeforeMark(f func()) { testHookBeforeMark = f }
