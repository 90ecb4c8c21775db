package memory_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/memory"
	"github.com/go-integration/patterns/filetransfer/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) filetransfer.Store {
			var h http.Handler
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
			t.Cleanup(srv.Close)
			s, err := memory.New(memory.WithBaseURL(srv.URL + "/files/"))
			if err != nil {
				t.Fatal(err)
			}
			h = s.Handler()
			return s
		},
		Features: storetest.Features{CheckedLinks: true},
	})
}

func TestBadOptions(t *testing.T) {
	for name, opts := range map[string][]memory.Option{
		"nil option":   {nil},
		"empty URL":    {memory.WithBaseURL("")},
		"relative URL": {memory.WithBaseURL("/files/")},
		"ftp URL":      {memory.WithBaseURL("ftp://x/")},
		"short secret": {memory.WithSecret([]byte("short"))},
		"nil secret":   {memory.WithSecret(nil)},
	} {
		if _, err := memory.New(opts...); !errors.Is(err, filetransfer.ErrInvalidOption) {
			t.Errorf("%s: New = %v, want ErrInvalidOption", name, err)
		}
	}
	if _, err := memory.New(memory.WithSecret([]byte("0123456789abcdef")), memory.WithBaseURL("https://files.example.com/dl")); err != nil {
		t.Errorf("good options: %v", err)
	}
}
