// Package linksign makes and checks the expiring HMAC download links of the
// stores that have no presigning of their own (filetransfer/fs and
// filetransfer/memory), and serves them.
package linksign

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
)

// MinSecret is the shortest secret New accepts.
const MinSecret = 16

var (
	// ErrExpired is returned by Verify for a link past its expiry.
	ErrExpired = errors.New("filetransfer: link expired")
	// ErrInvalid is returned by Verify for a link whose signature does not
	// match (tampered key, expiry or signature).
	ErrInvalid = errors.New("filetransfer: link signature invalid")
)

// Settings are a store's link options, set by its WithBaseURL and
// WithSecret; the bodies of those options are SetBaseURL and SetSecret.
type Settings struct {
	BaseURL string
	Secret  []byte
}

// SetBaseURL sets the base URL after checking it is an absolute http(s)
// URL. The error names the option.
func SetBaseURL(baseURL string) func(*Settings) error {
	return func(s *Settings) error {
		if _, err := parseBase(baseURL); err != nil {
			return fmt.Errorf("WithBaseURL(%q): %w", baseURL, err)
		}
		s.BaseURL = baseURL
		return nil
	}
}

// SetSecret sets a copy of secret after checking it is at least MinSecret
// bytes long. The error names the option.
func SetSecret(secret []byte) func(*Settings) error {
	return func(s *Settings) error {
		if len(secret) < MinSecret {
			return fmt.Errorf("WithSecret: %d bytes, at least %d are needed", len(secret), MinSecret)
		}
		s.Secret = bytes.Clone(secret)
		return nil
	}
}

func parseBase(baseURL string) (*url.URL, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("not an absolute http(s) URL")
	}
	return u, nil
}

// Signer makes and checks links of the form
//
//	<base URL><escaped key>?expires=<unix seconds>&sig=<base64url HMAC-SHA256>
//
// where the HMAC covers the key and the expiry, so changing either (or the
// signature) makes the link invalid. The clock is time.Now (tests move it
// with testing/synctest).
type Signer struct {
	base   *url.URL
	secret []byte
}

// New returns a signer for links under baseURL (an absolute http or https
// URL whose path is where Handler is mounted, e.g.
// "https://files.example.com/dl/"), keyed with secret (at least MinSecret
// bytes). The errors name what is wrong without a package prefix, for the
// caller to wrap.
func New(baseURL string, secret []byte) (*Signer, error) {
	if len(secret) < MinSecret {
		return nil, fmt.Errorf("secret of %d bytes: at least %d are needed", len(secret), MinSecret)
	}
	u, err := parseBase(baseURL)
	if err != nil {
		return nil, fmt.Errorf("base URL %q: %w", baseURL, err)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	return &Signer{base: u, secret: append([]byte(nil), secret...)}, nil
}

func (s *Signer) mac(key string, expires int64) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("GET\n"))
	m.Write([]byte(key))
	m.Write([]byte("\n"))
	m.Write([]byte(strconv.FormatInt(expires, 10)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Sign returns a link to key valid for ttl, and its expiry.
func (s *Signer) Sign(key string, ttl time.Duration) (string, time.Time, error) {
	if err := storeutil.ValidateKey(key); err != nil {
		return "", time.Time{}, err
	}
	if err := storeutil.CheckTTL(ttl); err != nil {
		return "", time.Time{}, err
	}
	exp := time.Now().Add(ttl).Truncate(time.Second)
	u := *s.base
	u.Path = s.base.Path + key
	u.RawQuery = url.Values{"expires": {strconv.FormatInt(exp.Unix(), 10)}, "sig": {s.mac(key, exp.Unix())}}.Encode()
	return u.String(), exp, nil
}

// Verify checks a link's key (relative to the base path) and query. It
// returns an error wrapping ErrInvalid for a missing or wrong signature and
// ErrExpired for a correctly signed link past its expiry.
func (s *Signer) Verify(key string, q url.Values) error {
	exp, err := strconv.ParseInt(q.Get("expires"), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: bad expires", ErrInvalid)
	}
	if !hmac.Equal([]byte(q.Get("sig")), []byte(s.mac(key, exp))) {
		return ErrInvalid
	}
	if !time.Now().Before(time.Unix(exp, 0)) {
		return ErrExpired
	}
	return nil
}

// Handler serves the links made by Sign: it checks the signature and expiry
// (403 Forbidden when either fails), then streams the object from open (404
// when it wraps ErrNotFound). When the object is an io.ReadSeeker it is
// served with http.ServeContent, so range requests work.
func (s *Signer) Handler(open func(ctx context.Context, key string) (io.ReadCloser, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		key, ok := strings.CutPrefix(r.URL.Path, s.base.Path)
		if !ok || storeutil.ValidateKey(key) != nil {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		if err := s.Verify(key, r.URL.Query()); err != nil {
			msg := "forbidden: invalid link"
			if errors.Is(err, ErrExpired) {
				msg = "forbidden: link expired"
			}
			http.Error(w, msg, http.StatusForbidden)
			return
		}
		rc, err := open(r.Context(), key)
		if errors.Is(err, storeutil.ErrNotFound) {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		defer rc.Close()
		w.Header().Set("Content-Type", storeutil.ContentType(key))
		w.Header().Set("Cache-Control", "private, no-store")
		if rs, ok := rc.(io.ReadSeeker); ok {
			http.ServeContent(w, r, "", time.Time{}, rs)
			return
		}
		_, _ = io.Copy(w, rc)
	})
}
