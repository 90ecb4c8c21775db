package s3env

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/go-integration/patterns/internal/testenv"
)

// Env is one test's S3 endpoint and bucket.
type Env struct {
	// Client is a client for Endpoint with the environment's credentials.
	Client *awss3.Client
	// Bucket was created for this test and is emptied and deleted after it.
	Bucket string
	// Endpoint is the store's URL.
	Endpoint string
	// Region, AccessKey and SecretKey are what Client uses.
	Region, AccessKey, SecretKey string
	// Fake reports whether Endpoint is the in-process gofakes3.
	Fake bool
}

// NewClient returns a client for endpoint with the given credentials, set up
// for S3-compatible stores: path-style addressing, checksums only where
// required, and at most two attempts per request so tests fail fast.
func NewClient(endpoint, region, accessKey, secretKey string) *awss3.Client {
	return awss3.New(awss3.Options{
		BaseEndpoint: aws.String(endpoint),
		Region:       region,
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: secretKey, Source: "s3env"}, nil
		}),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RetryMaxAttempts:           2,
	})
}

// New returns an Env with a fresh bucket, starting gofakes3 unless
// S3_ENDPOINT is set. A real endpoint that cannot be reached skips t (or
// fails it under INTEGRATION=required).
func New(t testing.TB) *Env {
	t.Helper()
	e := &Env{
		Endpoint:  testenv.S3Endpoint(),
		Region:    envOr("AWS_REGION", "us-east-1"),
		AccessKey: envOr("AWS_ACCESS_KEY_ID", "s3env-access-key"),
		SecretKey: envOr("AWS_SECRET_ACCESS_KEY", "s3env-secret-key"),
	}
	if e.Endpoint == "" {
		e.Fake = true
		fake := gofakes3.New(s3mem.New(), gofakes3.WithTimeSkewLimit(0))
		srv := httptest.NewServer(checkAccessKey(e.AccessKey, fake.Server()))
		t.Cleanup(srv.Close)
		e.Endpoint = srv.URL
	}
	e.Client = NewClient(e.Endpoint, e.Region, e.AccessKey, e.SecretKey)
	e.Bucket = strings.ReplaceAll(testenv.Name(t, "ft"), "_", "-")
	if len(e.Bucket) > 63 {
		e.Bucket = e.Bucket[len(e.Bucket)-63:]
		e.Bucket = "b" + strings.TrimLeft(e.Bucket[1:], "-")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.Client.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(e.Bucket)}); err != nil {
		if e.Fake {
			t.Fatalf("s3env: create bucket: %v", err)
		}
		testenv.Unavailable(t, "S3 (S3_ENDPOINT="+e.Endpoint+")", err)
	}
	t.Cleanup(func() { e.deleteBucket(t) })
	return e
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Keys lists every object key in the bucket.
func (e *Env) Keys(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var keys []string
	p := awss3.NewListObjectsV2Paginator(e.Client, &awss3.ListObjectsV2Input{Bucket: aws.String(e.Bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("s3env: list objects: %v", err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// Uploads lists the multipart uploads in progress (orphaned parts) in the bucket.
func (e *Env) Uploads(t testing.TB) []types.MultipartUpload {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := e.Client.ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: aws.String(e.Bucket)})
	var ae smithy.APIError
	if e.Fake && errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload" {
		// gofakes3 answers NoSuchUpload for a bucket that has no upload
		// records at all, where S3 returns an empty list.
		return nil
	}
	if err != nil {
		t.Fatalf("s3env: list multipart uploads: %v", err)
	}
	return out.Uploads
}

func (e *Env) deleteBucket(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := e.Client.ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: aws.String(e.Bucket)}); err == nil {
		for _, u := range out.Uploads {
			_, _ = e.Client.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{Bucket: aws.String(e.Bucket), Key: u.Key, UploadId: u.UploadId})
		}
	}
	p := awss3.NewListObjectsV2Paginator(e.Client, &awss3.ListObjectsV2Input{Bucket: aws.String(e.Bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Logf("s3env: clean up %s: %v", e.Bucket, err)
			return
		}
		for _, o := range page.Contents {
			_, _ = e.Client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String(e.Bucket), Key: o.Key})
		}
	}
	if _, err := e.Client.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: aws.String(e.Bucket)}); err != nil {
		var nb *types.NoSuchBucket
		if !errors.As(err, &nb) {
			t.Logf("s3env: delete bucket %s: %v", e.Bucket, err)
		}
	}
}

// checkAccessKey answers 403 InvalidAccessKeyId, as S3 does, to requests
// signed (in the Authorization header or a presigned query) with an access
// key other than want.
func checkAccessKey(want string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred := r.URL.Query().Get("X-Amz-Credential")
		if auth := r.Header.Get("Authorization"); auth != "" {
			if _, rest, ok := strings.Cut(auth, "Credential="); ok {
				cred = rest
			}
		}
		key, _, _ := strings.Cut(cred, "/")
		if key != want {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
				`<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message><AWSAccessKeyId>%s</AWSAccessKeyId></Error>`, key)
			return
		}
		next.ServeHTTP(w, r)
	})
}
