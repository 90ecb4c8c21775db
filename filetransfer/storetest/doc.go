// Package storetest is the conformance suite every filetransfer.Store passes:
// round trips, atomic replacement, abort and cancellation leaving the previous
// version, streaming of objects larger than any buffer, key validation and
// working download links.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{New: func(t *testing.T) filetransfer.Store { ... }})
//	}
package storetest
