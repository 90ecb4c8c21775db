package storetest_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/memory"
	"github.com/go-integration/patterns/filetransfer/storetest"
)

// Run the suite against a store, serving its links from a test server.
func ExampleRun() {
	_ = func(t *testing.T) {
		storetest.Run(t, storetest.Harness{
			New: func(t *testing.T) filetransfer.Store {
				var h http.Handler
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
				t.Cleanup(srv.Close)
				s, err := memory.New(memory.WithBaseURL(srv.URL + "/"))
				if err != nil {
					t.Fatal(err)
				}
				h = s.Handler()
				return s
			},
			Features: storetest.Features{CheckedLinks: true},
		})
	}
}
