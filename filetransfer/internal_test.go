package filetransfer

import (
	"testing"

	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
)

// The stores check against storeutil's copies of these constants.
func TestConstantsMatchStoreutil(t *testing.T) {
	if MaxLinkTTL != storeutil.MaxLinkTTL || SuccessName != storeutil.SuccessName {
		t.Fatalf("MaxLinkTTL %v / %v, SuccessName %q / %q", MaxLinkTTL, storeutil.MaxLinkTTL, SuccessName, storeutil.SuccessName)
	}
}
