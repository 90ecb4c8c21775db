package filetransfer

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// MaxLinkTTL is the longest lifetime of a download link: S3 refuses presigned
// URLs valid for longer than seven days, and every Store keeps the same limit.
const MaxLinkTTL = 7 * 24 * time.Hour

// Store keeps exported files. Implementations: filetransfer/s3 (S3 and
// compatible stores), filetransfer/fs (a local folder) and filetransfer/memory
// (for tests). Every implementation passes filetransfer/storetest.
//
// Keys are slash-separated relative paths; stores reject keys that fail
// ValidateKey with ErrInvalidKey.
type Store interface {
	// Create starts writing the object key. Nothing is visible to readers
	// until Commit returns nil; then the new content replaces any previous
	// version at once. Until then (and forever after Abort, a failed Write or
	// the end of ctx) readers keep seeing the previous version. ctx governs
	// the whole write, Commit included.
	Create(ctx context.Context, key string) (Writer, error)
	// Open returns the content of key, or an error wrapping ErrNotFound.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// URL returns a link that downloads key with a plain HTTP GET until the
	// returned expiry, ttl from now. ttl must be in (0, MaxLinkTTL], or the
	// error wraps ErrInvalidTTL.
	URL(ctx context.Context, key string, ttl time.Duration) (url string, expires time.Time, err error)
}

// Writer is an object being written. Writes are streamed: a Store holds at
// most a bounded buffer (S3: a few parts), never the whole object, except the
// memory store.
type Writer interface {
	io.Writer
	// Commit publishes what was written, atomically. After an error from
	// Write, Commit returns an error and publishes nothing.
	Commit() error
	// Abort discards what was written (S3: aborts the multipart upload so no
	// parts are left behind). It is safe to call after Commit, where it does
	// nothing, and more than once.
	Abort() error
}

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

// ValidateName reports whether name is a valid dataset name: 1 to 128 bytes
// of [A-Za-z0-9_-], starting with a letter or digit. Names become one path
// segment of every key, so this rules out traversal such as "../x".
func ValidateName(name string) error {
	if name == "" || len(name) > 128 {
		return fmt.Errorf("%w: %q: must be 1 to 128 characters", ErrInvalidName, name)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && (r == '_' || r == '-'))
		if !ok {
			return fmt.Errorf("%w: %q: only letters, digits, '_' and '-' (not first) are allowed", ErrInvalidName, name)
		}
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

// Put writes data to key in s and commits it.
func Put(ctx context.Context, s Store, key string, data []byte) error {
	w, err := s.Create(ctx, key)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		_ = w.Abort()
		return err
	}
	return w.Commit()
}

// ReadAll returns the whole content of key in s.
func ReadAll(ctx context.Context, s Store, key string) ([]byte, error) {
	r, err := s.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// CheckTTL returns an error wrapping ErrInvalidTTL unless 0 < ttl <= MaxLinkTTL.
func CheckTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > MaxLinkTTL {
		return fmt.Errorf("%w: %v (must be in (0, %v])", ErrInvalidTTL, ttl, MaxLinkTTL)
	}
	return nil
}

// Checker is implemented by stores that can tell up front whether they are
// usable (the bucket exists, the credentials are accepted, the folder is
// there). The Exporter calls Check before it touches the database, so a
// misconfigured store fails fast with a clear error.
type Checker interface {
	Check(ctx context.Context) error
}
