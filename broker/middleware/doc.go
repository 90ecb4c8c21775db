// Package middleware holds broker.Middleware that every adapter can use:
// Retry (exponential backoff with full jitter), DeadLetter (publish failures
// to a topic through any broker.Publisher), Recover (a panic becomes an
// error), Timeout, and Dedup (skip messages already handled, by ID, over a
// pluggable DedupStore: MemoryDedupStore here, PostgreSQL in
// broker/middleware/pgdedup, conformance tests in broker/middleware/deduptest).
//
// Constructors follow the module's conventions: what a middleware cannot
// work without is an argument, the rest are options (DedupOption,
// RetryOption, and WithTracer for both), validated at construction with
// errors wrapping ErrInvalidOption: every constructor with arguments
// (Dedup, Retry, Timeout, DeadLetter) returns an error; Recover has
// nothing to check. Dedup and Retry report to tracers
// (DedupTracer, RetryTracer) installed with WithTracer.
//
// Handlers take their context as a parameter, and every middleware derives
// new contexts from it; none stores a context on the message. That keeps
// Timeout inside Retry correct: each attempt gets its own deadline.
//
// A typical chain, outermost first:
//
//	retry, err := middleware.Retry(middleware.WithMaxAttempts(5))
//	if err != nil { ... }
//	dedup, err := middleware.Dedup(store, middleware.WithInProgressFor(30*time.Second))
//	if err != nil { ... }
//	deadLetter, err := middleware.DeadLetter(pub, "bookings.dlq", "billing")
//	if err != nil { ... }
//	timeout, err := middleware.Timeout(10 * time.Second)
//	if err != nil { ... }
//	h = broker.Chain(
//		middleware.Recover(),
//		deadLetter,
//		retry,
//		timeout,
//		dedup,
//	)(h)
package middleware
