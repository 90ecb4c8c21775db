package memory

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/internal/linksign"
	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
)

// DefaultBaseURL is where links point unless WithBaseURL says otherwise:
// links that Handler checks but no network reaches.
const DefaultBaseURL = "http://memory.invalid/"

// Option configures a Store; see New.
type Option interface{ apply(*config) error }

type config struct {
	links linksign.Settings
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("memory: %w: "+format, append([]any{filetransfer.ErrInvalidOption}, args...)...)
}

// WithBaseURL sets the absolute http(s) URL where Handler is served, for
// the links URL returns. Default DefaultBaseURL.
func WithBaseURL(url string) Option { return linkOption(linksign.SetBaseURL(url)) }

// WithSecret sets the key of the link signatures, at least 16 bytes; the
// store keeps a copy. Default: 32 random bytes.
func WithSecret(secret []byte) Option { return linkOption(linksign.SetSecret(secret)) }

type linkOption func(*linksign.Settings) error

func (f linkOption) apply(c *config) error {
	if err := f(&c.links); err != nil {
		return invalid("%v", err)
	}
	return nil
}

// Store is an in-memory filetransfer.Store, safe for concurrent use.
type Store struct {
	mu     sync.Mutex
	objs   map[string][]byte
	signer *linksign.Signer
}

var _ filetransfer.Store = (*Store)(nil)

// New returns an empty Store. An option it cannot use is an error wrapping
// filetransfer.ErrInvalidOption.
func New(opts ...Option) (*Store, error) {
	cfg := config{links: linksign.Settings{BaseURL: DefaultBaseURL}}
	for i, o := range opts {
		if o == nil {
			return nil, invalid("option %d is nil", i)
		}
		if err := o.apply(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.links.Secret == nil {
		cfg.links.Secret = make([]byte, 32)
		_, _ = rand.Read(cfg.links.Secret)
	}
	s, err := linksign.New(cfg.links.BaseURL, cfg.links.Secret)
	if err != nil {
		return nil, invalid("%v", err)
	}
	return &Store{objs: map[string][]byte{}, signer: s}, nil
}

// Create implements filetransfer.Store.
func (s *Store) Create(ctx context.Context, key string) (filetransfer.Writer, error) {
	if err := storeutil.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &writer{s: s, ctx: ctx, key: key}, nil
}

// Open implements filetransfer.Store. The reader is also an io.ReadSeeker.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := storeutil.ValidateKey(key); err != nil {
		return nil, err
	}
	s.mu.Lock()
	b, ok := s.objs[key]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("memory: %s: %w", key, filetransfer.ErrNotFound)
	}
	return readSeekCloser{bytes.NewReader(b)}, nil
}

// Delete implements filetransfer.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storeutil.ValidateKey(key); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.objs, key)
	s.mu.Unlock()
	return nil
}

// URL implements filetransfer.Store with an HMAC-signed link served by Handler.
func (s *Store) URL(ctx context.Context, key string, ttl time.Duration) (string, time.Time, error) {
	return s.signer.Sign(key, ttl)
}

// Handler serves the links URL returns (403 for expired or tampered links).
func (s *Store) Handler() http.Handler { return s.signer.Handler(s.Open) }

// Keys returns every key, sorted.
func (s *Store) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.objs))
	for k := range s.objs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

type readSeekCloser struct{ *bytes.Reader }

func (readSeekCloser) Close() error { return nil }

type writer struct {
	s       *Store
	ctx     context.Context
	key     string
	buf     bytes.Buffer
	aborted bool
	done    bool
}

func (w *writer) Write(p []byte) (int, error) {
	if w.aborted || w.done {
		return 0, filetransfer.ErrAborted
	}
	if err := w.ctx.Err(); err != nil {
		w.aborted = true
		return 0, err
	}
	return w.buf.Write(p)
}

func (w *writer) Commit() error {
	if w.aborted || w.done {
		return filetransfer.ErrAborted
	}
	if err := w.ctx.Err(); err != nil {
		w.aborted = true
		return err
	}
	w.done = true
	b := bytes.Clone(w.buf.Bytes())
	w.s.mu.Lock()
	w.s.objs[w.key] = b
	w.s.mu.Unlock()
	return nil
}

func (w *writer) Abort() error {
	if !w.done {
		w.aborted = true
		w.buf = bytes.Buffer{}
	}
	return nil
}
