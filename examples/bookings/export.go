package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/go-integration/patterns/filetransfer"
	s3store "github.com/go-integration/patterns/filetransfer/s3"
	"github.com/go-integration/patterns/shareddb"
)

// dailyExport writes one CSV file per day of bookings to S3 (gofakes3,
// in-process), then serves them through the links API: one presigned link
// per day, which a client fetches and checks against the advertised SHA-256.
func dailyExport(ctx context.Context, t *tour, e *env) error {
	if err := e.needDB(); err != nil {
		return err
	}
	t.printf("   The accounting partner wants every booking, every day, as files: a nightly job\n")
	t.printf("   exports one CSV per day to S3, and an API hands out one link per day.\n")

	// An in-process S3 (gofakes3) behind the real aws-sdk-go-v2 client:
	// path-style addressing, and checksums only where S3 requires them.
	fake := gofakes3.New(s3mem.New(), gofakes3.WithTimeSkewLimit(0), gofakes3.WithLogger(gofakes3.DiscardLog()))
	s3srv := httptest.NewServer(fake.Server())
	defer s3srv.Close()
	client := awss3.New(awss3.Options{
		BaseEndpoint: aws.String(s3srv.URL),
		Region:       "eu-west-3",
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "tour", SecretAccessKey: "tour-secret", Source: "bookings tour"}, nil
		}),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	const bucket = "bookings-exports"
	if _, err := client.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	store, err := s3store.New(client, bucket)
	if err != nil {
		return err
	}
	t.printf("   S3: gofakes3 at %s, bucket %s\n", s3srv.URL, bucket)

	// Exports are big reads: they belong on the replica. The token makes the
	// replica serve them only once it has every booking committed so far.
	var db filetransfer.Conns = e.pool
	source := "the primary"
	if e.reader != nil {
		token, err := shareddb.CurrentToken(ctx, e.pool)
		if err != nil {
			return err
		}
		db = e.reader.With(shareddb.WithToken(token))
		source = "the reporting service's ReplicaReader"
	}
	exporter, err := filetransfer.NewExporter(db, store, filetransfer.WithPrefix("exports"), filetransfer.WithTracer(t.tel.FileTransfer()))
	if err != nil {
		return err
	}
	ds := filetransfer.Dataset{
		Name:      "bookings",
		Query:     "select id, rental, town, nights, booked_at from bookings order by booked_at, id",
		DayColumn: "booked_at",
	}
	from, to := filetransfer.NewDay(2026, 7, 1), filetransfer.NewDay(2026, 7, 3)
	man, err := exporter.Export(ctx, ds, from, to)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	t.printf("   exported %s to %s through %s:\n", from, to, source)
	for _, f := range man.Files {
		t.printf("     %s  %d row(s)  %d bytes\n", f.Key, f.Rows, f.Bytes)
	}

	// The links API: GET /exports/{dataset}?from=...&to=... answers one link per day.
	links, err := filetransfer.NewLinksHandler(store, filetransfer.WithPrefix("exports"), filetransfer.WithLinkTTL(time.Hour), filetransfer.WithDatasets("bookings"))
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /exports/{dataset}", links)
	api := httptest.NewServer(mux)
	defer api.Close()
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()

	get := func(url string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
		}
		return body, nil
	}
	apiURL := fmt.Sprintf("%s/exports/bookings?from=%s&to=%s", api.URL, from, to)
	body, err := get(apiURL)
	if err != nil {
		return err
	}
	var l filetransfer.Links
	if err := json.Unmarshal(body, &l); err != nil {
		return err
	}
	t.printf("   GET /exports/bookings?from=%s&to=%s -> %d link(s), %d day(s) missing\n", from, to, len(l.Files), len(l.Missing))
	if len(l.Files) != 3 || len(l.Missing) != 0 {
		return fmt.Errorf("links API: %d files and %d missing days, want 3 and 0", len(l.Files), len(l.Missing))
	}
	var rows int64
	for _, f := range l.Files {
		data, err := get(f.URL)
		if err != nil {
			return fmt.Errorf("fetch %s: %w", f.Day, err)
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != f.SHA256 || int64(len(data)) != f.Bytes {
			return fmt.Errorf("day %s: fetched %d bytes with sha256 %s, the API promised %d bytes with %s", f.Day, len(data), got, f.Bytes, f.SHA256)
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if int64(len(lines)-1) != f.Rows {
			return fmt.Errorf("day %s: %d CSV lines after the header, the API promised %d rows", f.Day, len(lines)-1, f.Rows)
		}
		rows += f.Rows
		t.printf("   fetched %s: %d bytes, sha256 %s... matches, expires %s\n", f.Day, len(data), f.SHA256[:12], f.ExpiresAt.Format(time.TimeOnly))
		for _, line := range lines {
			t.printf("     | %s\n", line)
		}
	}
	var want int64
	if err := e.pool.QueryRow(ctx, "select count(*) from bookings").Scan(&want); err != nil {
		return err
	}
	if rows != want {
		return fmt.Errorf("the files hold %d bookings, the table %d", rows, want)
	}
	t.printf("   the %d files hold all %d bookings\n", len(l.Files), rows)
	return nil
}
