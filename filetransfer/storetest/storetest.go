package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
)

// Harness describes the store under test.
type Harness struct {
	// New returns an empty store for one subtest; register clean-up with t.Cleanup.
	New func(t *testing.T) filetransfer.Store
	// HTTPClient fetches links; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Features declares what the store promises beyond the basics.
	Features Features
}

// Features switches groups of tests on and sizes them. The zero value runs
// what every store must pass: round trips, empty objects, not found,
// replacement atomic until Commit, Abort and cancellation keeping the
// previous version, a streamed object larger than any buffer, Delete,
// invalid keys, concurrent writers, and links that download the object with
// lifetimes limited to (0, MaxLinkTTL].
type Features struct {
	// CheckedLinks: whoever serves the store's links checks them, so a link
	// with a tampered key, expiry or signature, or none, gets 403. True for
	// the folder and memory stores; S3 fakes do not check presigned
	// signatures.
	CheckedLinks bool
	// Check: the store implements filetransfer.Checker, and Check succeeds
	// on a store New returned.
	Check bool
	// LargeSize is the size of the streaming test object; 0 means 12 MiB
	// (more than two S3 parts at the 5 MiB minimum).
	LargeSize int
}

// Run runs the suite as subtests of t.
func Run(t *testing.T, h Harness) {
	if h.HTTPClient == nil {
		h.HTTPClient = http.DefaultClient
	}
	if h.Features.LargeSize == 0 {
		h.Features.LargeSize = 12 << 20
	}
	type test struct {
		name string
		fn   func(t *testing.T, h Harness, s filetransfer.Store)
	}
	tests := []test{
		{"RoundTrip", testRoundTrip},
		{"Empty", testEmpty},
		{"NotFound", testNotFound},
		{"ReplaceIsAtomic", testReplace},
		{"AbortKeepsPrevious", testAbort},
		{"CancelKeepsPrevious", testCancel},
		{"Large", testLarge},
		{"Delete", testDelete},
		{"InvalidKeys", testInvalidKeys},
		{"Concurrent", testConcurrent},
		{"URL", testURL},
	}
	if h.Features.Check {
		tests = append(tests, test{"Check", testCheck})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := h.New(t)
			tc.fn(t, h, s)
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustPut(t *testing.T, s filetransfer.Store, key string, data []byte) {
	t.Helper()
	if err := storeutil.Put(ctx(t), s.Create, key, data); err != nil {
		t.Fatalf("Put(%s): %v", key, err)
	}
}

func mustRead(t *testing.T, s filetransfer.Store, key string) []byte {
	t.Helper()
	b, err := storeutil.ReadAll(ctx(t), s, key)
	if err != nil {
		t.Fatalf("ReadAll(%s): %v", key, err)
	}
	return b
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func testRoundTrip(t *testing.T, h Harness, s filetransfer.Store) {
	data := append([]byte("id,name\n1,\"a, \"\"b\"\"\"\n2,é☃\x00\xff\n"), randomBytes(1000, 1)...)
	mustPut(t, s, "ds/dt=2024-01-01/ds-2024-01-01.csv", data)
	if got := mustRead(t, s, "ds/dt=2024-01-01/ds-2024-01-01.csv"); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want %d identical bytes", len(got), len(data))
	}
}

func testEmpty(t *testing.T, h Harness, s filetransfer.Store) {
	mustPut(t, s, "empty/_SUCCESS", nil)
	if got := mustRead(t, s, "empty/_SUCCESS"); len(got) != 0 {
		t.Fatalf("empty object read back as %d bytes", len(got))
	}
}

func testNotFound(t *testing.T, h Harness, s filetransfer.Store) {
	_, err := s.Open(ctx(t), "missing/nothing.csv")
	if !errors.Is(err, filetransfer.ErrNotFound) {
		t.Fatalf("Open(missing) = %v, want ErrNotFound", err)
	}
}

func testReplace(t *testing.T, h Harness, s filetransfer.Store) {
	const key = "r/dt=2024-01-02/r.csv"
	mustPut(t, s, key, []byte("old\n"))
	w, err := s.Create(ctx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("new, half")); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, s, key); string(got) != "old\n" {
		t.Fatalf("before Commit readers see %q, want the old version", got)
	}
	if _, err := w.Write([]byte(" and the rest\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if got := mustRead(t, s, key); string(got) != "new, half and the rest\n" {
		t.Fatalf("after Commit readers see %q", got)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort after Commit: %v", err)
	}
	if got := mustRead(t, s, key); string(got) != "new, half and the rest\n" {
		t.Fatalf("Abort after Commit changed the object to %q", got)
	}
}

func testAbort(t *testing.T, h Harness, s filetransfer.Store) {
	const key = "a/a.csv"
	mustPut(t, s, key, []byte("v1"))
	w, err := s.Create(ctx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(randomBytes(1<<20, 2)); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("second Abort: %v", err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("Write after Abort succeeded")
	}
	if err := w.Commit(); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
	if got := mustRead(t, s, key); string(got) != "v1" {
		t.Fatalf("after Abort readers see %q, want v1", got)
	}
	// A new key that was aborted never appears.
	w, err = s.Create(ctx(t), "a/new.csv")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("partial"))
	_ = w.Abort()
	if _, err := s.Open(ctx(t), "a/new.csv"); !errors.Is(err, filetransfer.ErrNotFound) {
		t.Fatalf("aborted new object: Open = %v, want ErrNotFound", err)
	}
}

func testCancel(t *testing.T, h Harness, s filetransfer.Store) {
	const key = "c/c.csv"
	mustPut(t, s, key, []byte("v1"))
	cctx, cancel := context.WithCancel(ctx(t))
	w, err := s.Create(cctx, key)
	if err != nil {
		t.Fatal(err)
	}
	chunk := randomBytes(256<<10, 3)
	for range 4 {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	// Writes may or may not notice at once; Commit must.
	for range 40 {
		if _, err := w.Write(chunk); err != nil {
			break
		}
	}
	if err := w.Commit(); err == nil {
		t.Fatal("Commit after the context was cancelled succeeded")
	}
	_ = w.Abort()
	if got := mustRead(t, s, key); string(got) != "v1" {
		t.Fatalf("after a cancelled write readers see %d bytes, want v1", len(got))
	}
}

func testLarge(t *testing.T, h Harness, s filetransfer.Store) {
	data := randomBytes(h.Features.LargeSize+12345, 4)
	w, err := s.Create(ctx(t), "big/big.csv")
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 64<<10+7)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	r, err := s.Open(ctx(t), "big/big.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	hs := sha256.New()
	n, err := io.Copy(hs, r)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(data); n != int64(len(data)) || !bytes.Equal(hs.Sum(nil), want[:]) {
		t.Fatalf("read back %d bytes (sha mismatch=%v), want %d", n, !bytes.Equal(hs.Sum(nil), want[:]), len(data))
	}
}

func testDelete(t *testing.T, h Harness, s filetransfer.Store) {
	mustPut(t, s, "d/d.csv", []byte("x"))
	if err := s.Delete(ctx(t), "d/d.csv"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Open(ctx(t), "d/d.csv"); !errors.Is(err, filetransfer.ErrNotFound) {
		t.Fatalf("Open after Delete = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx(t), "d/never.csv"); err != nil {
		t.Fatalf("Delete(missing) = %v, want nil", err)
	}
}

func testInvalidKeys(t *testing.T, h Harness, s filetransfer.Store) {
	for _, key := range []string{"", "../escape.csv", "a/../../escape.csv", "/abs.csv", "a//b.csv", "a/./b.csv", "a/", `a\..\b.csv`, "a/\x00.csv", ".."} {
		if _, err := s.Create(ctx(t), key); !errors.Is(err, filetransfer.ErrInvalidKey) {
			t.Errorf("Create(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Open(ctx(t), key); !errors.Is(err, filetransfer.ErrInvalidKey) {
			t.Errorf("Open(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx(t), key); !errors.Is(err, filetransfer.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, _, err := s.URL(ctx(t), key, time.Minute); !errors.Is(err, filetransfer.ErrInvalidKey) {
			t.Errorf("URL(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
}

func testConcurrent(t *testing.T, h Harness, s filetransfer.Store) {
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			key := fmt.Sprintf("cc/dt=2024-01-%02d/f.csv", i+1)
			if err := storeutil.Put(ctx(t), s.Create, key, randomBytes(100<<10, uint64(i))); err != nil {
				t.Errorf("Put(%s): %v", key, err)
			}
		})
	}
	wg.Wait()
	for i := range 8 {
		key := fmt.Sprintf("cc/dt=2024-01-%02d/f.csv", i+1)
		if got := mustRead(t, s, key); !bytes.Equal(got, randomBytes(100<<10, uint64(i))) {
			t.Errorf("%s: wrong content", key)
		}
	}
}

func get(t *testing.T, h Harness, u string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.HTTPClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func testURL(t *testing.T, h Harness, s filetransfer.Store) {
	const key = "u/dt=2024-01-03/u-2024-01-03.csv.gz"
	data := randomBytes(300<<10, 5)
	mustPut(t, s, key, data)
	before := time.Now()
	u, exp, err := s.URL(ctx(t), key, time.Hour)
	if err != nil {
		t.Fatalf("URL: %v", err)
	}
	if exp.Before(before.Add(time.Hour-2*time.Second)) || exp.After(time.Now().Add(time.Hour+time.Second)) {
		t.Errorf("expiry %v is not an hour from now", exp)
	}
	if code, got := get(t, h, u); code != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("GET link: status %d, %d bytes; want 200 and the %d stored bytes", code, len(got), len(data))
	}
	for _, ttl := range []time.Duration{0, -time.Second, filetransfer.MaxLinkTTL + time.Second} {
		if _, _, err := s.URL(ctx(t), key, ttl); !errors.Is(err, filetransfer.ErrInvalidTTL) {
			t.Errorf("URL(ttl=%v) = %v, want ErrInvalidTTL", ttl, err)
		}
	}
	if _, _, err := s.URL(ctx(t), key, filetransfer.MaxLinkTTL); err != nil {
		t.Errorf("URL(ttl=7 days) = %v, want a link", err)
	}
	if !h.Features.CheckedLinks {
		return
	}
	mustPut(t, s, "u/other.csv", []byte("secret"))
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := pu.Query()
	for name, mutate := range map[string]func() string{
		"signature": func() string {
			v := *pu
			qq := url.Values{}
			for k, vs := range q {
				qq[k] = vs
			}
			sig := []byte(q.Get("sig"))
			sig[0] ^= 1
			qq.Set("sig", string(sig))
			v.RawQuery = qq.Encode()
			return v.String()
		},
		"expiry": func() string {
			v := *pu
			qq := url.Values{}
			for k, vs := range q {
				qq[k] = vs
			}
			qq.Set("expires", fmt.Sprint(exp.Add(24*time.Hour).Unix()))
			v.RawQuery = qq.Encode()
			return v.String()
		},
		"key": func() string {
			v := *pu
			v.Path = v.Path[:len(v.Path)-len(key)] + "u/other.csv"
			v.RawPath = ""
			return v.String()
		},
		"no signature": func() string {
			v := *pu
			v.RawQuery = ""
			return v.String()
		},
	} {
		if code, _ := get(t, h, mutate()); code != http.StatusForbidden {
			t.Errorf("tampered %s: status %d, want 403", name, code)
		}
	}
}

func testCheck(t *testing.T, h Harness, s filetransfer.Store) {
	c, ok := s.(filetransfer.Checker)
	if !ok {
		t.Fatalf("%T does not implement filetransfer.Checker", s)
	}
	if err := c.Check(ctx(t)); err != nil {
		t.Fatalf("Check on a new store: %v", err)
	}
}
