package schemaregistry_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// fake is franz-go's in-process registry (srfake, the REST API over
// httptest) with what these tests add in front of it: a request count per
// route, a switch that makes it answer 503, and subjects whose compatibility
// check fails (srfake finds everything compatible).
type fake struct {
	*srfake.Registry
	requests     atomic.Int64
	down         atomic.Bool
	mu           sync.Mutex
	byRoute      map[string]int
	incompatible map[string]bool
}

func newFake(t testing.TB) *fake {
	t.Helper()
	f := &fake{Registry: srfake.New(), byRoute: map[string]int{}, incompatible: map[string]bool{}}
	t.Cleanup(f.Close)
	f.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		f.requests.Add(1)
		f.mu.Lock()
		f.byRoute[route(r)]++
		incompatible := false
		for s := range f.incompatible {
			if r.URL.Path == "/compatibility/subjects/"+s+"/versions/latest" {
				incompatible = true
			}
		}
		f.mu.Unlock()
		switch {
		case f.down.Load():
			reply(w, http.StatusServiceUnavailable, map[string]any{"error_code": 50003, "message": "down for the test"})
			return true
		case incompatible:
			reply(w, http.StatusOK, map[string]any{"is_compatible": false, "messages": []string{"field seq: type changed from long to string"}})
			return true
		}
		return false
	})
	return f
}

func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// route names a request by method and path with the subject or id left out.
func route(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/schemas/ids/"):
		p = "/schemas/ids/{id}"
	case strings.HasPrefix(p, "/compatibility/subjects/"):
		p = "/compatibility/subjects/{s}/versions/latest"
	case strings.HasPrefix(p, "/subjects/") && strings.HasSuffix(p, "/versions"):
		p = "/subjects/{s}/versions"
	case strings.HasPrefix(p, "/subjects/"):
		p = "/subjects/{s}"
	}
	return r.Method + " " + p
}

func (f *fake) routes() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.byRoute))
	for k, v := range f.byRoute {
		out[k] = v
	}
	return out
}

func (f *fake) setIncompatible(subject string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.incompatible[subject] = true
}

// client is a new sr client of f, as a separate process would have.
func (f *fake) client(t testing.TB) *sr.Client {
	t.Helper()
	cl, err := sr.NewClient(sr.URLs(f.URL()))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func srSchema(avroSchema string) sr.Schema { return sr.Schema{Schema: avroSchema, Type: sr.TypeAvro} }
