// Package refbench compares webhook's Signer and Verifier with the Standard
// Webhooks reference Go library in the same run. It is a module of its own so
// the patterns module does not depend on the reference library:
//
//	cd webhook/internal/refbench && go test -run '^$' -bench . -benchmem
package refbench
