package filetransfer

import (
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
)

// LinkSigner makes and checks expiring download links for stores that have no
// presigning of their own (the folder and memory stores). A link is
//
//	<base URL><escaped key>?expires=<unix seconds>&sig=<base64url HMAC-SHA256>
//
// where the HMAC covers the key and the expiry, so changing either (or the
// signature) makes the link invalid. Serve the links with Handler.
type LinkSigner struct {
	base   *url.URL
	secret []byte
	// Now returns the current time; nil means time.Now. Tests set it to move
	// the clock past a link's expiry.
	Now func() time.Time
}

// NewLinkSigner returns a signer for links under baseURL (an absolute http or
// https URL whose path is where Handler is mounted, e.g.
// "https://files.example.com/dl/"), keyed with secret (at least 16 bytes).
func NewLinkSigner(baseURL string, secret []byte) (*LinkSigner, error) {
	if len(secret) < 16 {
		return nil, errors.New("filetransfer: link secret must be at least 16 bytes")
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("filetransfer: link base URL %q must be an absolute http(s) URL", baseURL)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	return &LinkSigner{base: u, secret: append([]byte(nil), secret...)}, nil
}

func (s *LinkSigner) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *LinkSigner) mac(key string, expires int64) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("GET\n"))
	m.Write([]byte(key))
	m.Write([]byte("\n"))
	m.Write([]byte(strconv.FormatInt(expires, 10)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Sign returns a link to key valid for ttl, and its expiry.
func (s *LinkSigner) Sign(key string, ttl time.Duration) (string, time.Time, error) {
	if err := ValidateKey(key); err != nil {
		return "", time.Time{}, err
	}
	if err := CheckTTL(ttl); err != nil {
		return "", time.Time{}, err
	}
	exp := s.now().Add(ttl).Truncate(time.Second)
	u := *s.base
	u.Path = s.base.Path + key
	u.RawQuery = url.Values{"expires": {strconv.FormatInt(exp.Unix(), 10)}, "sig": {s.mac(key, exp.Unix())}}.Encode()
	return u.String(), exp, nil
}

// Verify checks a link's key (relative to the base path) and query. It returns
// an error wrapping ErrLinkInvalid for a missing or wrong signature and
// ErrLinkExpired for a correctly signed link past its expiry.
func (s *LinkSigner) Verify(key string, q url.Values) error {
	exp, err := strconv.ParseInt(q.Get("expires"), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: bad expires", ErrLinkInvalid)
	}
	if !hmac.Equal([]byte(q.Get("sig")), []byte(s.mac(key, exp))) {
		return ErrLinkInvalid
	}
	if !s.now().Before(time.Unix(exp, 0)) {
		return ErrLinkExpired
	}
	return nil
}

// Handler serves the links made by Sign: it checks the signature and expiry
// (403 Forbidden when either fails), then streams the object from open (404
// when it wraps ErrNotFound). When the object is an io.ReadSeeker it is
// served with http.ServeContent, so range requests work.
func (s *LinkSigner) Handler(open func(ctx context.Context, key string) (io.ReadCloser, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		key, ok := strings.CutPrefix(r.URL.Path, s.base.Path)
		if !ok || ValidateKey(key) != nil {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		if err := s.Verify(key, r.URL.Query()); err != nil {
			msg := "forbidden: invalid link"
			if errors.Is(err, ErrLinkExpired) {
				msg = "forbidden: link expired"
			}
			http.Error(w, msg, http.StatusForbidden)
			return
		}
		rc, err := open(r.Context(), key)
		if errors.Is(err, ErrNotFound) {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		defer rc.Close()
		w.Header().Set("Content-Type", ContentType(key))
		w.Header().Set("Cache-Control", "private, no-store")
		if rs, ok := rc.(io.ReadSeeker); ok {
			http.ServeContent(w, r, "", time.Time{}, rs)
			return
		}
		_, _ = io.Copy(w, rc)
	})
}
