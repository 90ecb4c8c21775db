// Package storetest holds conformance tests that every implementation of the
// webhook package's store interfaces passes: RunDedup for a
// webhook.DedupStore and RunStore for a webhook.Store. The memory
// implementations and webhook/pgstore run them; so can users' own stores.
package storetest
