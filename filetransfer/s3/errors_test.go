package s3_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
	fts3 "github.com/go-integration/patterns/filetransfer/s3"
	"github.com/go-integration/patterns/internal/testenv/s3env"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// An upload that is neither committed nor aborted is visible as orphaned
// parts: this proves the Uploads check in the conformance clean-up can fail.
func TestOrphanedUploadIsVisible(t *testing.T) {
	env := s3env.New(t)
	s := newStore(t, env)
	w, err := s.Create(ctx(t), "o/o.csv")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(bytes.Repeat([]byte("x"), fts3.MinPartSize+1)); err != nil {
		t.Fatal(err)
	}
	if n := len(env.Uploads(t)); n != 1 {
		t.Fatalf("%d uploads in progress, want 1", n)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if n := len(env.Uploads(t)); n != 0 {
		t.Fatalf("%d uploads after Abort, want 0", n)
	}
}

func TestCancelMidUploadLeavesNoParts(t *testing.T) {
	env := s3env.New(t)
	s := newStore(t, env)
	if err := storeutil.Put(ctx(t), s.Create, "c/c.csv", []byte("previous")); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx(t))
	w, err := s.Create(cctx, "c/c.csv")
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("y"), 1<<20)
	for range 12 { // more than two parts
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if _, err := w.Write(chunk); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write after cancel = %v, want context.Canceled", err)
	}
	if err := w.Commit(); err == nil {
		t.Fatal("Commit after cancel succeeded")
	}
	if ups := env.Uploads(t); len(ups) != 0 {
		t.Fatalf("%d multipart uploads left after cancel", len(ups))
	}
	b, err := storeutil.ReadAll(ctx(t), s, "c/c.csv")
	if err != nil || string(b) != "previous" {
		t.Fatalf("after cancel: %q, %v; want the previous version", b, err)
	}
}

func TestMissingBucket(t *testing.T) {
	env := s3env.New(t)
	s, err := fts3.New(env.Client, env.Bucket+"-missing")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx(t)); !errors.Is(err, filetransfer.ErrStoreNotFound) || !strings.Contains(err.Error(), env.Bucket+"-missing") {
		t.Fatalf("Check = %v, want ErrStoreNotFound naming the bucket", err)
	}
	if err := storeutil.Put(ctx(t), s.Create, "a.csv", []byte("x")); !errors.Is(err, filetransfer.ErrStoreNotFound) {
		t.Fatalf("Put = %v, want ErrStoreNotFound", err)
	}
	w, err := s.Create(ctx(t), "big.csv")
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.Write(make([]byte, fts3.DefaultPartSize+1))
	if err == nil {
		err = w.Commit()
	}
	if !errors.Is(err, filetransfer.ErrStoreNotFound) {
		t.Fatalf("multipart write = %v, want ErrStoreNotFound", err)
	}
	_ = w.Abort()
}

func TestRefusedCredentials(t *testing.T) {
	env := s3env.New(t)
	bad := s3env.NewClient(env.Endpoint, env.Region, "WRONGACCESSKEY", "wrong-secret")
	s, err := fts3.New(bad, env.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx(t)); !errors.Is(err, filetransfer.ErrAccessDenied) {
		t.Fatalf("Check = %v, want ErrAccessDenied", err)
	}
	if err := storeutil.Put(ctx(t), s.Create, "a.csv", []byte("x")); !errors.Is(err, filetransfer.ErrAccessDenied) {
		t.Fatalf("Put = %v, want ErrAccessDenied", err)
	}
	if _, err := s.Open(ctx(t), "a.csv"); !errors.Is(err, filetransfer.ErrAccessDenied) {
		t.Fatalf("Open = %v, want ErrAccessDenied", err)
	}
	if keys := env.Keys(t); len(keys) != 0 {
		t.Fatalf("objects written with refused credentials: %v", keys)
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens here now
	s, err := fts3.New(s3env.NewClient("http://"+addr, "us-east-1", "k", "s"), "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx(t)); !errors.Is(err, filetransfer.ErrUnavailable) {
		t.Fatalf("Check = %v, want ErrUnavailable", err)
	}
	if err := storeutil.Put(ctx(t), s.Create, "a.csv", []byte("x")); !errors.Is(err, filetransfer.ErrUnavailable) {
		t.Fatalf("Put = %v, want ErrUnavailable", err)
	}
}

func TestBadOptions(t *testing.T) {
	env := s3env.New(t)
	for name, c := range map[string]struct {
		client *awss3.Client
		bucket string
		opts   []fts3.Option
	}{
		"nil client":         {nil, "b", nil},
		"empty bucket":       {env.Client, "", nil},
		"nil option":         {env.Client, "b", []fts3.Option{nil}},
		"part too small":     {env.Client, "b", []fts3.Option{fts3.WithPartSize(fts3.MinPartSize - 1)}},
		"part too large":     {env.Client, "b", []fts3.Option{fts3.WithPartSize(fts3.MaxPartSize + 1)}},
		"no concurrency":     {env.Client, "b", []fts3.Option{fts3.WithConcurrency(0)}},
		"zero abort timeout": {env.Client, "b", []fts3.Option{fts3.WithAbortTimeout(0)}},
	} {
		_, err := fts3.New(c.client, c.bucket, c.opts...)
		if !errors.Is(err, filetransfer.ErrInvalidOption) {
			t.Errorf("%s: New = %v, want ErrInvalidOption", name, err)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
	if _, err := fts3.New(env.Client, "b", fts3.WithPartSize(fts3.MinPartSize), fts3.WithConcurrency(4), fts3.WithAbortTimeout(time.Second), fts3.WithoutCheck()); err != nil {
		t.Errorf("good options: %v", err)
	}
}

// WithoutCheck makes Check succeed without HeadBucket, even on a bucket
// that does not exist; errors then come from the first write.
func TestWithoutCheck(t *testing.T) {
	env := s3env.New(t)
	s, err := fts3.New(env.Client, env.Bucket+"-missing", fts3.WithoutCheck())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx(t)); err != nil {
		t.Fatalf("Check with WithoutCheck = %v, want nil", err)
	}
	if err := storeutil.Put(ctx(t), s.Create, "a.csv", []byte("x")); !errors.Is(err, filetransfer.ErrStoreNotFound) {
		t.Fatalf("Put = %v, want ErrStoreNotFound", err)
	}
}
