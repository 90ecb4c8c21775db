// Package storetest holds the conformance tests that every implementation
// of the webhook package's store interfaces passes: Run with a Harness that
// builds a webhook.Store, a webhook.DedupStore or both, and Features saying
// what the implementation promises. The memory implementations and
// webhook/pgstore run them; so can users' own stores.
package storetest
