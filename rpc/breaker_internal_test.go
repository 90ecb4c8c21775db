package rpc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestBreakerMapIsBounded calls 10,000 distinct hosts: the Transport keeps at
// most MaxHosts closed breakers, evicting the least recently used, and never
// evicts an open breaker however many hosts come after it.
func TestBreakerMapIsBounded(t *testing.T) {
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		code := http.StatusOK
		if strings.HasPrefix(r.URL.Host, "down") {
			code = http.StatusInternalServerError
		}
		return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: r}, nil
	})
	const maxHosts = 100
	tr, err := NewTransport(WithBase(base), WithBreaker(BreakerConfig{Failures: 2, MaxHosts: maxHosts}), WithoutRetryBudget())
	if err != nil {
		t.Fatal(err)
	}
	call := func(host string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+host+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
	}
	// Two open breakers, the first hosts called.
	for range 2 {
		call("down-1.example")
		call("down-2.example")
	}
	for _, h := range []string{"down-1.example", "down-2.example"} {
		if s := tr.BreakerState(h); s != BreakerOpen {
			t.Fatalf("%s: %v, want open", h, s)
		}
	}
	// One closed breaker that is used all along: never the least recent.
	call("busy.example")
	for i := range 10000 {
		call(fmt.Sprintf("host-%d.example", i))
		call("busy.example")
		if n := breakerCount(tr); n > maxHosts+2 {
			t.Fatalf("after %d hosts: %d breakers, want at most %d closed + 2 open", i+1, n, maxHosts)
		}
	}
	for _, h := range []string{"down-1.example", "down-2.example"} {
		if s := tr.BreakerState(h); s != BreakerOpen {
			t.Fatalf("%s after 10,000 other hosts: %v, want still open", h, s)
		}
	}
	if !hasBreaker(tr, "busy.example") {
		t.Fatal("the recently used breaker was evicted")
	}
	if hasBreaker(tr, "host-0.example") {
		t.Fatal("the least recently used closed breaker was kept")
	}
}

// The default bound applies when MaxHosts is zero.
func TestBreakerMapDefaultBound(t *testing.T) {
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: r}, nil
	})
	tr, err := NewTransport(WithBase(base))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10000 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://h%d.example/", i), nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := breakerCount(tr); n != DefaultBreakerMaxHosts {
		t.Fatalf("%d breakers after 10,000 hosts, want %d", n, DefaultBreakerMaxHosts)
	}
	if _, err := NewTransport(WithBreaker(BreakerConfig{MaxHosts: -1})); err == nil {
		t.Fatal("MaxHosts -1 accepted")
	}
}

func breakerCount(t *Transport) int { return t.breakers.len() }

func hasBreaker(t *Transport, host string) bool { return t.breakers.lookup(host) != nil }

// A breaker evicted while a call still holds it, and opened by that call's
// failures, is put back: an open breaker is never lost.
func TestEvictedBreakerThatOpensIsKept(t *testing.T) {
	rec := &breakerRec{}
	b := newBreakers(BreakerConfig{Failures: 2, MaxHosts: 1}, []BreakerTracer{rec})
	held := b.get("a")
	b.get("b") // evicts a (closed)
	if b.lookup("a") != nil {
		t.Fatal("a not evicted")
	}
	for range 2 {
		done, err := held.allow(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		done(errAttemptFailed)
	}
	if cb := b.lookup("a"); cb != held || cb.currentState(context.Background()) != BreakerOpen {
		t.Fatalf("a after opening: %v", cb)
	}
	if b.opens.Load() != 1 {
		t.Fatalf("opens = %d, want 1", b.opens.Load())
	}
	changes := rec.changes
	if len(changes) != 1 || changes[0].Host != "a" || changes[0].To != BreakerOpen {
		t.Fatalf("changes %+v", changes)
	}
	if n := b.len(); n != 1 || b.lookup("b") != nil {
		t.Fatalf("%d breakers; want only a (open): b, closed, makes room", n)
	}
}

type breakerRec struct{ changes []TraceBreakerChangeData }

func (r *breakerRec) TraceBreakerChange(_ context.Context, c TraceBreakerChangeData) {
	r.changes = append(r.changes, c)
}
