// Package storeutil holds what the filetransfer stores share and users of the
// package never call: key and lifetime checks, media types, whole-object
// reads and writes, and the sentinel errors those need. The root package
// re-exports the sentinels (filetransfer.ErrNotFound is ErrNotFound here), so
// errors.Is works with either name.
package storeutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// MaxLinkTTL is the longest lifetime of a download link (S3's limit).
const MaxLinkTTL = 7 * 24 * time.Hour

// SuccessName is the name of the markers the Exporter writes.
const SuccessName = "_SUCCESS"

// Sentinels re-exported by the root package; see its documentation.
var (
	ErrNotFound   = errors.New("filetransfer: not found")
	ErrInvalidKey = errors.New("filetransfer: invalid key")
	ErrInvalidTTL = errors.New("filetransfer: invalid link lifetime")
)

// ValidateKey reports whether key is a safe relative object key: non-empty,
// at most 1024 bytes, slash-separated segments none of which is empty, "." or
// "..", and no backslash or control character. Stores call it before
// touching anything, so a key can never escape a folder or bucket prefix.
func ValidateKey(key string) error {
	if key == "" || len(key) > 1024 {
		return fmt.Errorf("%w: %q: empty or longer than 1024 bytes", ErrInvalidKey, key)
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return fmt.Errorf("%w: %q: control character or backslash", ErrInvalidKey, key)
		}
	}
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w: %q: empty segment (leading, trailing or double slash)", ErrInvalidKey, key)
		case ".", "..":
			return fmt.Errorf("%w: %q: %q segment", ErrInvalidKey, key, seg)
		}
	}
	return nil
}

// CheckTTL returns an error wrapping ErrInvalidTTL unless 0 < ttl <= MaxLinkTTL.
func CheckTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > MaxLinkTTL {
		return fmt.Errorf("%w: %v (must be in (0, %v])", ErrInvalidTTL, ttl, MaxLinkTTL)
	}
	return nil
}

// ContentType returns the media type stores record for key, from its suffix.
func ContentType(key string) string {
	switch {
	case strings.HasSuffix(key, ".gz"):
		return "application/gzip"
	case strings.HasSuffix(key, ".csv"):
		return "text/csv; charset=utf-8"
	case strings.HasSuffix(key, ".json"), strings.HasSuffix(key, "/"+SuccessName):
		return "application/json"
	default:
		return "application/octet-stream"
	}
}

// Writer is filetransfer.Writer, repeated here so this package need not
// import the root (which imports it).
type Writer interface {
	io.Writer
	Commit() error
	Abort() error
}

// Put writes data to key through create (a Store's Create method) and
// commits it: storeutil.Put(ctx, store.Create, key, data).
func Put[W Writer](ctx context.Context, create func(context.Context, string) (W, error), key string, data []byte) error {
	w, err := create(ctx, key)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		_ = w.Abort()
		return err
	}
	return w.Commit()
}

// Opener is the part of filetransfer.Store that ReadAll needs.
type Opener interface {
	Open(ctx context.Context, key string) (io.ReadCloser, error)
}

// ReadAll returns the whole content of key in s.
func ReadAll(ctx context.Context, s Opener, key string) ([]byte, error) {
	r, err := s.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
