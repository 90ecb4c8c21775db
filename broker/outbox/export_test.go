package outbox

// FetchSQL returns the statement a relay reads pending rows with, and BeginSQL
// is the one that opens its batches, for the query-plan test.
func FetchSQL(r *Relay) string { return r.fetchSQL }

const BeginSQL = beginSQL
