// Package storetest is the conformance suite every filetransfer.Store passes:
// round trips, atomic replacement, abort and cancellation leaving the previous
// version, streaming of objects larger than any buffer, key validation and
// working download links. Features switches on what only some stores
// promise (links checked by whoever serves them, a Check method).
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			New:      func(t *testing.T) filetransfer.Store { ... },
//			Features: storetest.Features{CheckedLinks: true},
//		})
//	}
package storetest
