package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"net/http"
	"os"
	"path"
	"time"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/internal/linksign"
	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
	"github.com/go-integration/patterns/internal/ids"
)

// Option configures a Store; see New.
type Option interface{ apply(*config) error }

type option func(*config) error

func (f option) apply(c *config) error { return f(c) }

type config struct {
	links  linksign.Settings
	noSync bool
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("fs: %w: "+format, append([]any{filetransfer.ErrInvalidOption}, args...)...)
}

// WithBaseURL sets the absolute http(s) URL where Handler is served, e.g.
// "https://files.example.com/dl/"; links are this URL followed by the key.
// Give it together with WithSecret; without both, URL fails and Handler
// answers 403.
func WithBaseURL(url string) Option { return linkOption(linksign.SetBaseURL(url)) }

// WithSecret sets the key of the link signatures: at least 16 bytes, the
// same on every instance that serves the links. Give it together with
// WithBaseURL. The store keeps a copy.
func WithSecret(secret []byte) Option { return linkOption(linksign.SetSecret(secret)) }

type linkOption func(*linksign.Settings) error

func (f linkOption) apply(c *config) error {
	if err := f(&c.links); err != nil {
		return invalid("%v", err)
	}
	return nil
}

// WithoutSync skips the fsync of each file and its folder around the
// rename: faster, but a crash may leave an empty or truncated file
// published. Default: files are synced.
func WithoutSync() Option {
	return option(func(c *config) error { c.noSync = true; return nil })
}

// Store is a filetransfer.Store in a local folder, safe for concurrent use.
type Store struct {
	dir    string
	root   *os.Root
	signer *linksign.Signer
	noSync bool
}

var _ filetransfer.Store = (*Store)(nil)

// New opens the folder dir, which must exist (the error wraps
// filetransfer.ErrStoreNotFound otherwise); Close releases it. An option it
// cannot use is an error wrapping filetransfer.ErrInvalidOption.
func New(dir string, opts ...Option) (*Store, error) {
	var cfg config
	for i, o := range opts {
		if o == nil {
			return nil, invalid("option %d is nil", i)
		}
		if err := o.apply(&cfg); err != nil {
			return nil, err
		}
	}
	var signer *linksign.Signer
	if l := cfg.links; l.BaseURL != "" || l.Secret != nil {
		if l.BaseURL == "" || l.Secret == nil {
			return nil, invalid("WithBaseURL and WithSecret go together (base URL set: %t, secret set: %t)", l.BaseURL != "", l.Secret != nil)
		}
		var err error
		if signer, err = linksign.New(l.BaseURL, l.Secret); err != nil {
			return nil, invalid("%v", err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		if errors.Is(err, iofs.ErrNotExist) {
			return nil, fmt.Errorf("fs: folder %q: %w", dir, filetransfer.ErrStoreNotFound)
		}
		return nil, fmt.Errorf("fs: %w", err)
	}
	return &Store{dir: dir, root: root, signer: signer, noSync: cfg.noSync}, nil
}

// Check reports whether the folder still exists and is a folder.
func (s *Store) Check(ctx context.Context) error {
	st, err := os.Stat(s.dir)
	if err != nil || !st.IsDir() {
		return fmt.Errorf("fs: folder %q: %w", s.dir, filetransfer.ErrStoreNotFound)
	}
	return nil
}

// Close releases the folder handle.
func (s *Store) Close() error { return s.root.Close() }

// classify turns a not-exist error into ErrStoreNotFound when the folder
// itself is gone, ErrNotFound otherwise.
func (s *Store) classify(key string, err error) error {
	if errors.Is(err, iofs.ErrNotExist) {
		if _, serr := os.Stat(s.dir); serr != nil {
			return fmt.Errorf("fs: folder %q: %w", s.dir, filetransfer.ErrStoreNotFound)
		}
		return fmt.Errorf("fs: %s: %w", key, filetransfer.ErrNotFound)
	}
	if errors.Is(err, iofs.ErrPermission) {
		return fmt.Errorf("fs: %s: %w: %v", key, filetransfer.ErrAccessDenied, err)
	}
	return fmt.Errorf("fs: %s: %w", key, err)
}

// Create implements filetransfer.Store: it writes to a hidden temporary file
// next to key (".<name>.tmp-<random>", which Hive, Athena and Spark skip).
func (s *Store) Create(ctx context.Context, key string) (filetransfer.Writer, error) {
	if err := storeutil.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir, name := path.Split(key)
	if dir != "" {
		if err := s.root.MkdirAll(dir, 0o755); err != nil {
			return nil, s.classify(key, err)
		}
	}
	tmp := dir + "." + name + ".tmp-" + ids.Hex()
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, s.classify(key, err)
	}
	return &writer{s: s, ctx: ctx, key: key, dir: dir, tmp: tmp, f: f}, nil
}

// Open implements filetransfer.Store. The reader is an *os.File.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := storeutil.ValidateKey(key); err != nil {
		return nil, err
	}
	f, err := s.root.Open(key)
	if err != nil {
		return nil, s.classify(key, err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("fs: %s: not a regular file: %w", key, filetransfer.ErrNotFound)
	}
	return f, nil
}

// Delete implements filetransfer.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storeutil.ValidateKey(key); err != nil {
		return err
	}
	if err := s.root.Remove(key); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return s.classify(key, err)
	}
	return nil
}

// URL implements filetransfer.Store with an HMAC-signed link served by Handler.
func (s *Store) URL(ctx context.Context, key string, ttl time.Duration) (string, time.Time, error) {
	if s.signer == nil {
		return "", time.Time{}, errors.New("fs: URL needs WithBaseURL and WithSecret")
	}
	return s.signer.Sign(key, ttl)
}

// Handler serves the links URL returns: 403 for an expired or tampered link,
// 404 for a missing file, range requests supported. Mount it at the path of
// WithBaseURL, e.g. mux.Handle("/dl/", store.Handler()).
func (s *Store) Handler() http.Handler {
	if s.signer == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "links are not configured", http.StatusForbidden)
		})
	}
	return s.signer.Handler(s.Open)
}

type writer struct {
	s        *Store
	ctx      context.Context
	key, dir string
	tmp      string
	f        *os.File
	err      error // first failure; the writer is finished once set
	done     bool
}

func (w *writer) Write(p []byte) (int, error) {
	if w.err != nil || w.done {
		return 0, filetransfer.ErrAborted
	}
	n, err := w.f.Write(p)
	if err != nil {
		w.fail(err)
		return n, fmt.Errorf("fs: write %s: %w", w.key, err)
	}
	return n, nil
}

func (w *writer) fail(err error) {
	if w.err == nil {
		w.err = err
		w.f.Close()
		_ = w.s.root.Remove(w.tmp)
	}
}

func (w *writer) Commit() error {
	if w.err != nil || w.done {
		return filetransfer.ErrAborted
	}
	if err := w.ctx.Err(); err != nil {
		w.fail(err)
		return err
	}
	if !w.s.noSync {
		if err := w.f.Sync(); err != nil {
			w.fail(err)
			return fmt.Errorf("fs: sync %s: %w", w.key, err)
		}
	}
	if err := w.f.Close(); err != nil {
		w.err = err
		_ = w.s.root.Remove(w.tmp)
		return fmt.Errorf("fs: close %s: %w", w.key, err)
	}
	if err := w.s.root.Rename(w.tmp, w.key); err != nil {
		w.err = err
		_ = w.s.root.Remove(w.tmp)
		return w.s.classify(w.key, err)
	}
	w.done = true
	if !w.s.noSync {
		dir := w.dir
		if dir == "" {
			dir = "."
		}
		if d, err := w.s.root.Open(dir); err == nil {
			_ = d.Sync()
			d.Close()
		}
	}
	return nil
}

func (w *writer) Abort() error {
	if !w.done {
		w.fail(filetransfer.ErrAborted)
	}
	return nil
}
