package filetransfer_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/fs"
	fts3 "github.com/go-integration/patterns/filetransfer/s3"
	"github.com/go-integration/patterns/internal/testenv/s3env"
)

func httpGet(t testing.TB, u string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(tctx(t), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
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

func getLinks(t testing.TB, base, query string) filetransfer.Links {
	t.Helper()
	code, body := httpGet(t, base+query)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", query, code, body)
	}
	var l filetransfer.Links
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return l
}

// checkLinks downloads every link and compares it with the stored bytes and
// the manifest's checksum.
func checkLinks(t *testing.T, store filetransfer.Store, l filetransfer.Links, m *filetransfer.Manifest) {
	t.Helper()
	if len(l.Files) != len(m.Files) {
		t.Fatalf("%d links, want %d", len(l.Files), len(m.Files))
	}
	for i, f := range l.Files {
		code, got := httpGet(t, f.URL)
		if code != http.StatusOK {
			t.Fatalf("%s: GET %s: %d %s", f.Day, f.URL, code, got)
		}
		want := read(t, store, m.Files[i].Key)
		if sha(got) != sha(want) || sha(got) != f.SHA256 || int64(len(got)) != f.Bytes || f.Rows != m.Files[i].Rows || f.Day != m.Files[i].Day {
			t.Errorf("%s: downloaded %d bytes sha %s; link says %+v; stored %d bytes", f.Day, len(got), sha(got), f, len(want))
		}
		if d := time.Until(f.ExpiresAt); d < 50*time.Minute || d > 61*time.Minute {
			t.Errorf("%s: expires in %v, want about an hour", f.Day, d)
		}
	}
}

func TestLinksFolder(t *testing.T) {
	d := newDB(t, 4)
	table := d.createEvents(t)
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	store, err := fs.New(t.TempDir(), fs.WithBaseURL(srv.URL+"/dl/"), fs.WithSecret([]byte("links-test-secret-0123456789")))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	links, err := filetransfer.NewLinksHandler(store, filetransfer.WithPrefix("x"))
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/dl/", store.Handler())
	mux.Handle("GET /exports/{dataset}", links)

	e := newExporter(t, d, store, filetransfer.WithGzip(gzip.DefaultCompression), filetransfer.WithPrefix("x"))
	m, err := e.Export(tctx(t), filetransfer.Dataset{Name: "events", Query: "select * from " + table + " order by id", DayColumn: "day"}, day(t, "2024-01-01"), day(t, "2024-01-03"))
	if err != nil {
		t.Fatal(err)
	}
	l := getLinks(t, srv.URL, "/exports/events?from=2023-12-31&to=2024-01-03")
	if l.Dataset != "events" || len(l.Missing) != 1 || l.Missing[0].String() != "2023-12-31" {
		t.Fatalf("links: %+v", l)
	}
	checkLinks(t, store, l, m)

	// Tampering with any part of a link gets 403.
	u, _ := url.Parse(l.Files[0].URL)
	tampered := *u
	tampered.Path = strings.Replace(u.Path, "2024-01-01", "2024-01-02", -1)
	if code, _ := httpGet(t, tampered.String()); code != http.StatusForbidden {
		t.Errorf("link with another day's path: %d, want 403", code)
	}
	q := u.Query()
	q.Set("expires", q.Get("expires")+"0")
	tampered = *u
	tampered.RawQuery = q.Encode()
	if code, _ := httpGet(t, tampered.String()); code != http.StatusForbidden {
		t.Errorf("link with a later expiry: %d, want 403", code)
	}
	// (Expiry is tested in the fs and memory packages, in a synctest bubble.)
}

func TestLinksS3(t *testing.T) {
	d := newDB(t, 4)
	table := d.createEvents(t)
	env := s3env.New(t)
	store, err := fts3.New(env.Client, env.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	e := newExporter(t, d, store)
	m, err := e.Export(tctx(t), filetransfer.Dataset{Name: "events", Query: "select * from " + table + " order by id", DayColumn: "day"}, day(t, "2024-01-01"), day(t, "2024-01-03"))
	if err != nil {
		t.Fatal(err)
	}
	links, err := filetransfer.NewLinksHandler(store)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(links) // no pattern: the dataset is the last segment
	defer srv.Close()
	l := getLinks(t, srv.URL, "/exports/events?from=2024-01-01&to=2024-01-05")
	if got := []string{l.Missing[0].String(), l.Missing[1].String()}; !slices.Equal(got, []string{"2024-01-04", "2024-01-05"}) {
		t.Errorf("missing %v", got)
	}
	checkLinks(t, store, l, m)

	// A store that fails is 502, not an empty list.
	broken, _ := fts3.New(env.Client, env.Bucket+"-gone")
	var logged logBuffer
	bl, _ := filetransfer.NewLinksHandler(broken, filetransfer.WithLogger(logged.logger()))
	bsrv := httptest.NewServer(bl)
	defer bsrv.Close()
	if code, body := httpGet(t, bsrv.URL+"/exports/events?from=2024-01-01&to=2024-01-01"); code != http.StatusBadGateway {
		t.Errorf("missing bucket: %d %s, want 502", code, body)
	}
	if got := logged.String(); !strings.Contains(got, "level=ERROR") || !strings.Contains(got, "store failed") || !strings.Contains(got, "-gone") {
		t.Errorf("the 502 was not logged with the store's error: %q", got)
	}
}

func TestLinksBadInput(t *testing.T) {
	store := newMemory(t)
	h, err := filetransfer.NewLinksHandler(store, filetransfer.WithMaxDays(31), filetransfer.WithDatasets("events"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/exports/{dataset}", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, c := range []struct {
		path string
		want int
	}{
		{"/exports/events?from=2024-01-01&to=2024-01-31", 200},
		{"/exports/events?from=2024-01-01&to=2024-02-01", 400}, // 32 days
		{"/exports/events?from=2024-01-02&to=2024-01-01", 400}, // reversed
		{"/exports/events?from=2024-01-01", 400},               // unbounded
		{"/exports/events?to=2024-01-01", 400},
		{"/exports/events", 400},
		{"/exports/events?from=2024-1-1&to=2024-01-02", 400},
		{"/exports/events?from=2024-02-30&to=2024-03-01", 400},
		{"/exports/events?from=..%2F2024-01-01&to=2024-01-02", 400},
		{"/exports/..%2Fetc?from=2024-01-01&to=2024-01-02", 400},
		{"/exports/a.b?from=2024-01-01&to=2024-01-02", 400},
		{"/exports/other?from=2024-01-01&to=2024-01-02", 404}, // not in Datasets
	} {
		code, body := httpGet(t, srv.URL+c.path)
		if code != c.want {
			t.Errorf("GET %s: %d %s, want %d", c.path, code, body, c.want)
			continue
		}
		if code != 200 {
			var e struct{ Error string }
			if json.Unmarshal(body, &e) != nil || e.Error == "" {
				t.Errorf("GET %s: body %q is not a JSON error", c.path, body)
			}
		}
	}
	resp, err := http.Post(srv.URL+"/exports/events?from=2024-01-01&to=2024-01-02", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}

// Cancelling mid-export aborts the multipart upload (no object, no parts
// left), keeps the previous version of the day, and closes the connection
// instead of returning it to the pool.
func TestCancelMidExportS3(t *testing.T) {
	d := newDB(t, 1)
	env := s3env.New(t)
	store, err := fts3.New(env.Client, env.Bucket, fts3.WithPartSize(fts3.MinPartSize))
	if err != nil {
		t.Fatal(err)
	}
	d1 := day(t, "2024-01-01")
	small := filetransfer.Dataset{Name: "big", Template: "select g, {day} as day from generate_series(1, 10) g"}
	prev, err := newExporter(t, d, store).Export(tctx(t), small, d1, d1)
	if err != nil {
		t.Fatal(err)
	}
	keysBefore := env.Keys(t)

	var pid1 uint32
	if err := d.pool.QueryRow(tctx(t), "select pg_backend_pid()").Scan(&pid1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(tctx(t))
	defer cancel()
	var cancelledAt atomic.Int64
	e := newExporter(t, d, store, filetransfer.WithProgressEvery(1<<20), filetransfer.WithTracer(progressFunc(func(p filetransfer.TraceExportProgressData) {
		if p.CSVBytes > 3*fts3.MinPartSize && cancelledAt.Load() == 0 {
			cancelledAt.Store(p.CSVBytes)
			cancel()
		}
	})))
	large := filetransfer.Dataset{Name: "big", Template: "select g, {day} as day, repeat('x', 200) as pad from generate_series(1, 300000) g"}
	_, err = e.Export(ctx, large, d1, d1)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if cancelledAt.Load() == 0 {
		t.Fatal("never cancelled: the export finished first")
	}
	if ups := env.Uploads(t); len(ups) != 0 {
		t.Fatalf("%d multipart uploads left behind", len(ups))
	}
	if keys := env.Keys(t); !slices.Equal(keys, keysBefore) {
		t.Fatalf("keys changed by a cancelled export:\n%v\nwas\n%v", keys, keysBefore)
	}
	if got := read(t, store, prev.Files[0].Key); sha(got) != prev.Files[0].SHA256 {
		t.Fatal("the previous version of the day was replaced")
	}
	if f, err := filetransfer.ReadDay(tctx(t), store, e.Layout(), "big", d1); err != nil || f.SHA256 != prev.Files[0].SHA256 {
		t.Fatalf("marker after cancel: %+v, %v", f, err)
	}
	var pid2 uint32
	if err := d.pool.QueryRow(tctx(t), "select pg_backend_pid()").Scan(&pid2); err != nil {
		t.Fatalf("pool unusable after cancel: %v", err)
	}
	if pid2 == pid1 {
		t.Fatal("the cancelled connection was reused")
	}
}

// The store's problems surface before the database is touched, as errors
// callers can tell apart, and nothing is written.
func TestExportStoreErrorsS3(t *testing.T) {
	d := newDB(t, 1)
	env := s3env.New(t)
	ds := filetransfer.Dataset{Name: "x", Template: "select {day} as day"}
	d1 := day(t, "2024-01-01")
	for name, c := range map[string]struct {
		store func() filetransfer.Store
		want  error
	}{
		"missing bucket": {func() filetransfer.Store {
			s, _ := fts3.New(env.Client, env.Bucket+"-nope")
			return s
		}, filetransfer.ErrStoreNotFound},
		"refused credentials": {func() filetransfer.Store {
			s, _ := fts3.New(s3env.NewClient(env.Endpoint, env.Region, "NOTAKEY", "nope"), env.Bucket)
			return s
		}, filetransfer.ErrAccessDenied},
		"unreachable": {func() filetransfer.Store {
			s, _ := fts3.New(s3env.NewClient("http://127.0.0.1:1", env.Region, "k", "s"), env.Bucket)
			return s
		}, filetransfer.ErrUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := newExporter(t, d, c.store()).Export(tctx(t), ds, d1, d1)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			t.Log(err)
		})
	}
	if keys := env.Keys(t); len(keys) != 0 {
		t.Fatalf("written despite store errors: %v", keys)
	}
}

// A day larger than several parts streams through a multipart upload and
// arrives byte-identical to psql's output.
func TestMultipartExportMatchesPsql(t *testing.T) {
	d := newDB(t, 2)
	env := s3env.New(t)
	store, err := fts3.New(env.Client, env.Bucket, fts3.WithPartSize(fts3.MinPartSize), fts3.WithConcurrency(3))
	if err != nil {
		t.Fatal(err)
	}
	const q = "select g as id, %s as day, md5(g::text) as h, repeat('é,\"', g %% 40) as u from generate_series(1, 120000) g order by g"
	ds := filetransfer.Dataset{Name: "mp", Template: fmt.Sprintf(q, "{day}")}
	m, err := newExporter(t, d, store).Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-01"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Files[0].Bytes < 3*fts3.MinPartSize {
		t.Fatalf("only %d bytes: not a multipart upload", m.Files[0].Bytes)
	}
	got := read(t, store, m.Files[0].Key)
	want := d.psqlCopy(t, fmt.Sprintf(q, "DATE '2024-01-01'"))
	if !bytes.Equal(got, want) || sha(got) != m.Files[0].SHA256 {
		t.Fatalf("S3 object (%d bytes) differs from psql (%d bytes) or from its checksum", len(got), len(want))
	}
	if ups := env.Uploads(t); len(ups) != 0 {
		t.Fatalf("%d uploads left", len(ups))
	}
}
