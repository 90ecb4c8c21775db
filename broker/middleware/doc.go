// Package middleware holds broker.Middleware that every adapter can use:
// Retry (exponential backoff with full jitter), DeadLetter (publish failures
// to a topic through any broker.Publisher), Recover (a panic becomes an
// error), Timeout, and Dedup (skip messages already handled, by ID, over a
// pluggable DedupStore: MemoryDedupStore here, PostgreSQL in
// broker/middleware/pgdedup, conformance tests in broker/middleware/deduptest).
//
// Handlers take their context as a parameter, and every middleware derives
// new contexts from it; none stores a context on the message. That keeps
// Timeout inside Retry correct: each attempt gets its own deadline.
//
// A typical chain, outermost first:
//
//	h = broker.Chain(
//		middleware.Recover(),
//		middleware.DeadLetter(pub, "bookings.dlq", "billing"),
//		middleware.Retry(middleware.RetryPolicy{MaxAttempts: 5}),
//		middleware.Timeout(10*time.Second),
//		middleware.DedupWith(store, middleware.DedupConfig{Handled: 24 * time.Hour, InProgress: 30 * time.Second}),
//	)(h)
package middleware
