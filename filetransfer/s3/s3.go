package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
)

// S3's multipart limits (MinPartSize, MaxPartSize, MaxParts) and the
// default part size.
const (
	MinPartSize = 5 << 20
	MaxPartSize = 5 << 30
	MaxParts    = 10000
	// DefaultPartSize allows objects up to 10,000 × 16 MiB ≈ 156 GiB.
	DefaultPartSize = 16 << 20
)

// DefaultConcurrency is how many parts of one object upload at once unless
// WithConcurrency says otherwise.
const DefaultConcurrency = 2

// DefaultAbortTimeout bounds the clean-up after a failure unless
// WithAbortTimeout says otherwise.
const DefaultAbortTimeout = 30 * time.Second

// Option configures a Store; see New.
type Option interface{ apply(*config) error }

type option func(*config) error

func (f option) apply(c *config) error { return f(c) }

type config struct {
	partSize     int64
	concurrency  int
	skipCheck    bool
	abortTimeout time.Duration
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("s3: %w: "+format, append([]any{filetransfer.ErrInvalidOption}, args...)...)
}

// WithPartSize sets the multipart part size, between MinPartSize (5 MiB)
// and MaxPartSize (5 GiB); the largest object is MaxParts (10,000) parts.
// Default DefaultPartSize (16 MiB: objects up to about 156 GiB). Memory per
// object being written is (concurrency+1) × part size.
func WithPartSize(bytes int64) Option {
	return option(func(c *config) error {
		if bytes < MinPartSize || bytes > MaxPartSize {
			return invalid("WithPartSize(%d): outside S3's [5 MiB, 5 GiB]", bytes)
		}
		c.partSize = bytes
		return nil
	})
}

// WithConcurrency sets how many parts of one object upload at once while
// the next part fills; n must be at least 1. Default DefaultConcurrency (2).
func WithConcurrency(n int) Option {
	return option(func(c *config) error {
		if n < 1 {
			return invalid("WithConcurrency(%d): must be at least 1", n)
		}
		c.concurrency = n
		return nil
	})
}

// WithoutCheck makes Check return nil without calling HeadBucket, for
// credentials limited to object operations (HeadBucket needs
// s3:ListBucket). Errors then surface on the first write.
func WithoutCheck() Option {
	return option(func(c *config) error { c.skipCheck = true; return nil })
}

// WithAbortTimeout bounds the clean-up (AbortMultipartUpload) after a
// failure or cancellation, which runs even though the caller's context is
// done; d must be positive. Default DefaultAbortTimeout (30 seconds).
func WithAbortTimeout(d time.Duration) Option {
	return option(func(c *config) error {
		if d <= 0 {
			return invalid("WithAbortTimeout(%v): must be positive", d)
		}
		c.abortTimeout = d
		return nil
	})
}

// Store is a filetransfer.Store in an S3 bucket, safe for concurrent use.
type Store struct {
	cfg     config
	bucket  string
	client  *awss3.Client
	presign *awss3.PresignClient
}

var _ filetransfer.Store = (*Store)(nil)

// New returns a Store on bucket through client. For S3-compatible stores
// set UsePathStyle and BaseEndpoint on the client; for stores that do not
// accept aws-chunked uploads with CRC32 trailers set
// RequestChecksumCalculation and ResponseChecksumValidation to "when
// required". New does not contact S3; call Check for that. A nil client, an
// empty bucket or an option it cannot use is an error wrapping
// filetransfer.ErrInvalidOption.
func New(client *awss3.Client, bucket string, opts ...Option) (*Store, error) {
	if client == nil || bucket == "" {
		return nil, invalid("New: client and bucket are required (client nil: %t, bucket %q)", client == nil, bucket)
	}
	cfg := config{partSize: DefaultPartSize, concurrency: DefaultConcurrency, abortTimeout: DefaultAbortTimeout}
	for i, o := range opts {
		if o == nil {
			return nil, invalid("option %d is nil", i)
		}
		if err := o.apply(&cfg); err != nil {
			return nil, err
		}
	}
	return &Store{cfg: cfg, bucket: bucket, client: client, presign: awss3.NewPresignClient(client)}, nil
}

// Check reports whether the bucket exists and the credentials are accepted
// (HeadBucket), with the same error classification as the other methods.
// The Exporter calls it before touching the database.
func (s *Store) Check(ctx context.Context) error {
	if s.cfg.skipCheck {
		return nil
	}
	_, err := s.client.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String(s.bucket)})
	if err != nil {
		var re *smithyhttp.ResponseError
		if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
			return fmt.Errorf("s3: bucket %q does not exist: %w: %w", s.bucket, filetransfer.ErrStoreNotFound, err)
		}
		return s.classify("check bucket", "", err)
	}
	return nil
}

// classify wraps an SDK error with the filetransfer sentinel it means.
func (s *Store) classify(op, key string, err error) error {
	where := "s3://" + s.bucket + "/" + key
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("s3: %s %s: %w: %w", op, where, filetransfer.ErrNotFound, err)
		case "NoSuchBucket":
			return fmt.Errorf("s3: %s: bucket %q does not exist: %w: %w", op, s.bucket, filetransfer.ErrStoreNotFound, err)
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "Forbidden", "AllAccessDisabled":
			return fmt.Errorf("s3: %s %s: credentials refused: %w: %w", op, where, filetransfer.ErrAccessDenied, err)
		}
	}
	var se *smithyhttp.RequestSendError
	if errors.As(err, &se) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		// No HTTP response at all: the endpoint could not be reached.
		return fmt.Errorf("s3: %s %s: %w: %w", op, where, filetransfer.ErrUnavailable, err)
	}
	return fmt.Errorf("s3: %s %s: %w", op, where, err)
}

// Open implements filetransfer.Store.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := storeutil.ValidateKey(key); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return nil, s.classify("get", key, err)
	}
	return out.Body, nil
}

// Delete implements filetransfer.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storeutil.ValidateKey(key); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		err = s.classify("delete", key, err)
		if errors.Is(err, filetransfer.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// URL implements filetransfer.Store with a presigned GET URL.
func (s *Store) URL(ctx context.Context, key string, ttl time.Duration) (string, time.Time, error) {
	if err := storeutil.ValidateKey(key); err != nil {
		return "", time.Time{}, err
	}
	if err := storeutil.CheckTTL(ttl); err != nil {
		return "", time.Time{}, err
	}
	now := time.Now()
	req, err := s.presign.PresignGetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}, awss3.WithPresignExpires(ttl))
	if err != nil {
		return "", time.Time{}, s.classify("presign", key, err)
	}
	return req.URL, now.Add(ttl).Truncate(time.Second), nil
}

// Create implements filetransfer.Store with a streaming multipart upload.
func (s *Store) Create(ctx context.Context, key string) (filetransfer.Writer, error) {
	if err := storeutil.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	uctx, cancel := context.WithCancel(ctx)
	return &writer{
		s: s, ctx: ctx, uctx: uctx, cancel: cancel, key: key,
		buf:  make([]byte, 0, s.cfg.partSize),
		sem:  make(chan struct{}, s.cfg.concurrency),
		free: make(chan []byte, s.cfg.concurrency+1),
	}, nil
}

type writer struct {
	s      *Store
	ctx    context.Context // the caller's
	uctx   context.Context // for part uploads; cancelled on the first failure
	cancel context.CancelFunc
	key    string

	buf      []byte
	uploadID *string
	partNum  int32
	sem      chan struct{} // part uploads in flight
	free     chan []byte   // spare part buffers
	wg       sync.WaitGroup

	mu    sync.Mutex
	err   error // first failure
	parts []types.CompletedPart

	finished bool // committed or aborted
}

func (w *writer) setErr(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	w.cancel()
}

func (w *writer) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *writer) Write(p []byte) (int, error) {
	if w.finished {
		return 0, filetransfer.ErrAborted
	}
	if err := w.failure(); err != nil {
		return 0, err
	}
	if err := w.ctx.Err(); err != nil {
		w.setErr(err)
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		room := cap(w.buf) - len(w.buf)
		k := min(room, len(p))
		w.buf = append(w.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(w.buf) == cap(w.buf) {
			if err := w.flushPart(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// flushPart starts uploading the full buffer and takes a fresh one.
func (w *writer) flushPart() error {
	if w.uploadID == nil {
		out, err := w.s.client.CreateMultipartUpload(w.uctx, &awss3.CreateMultipartUploadInput{
			Bucket:      aws.String(w.s.bucket),
			Key:         aws.String(w.key),
			ContentType: aws.String(storeutil.ContentType(w.key)),
		})
		if err != nil {
			err = w.s.classify("create multipart upload", w.key, err)
			w.setErr(err)
			return err
		}
		w.uploadID = out.UploadId
	}
	if w.partNum >= MaxParts {
		err := fmt.Errorf("s3: %s: more than %d parts of %d bytes; raise WithPartSize", w.key, MaxParts, w.s.cfg.partSize)
		w.setErr(err)
		return err
	}
	w.partNum++
	num, data := w.partNum, w.buf
	select {
	case w.sem <- struct{}{}:
	case <-w.uctx.Done():
		err := w.failure()
		if err == nil {
			err = w.uctx.Err()
		}
		return err
	}
	w.wg.Go(func() {
		defer func() { <-w.sem }()
		out, err := w.s.client.UploadPart(w.uctx, &awss3.UploadPartInput{
			Bucket:        aws.String(w.s.bucket),
			Key:           aws.String(w.key),
			UploadId:      w.uploadID,
			PartNumber:    aws.Int32(num),
			Body:          bytes.NewReader(data),
			ContentLength: aws.Int64(int64(len(data))),
		})
		select {
		case w.free <- data[:0]:
		default:
		}
		if err != nil {
			w.setErr(w.s.classify(fmt.Sprintf("upload part %d", num), w.key, err))
			return
		}
		w.mu.Lock()
		w.parts = append(w.parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		w.mu.Unlock()
	})
	select {
	case b := <-w.free:
		w.buf = b
	default:
		w.buf = make([]byte, 0, w.s.cfg.partSize)
	}
	return nil
}

func (w *writer) Commit() error {
	if w.finished {
		return filetransfer.ErrAborted
	}
	if err := w.failure(); err != nil {
		_ = w.Abort()
		return err
	}
	if err := w.ctx.Err(); err != nil {
		_ = w.Abort()
		return err
	}
	if w.uploadID == nil {
		_, err := w.s.client.PutObject(w.ctx, &awss3.PutObjectInput{
			Bucket:        aws.String(w.s.bucket),
			Key:           aws.String(w.key),
			Body:          bytes.NewReader(w.buf),
			ContentLength: aws.Int64(int64(len(w.buf))),
			ContentType:   aws.String(storeutil.ContentType(w.key)),
		})
		w.finished = true
		w.cancel()
		w.buf = nil
		if err != nil {
			return w.s.classify("put", w.key, err)
		}
		return nil
	}
	if len(w.buf) > 0 {
		if err := w.flushPart(); err != nil {
			_ = w.Abort()
			return err
		}
	}
	w.wg.Wait()
	if err := w.failure(); err != nil {
		_ = w.Abort()
		return err
	}
	if err := w.ctx.Err(); err != nil {
		_ = w.Abort()
		return err
	}
	slices.SortFunc(w.parts, func(a, b types.CompletedPart) int { return int(*a.PartNumber - *b.PartNumber) })
	_, err := w.s.client.CompleteMultipartUpload(w.ctx, &awss3.CompleteMultipartUploadInput{
		Bucket:          aws.String(w.s.bucket),
		Key:             aws.String(w.key),
		UploadId:        w.uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: w.parts},
	})
	if err != nil {
		err = w.s.classify("complete multipart upload", w.key, err)
		w.setErr(err)
		_ = w.Abort()
		return err
	}
	w.finished = true
	w.cancel()
	w.buf = nil
	return nil
}

// Abort stops the part uploads in flight, waits for them, and aborts the
// multipart upload with a context of its own (the caller's may be done).
func (w *writer) Abort() error {
	if w.finished {
		return nil
	}
	w.finished = true
	w.setErr(filetransfer.ErrAborted)
	w.wg.Wait()
	w.buf = nil
	if w.uploadID == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), w.s.cfg.abortTimeout)
	defer cancel()
	_, err := w.s.client.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{
		Bucket:   aws.String(w.s.bucket),
		Key:      aws.String(w.key),
		UploadId: w.uploadID,
	})
	if err != nil {
		return w.s.classify("abort multipart upload", w.key, err)
	}
	return nil
}
