package fs_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/fs"
	"github.com/go-integration/patterns/filetransfer/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		CheckedLinks: true,
		New: func(t *testing.T) filetransfer.Store {
			var h http.Handler
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
			t.Cleanup(srv.Close)
			s, err := fs.New(fs.Config{Dir: t.TempDir(), BaseURL: srv.URL + "/dl/", Secret: []byte("0123456789abcdef0123")})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			h = s.Handler()
			return s
		},
	})
}
