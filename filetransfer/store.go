package filetransfer

import (
	"context"
	"fmt"
	"io"
	"time"
)

// MaxLinkTTL is the longest lifetime of a download link: S3 refuses presigned
// URLs valid for longer than seven days, and every Store keeps the same limit.
const MaxLinkTTL = 7 * 24 * time.Hour

// Store keeps exported files. Implementations: filetransfer/s3 (S3 and
// compatible stores), filetransfer/fs (a local folder) and filetransfer/memory
// (for tests). Every implementation passes filetransfer/storetest.
//
// Keys are slash-separated relative paths of at most 1024 bytes; stores
// reject an empty key, an empty, "." or ".." segment, a leading or trailing
// slash, a backslash or a control character with an error wrapping
// ErrInvalidKey.
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

// Checker is implemented by stores that can tell up front whether they are
// usable (the bucket exists, the credentials are accepted, the folder is
// there). It is for store implementers: the Exporter calls Check before it
// touches the database, so a misconfigured store fails fast with a clear
// error.
type Checker interface {
	Check(ctx context.Context) error
}

// validateName reports whether name is a valid dataset name: 1 to 128 bytes
// of [A-Za-z0-9_-], starting with a letter or digit. Names become one path
// segment of every key, so this rules out traversal such as "../x".
func validateName(name string) error {
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
