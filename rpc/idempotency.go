package rpc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults of the idempotency middleware.
const (
	DefaultIdempotencyTTL  = 24 * time.Hour
	DefaultIdempotencyLock = time.Minute
	DefaultMaxBodyBytes    = 1 << 20
	// MaxIdempotencyKeyLen is the longest key accepted.
	MaxIdempotencyKeyLen = 255
)

// IdempotencyOption configures the Idempotency middleware.
type IdempotencyOption interface{ applyIdem(*idemConfig) error }

type idemOptionFunc func(*idemConfig) error

func (f idemOptionFunc) applyIdem(c *idemConfig) error { return f(c) }

type idemConfig struct {
	methods     map[string]bool
	scope       func(*http.Request) string
	ttl         time.Duration
	lock        time.Duration
	maxBody     int64
	store       func(status int) bool
	fingerprint func(r *http.Request, body []byte) string
	logger      *slog.Logger
	tracers     []IdempotencyTracer
}

// WithMethods sets the methods that require an Idempotency-Key; requests
// with other methods pass through untouched. Default: POST and PATCH.
func WithMethods(methods ...string) IdempotencyOption {
	return idemOptionFunc(func(c *idemConfig) error {
		if len(methods) == 0 {
			return fmt.Errorf("%w: WithMethods(): no method", ErrInvalidOption)
		}
		c.methods = map[string]bool{}
		for _, m := range methods {
			c.methods[strings.ToUpper(m)] = true
		}
		return nil
	})
}

// WithScope sets the function that names the caller of a request, for
// example the authenticated principal that an earlier middleware put in the
// request's context. Keys are kept per scope, so two callers using the same
// key never see each other's responses. Default: one scope for everyone.
func WithScope(scope func(r *http.Request) string) IdempotencyOption {
	return idemOptionFunc(func(c *idemConfig) error {
		if scope == nil {
			return fmt.Errorf("%w: WithScope(nil)", ErrInvalidOption)
		}
		c.scope = scope
		return nil
	})
}

// WithTTL sets how long a response is kept for replay. Default 24h.
func WithTTL(d time.Duration) IdempotencyOption {
	return idemOptionFunc(func(c *idemConfig) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithTTL(%v): must be positive", ErrInvalidOption, d)
		}
		c.ttl = d
		return nil
	})
}

// WithLockTimeout sets how long a running request holds its key: a server
// that dies mid-request frees the key after d. Keep it above the slowest
// handler, or a retry may run the handler a second time (the late first run
// then cannot store its response: see Idempotency). Default 1 minute.
func WithLockTimeout(d time.Duration) IdempotencyOption {
	return idemOptionFunc(func(c *idemConfig) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithLockTimeout(%v): must be positive", ErrInvalidOption, d)
		}
		c.lock = d
		return nil
	})
}

// WithMaxBodyBytes caps the request body, which is read in full to
// fingerprint it; a larger one gets 413. Default 1 MiB.
func WithMaxBodyBytes(n int64) IdempotencyOption {
	return idemOptionFunc(func(c *idemConfig) error {
		if n <= 0 {
			return fmt.Errorf("%w: WithMaxBodyBytes(%d): must be positive", ErrInvalidOption, n)
		}
		c.maxBody = n
		return nil
	})
}

// WithStoreStatus decides which response statuses are kept for replay; a
// response not kept releases the key so a retry runs the handler again.
// Default: every status except 408, 429, 502, 503 and 504, which say the
// request was not processed and is worth retrying.
func WithStoreStatus(store func(status int) bool) IdempotencyOption {
	return idemOptionFunc(func(c *idemConfig) error {
		if store == nil {
			return fmt.Errorf("%w: WithStoreStatus(nil)", ErrInvalidOption)
		}
		c.store = store
		return nil
	})
}

// WithFingerprint replaces the request fingerprint, which detects a key
// reused with a different request. Default: hex SHA-256 of the method, the
// request URI and the body.
func WithFingerprint(fp func(r *http.Request, body []byte) string) IdempotencyOption {
	return idemOptionFunc(func(c *idemConfig) error {
		if fp == nil {
			return fmt.Errorf("%w: WithFingerprint(nil)", ErrInvalidOption)
		}
		c.fingerprint = fp
		return nil
	})
}

// WithLogger sets where store errors that cannot reach the client are
// logged (a response was sent but could not be stored). Default: slog.Default().
func WithLogger(l *slog.Logger) IdempotencyOption {
	return idemOptionFunc(func(c *idemConfig) error {
		if l == nil {
			return fmt.Errorf("%w: WithLogger(nil)", ErrInvalidOption)
		}
		c.logger = l
		return nil
	})
}

func defaultStoreStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return false
	}
	return true
}

// fingerprint is the default request fingerprint: hex SHA-256 of the
// method, the request URI and the body.
func fingerprint(r *http.Request, body []byte) string {
	h := sha256.New()
	h.Write([]byte(r.Method))
	h.Write([]byte{'\n'})
	h.Write([]byte(r.URL.RequestURI()))
	h.Write([]byte{'\n'})
	h.Write(body)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))
}

// Idempotency returns middleware that makes unsafe requests idempotent by
// their Idempotency-Key header, following the IETF
// draft-ietf-httpapi-idempotency-key-header:
//
//   - a request of a configured method (POST, PATCH) without a valid key gets
//     400 with an application/problem+json body;
//   - the first request with a key runs; its status, headers and body are
//     kept in store for the TTL;
//   - a retry with the same key and payload gets the kept response again,
//     with the header Idempotent-Replayed: true, and the handler does not run;
//   - the same key with a different payload gets 422;
//   - the same key while the first request still runs gets 409.
//
// The key may be sent as a structured-field string ("...") or bare. A
// handler that panics releases its key and the panic continues.
//
// A handler that outlives the lock timeout (WithLockTimeout) loses its claim
// once another request with the key begins: that request runs the handler
// again. The late first request's response still goes to its own client (it
// was already written), but it is not stored and does not release the key:
// the store refuses it (ErrStaleClaim), the middleware logs a warning, and
// retries get the newer request's stored response.
//
// WithTracer installs IdempotencyTracers, told the outcome of every request
// with a valid key (stored, replayed, in progress, stale, ...).
func Idempotency(store IdempotencyStore, opts ...IdempotencyOption) (func(http.Handler) http.Handler, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: Idempotency: nil store", ErrInvalidOption)
	}
	c := idemConfig{
		methods:     map[string]bool{http.MethodPost: true, http.MethodPatch: true},
		scope:       func(*http.Request) string { return "" },
		ttl:         DefaultIdempotencyTTL,
		lock:        DefaultIdempotencyLock,
		maxBody:     DefaultMaxBodyBytes,
		store:       defaultStoreStatus,
		fingerprint: fingerprint,
	}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil IdempotencyOption", ErrInvalidOption)
		}
		if err := o.applyIdem(&c); err != nil {
			return nil, err
		}
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return func(next http.Handler) http.Handler {
		return &idemHandler{c: c, store: store, next: next}
	}, nil
}

type idemHandler struct {
	c     idemConfig
	store IdempotencyStore
	next  http.Handler
}

// parseKey reads an Idempotency-Key value: an sf-string or a bare token.
func parseKey(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
		if strings.ContainsAny(v, "\\\"") {
			v = strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(v)
		}
	}
	if v == "" || len(v) > MaxIdempotencyKeyLen {
		return "", false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return "", false
		}
	}
	return v, true
}

func (h *idemHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.c.methods[r.Method] {
		h.next.ServeHTTP(w, r)
		return
	}
	raw := r.Header.Values(HeaderIdempotencyKey)
	if len(raw) == 0 {
		problem(w, http.StatusBadRequest, "Idempotency-Key is missing",
			"This operation requires an Idempotency-Key header; send the same key again to retry it safely.")
		return
	}
	key, ok := parseKey(raw[0])
	if !ok || len(raw) > 1 {
		problem(w, http.StatusBadRequest, "Idempotency-Key is invalid",
			fmt.Sprintf("Send one Idempotency-Key of 1 to %d printable ASCII characters.", MaxIdempotencyKeyLen))
		return
	}
	body, err := readBody(w, r, h.c.maxBody)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			problem(w, http.StatusRequestEntityTooLarge, "Request body too large",
				fmt.Sprintf("The body of an idempotent request may have at most %d bytes.", h.c.maxBody))
			return
		}
		problem(w, http.StatusBadRequest, "Request body unreadable", err.Error())
		return
	}
	fp := h.c.fingerprint(r, body)
	scope := h.c.scope(r)
	skey := strconv.Itoa(len(scope)) + ":" + scope + ":" + key

	claim, err := h.store.Begin(r.Context(), skey, fp, h.c.lock)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, "Idempotency store unavailable", "Retry the request with the same Idempotency-Key.")
		h.trace(r.Context(), key, scope, IdempotencyStoreFailed, http.StatusServiceUnavailable, err)
		return
	}
	if rec := claim.Record; rec != nil {
		switch {
		case rec.Fingerprint != fp:
			problem(w, http.StatusUnprocessableEntity, "Idempotency-Key is already used",
				"This Idempotency-Key was used with a different request payload; use a new key for a new request.")
			h.trace(r.Context(), key, scope, IdempotencyMismatch, http.StatusUnprocessableEntity, nil)
		case rec.Response == nil:
			problem(w, http.StatusConflict, "A request with this Idempotency-Key is being processed",
				"The first request with this Idempotency-Key has not finished; retry later.")
			h.trace(r.Context(), key, scope, IdempotencyInProgress, http.StatusConflict, nil)
		default:
			replay(w, rec.Response)
			h.trace(r.Context(), key, scope, IdempotencyReplayed, rec.Response.StatusCode, nil)
		}
		return
	}

	// We own the key: run the handler, keep what it answers.
	token := claim.Token
	rw := &recorder{w: w, status: http.StatusOK}
	if len(w.Header()) > 0 {
		// Headers set before this middleware (by outer ones) are not the
		// handler's response: keep them out of the store.
		rw.before = w.Header().Clone()
	}
	// The response is stored even when the client has gone away: the handler
	// ran. Stores bound their own calls (pgstore has a query timeout).
	ctx := context.WithoutCancel(r.Context())
	completed := false
	defer func() {
		if completed {
			return
		}
		// The handler panicked: free the key so the client can retry.
		h.release(ctx, key, scope, skey, token, rw.status, "releasing key after panic")
	}()
	h.next.ServeHTTP(rw, r)
	completed = true
	if !h.c.store(rw.status) {
		h.release(ctx, key, scope, skey, token, rw.status, "releasing key")
		return
	}
	if !rw.wrote {
		rw.snapshot()
	}
	resp := &StoredResponse{StatusCode: rw.status, Header: rw.header, Body: rw.body.Bytes()}
	if err := h.store.Complete(ctx, skey, token, resp, h.c.ttl); err != nil {
		if errors.Is(err, ErrStaleClaim) {
			// The handler outlived the lock timeout and another request
			// claimed the key: its response went to this client but is not
			// stored; the newer owner's state stays as it is.
			h.c.logger.Warn("rpc: idempotency: lock timeout passed and the key was claimed again; response not stored",
				"key", key, "status", rw.status, "err", err)
			h.trace(ctx, key, scope, IdempotencyStale, rw.status, err)
			return
		}
		h.c.logger.Error("rpc: idempotency: storing response", "key", key, "err", err)
		h.trace(ctx, key, scope, IdempotencyStoreFailed, rw.status, err)
		h.release(ctx, key, scope, skey, token, rw.status, "")
		return
	}
	h.trace(ctx, key, scope, IdempotencyStored, rw.status, nil)
}

// release frees the claim token holds on skey and logs a failure; a stale
// claim (the key was claimed again after the lock timeout) is left alone.
// It traces the outcome unless what is empty (already traced).
func (h *idemHandler) release(ctx context.Context, key, scope, skey, token string, status int, what string) {
	err := h.store.Release(ctx, skey, token)
	outcome := IdempotencyReleased
	switch {
	case what == "":
		if err != nil && !errors.Is(err, ErrStaleClaim) {
			h.c.logger.Error("rpc: idempotency: releasing key", "key", key, "err", err)
		}
		return
	case err == nil:
	case errors.Is(err, ErrStaleClaim):
		outcome = IdempotencyStale
		h.c.logger.Warn("rpc: idempotency: "+what+": lock timeout passed and the key was claimed again", "key", key, "err", err)
	default:
		outcome = IdempotencyStoreFailed
		h.c.logger.Error("rpc: idempotency: "+what, "key", key, "err", err)
	}
	h.trace(ctx, key, scope, outcome, status, err)
}

func (h *idemHandler) trace(ctx context.Context, key, scope string, o IdempotencyOutcome, status int, err error) {
	for _, t := range h.c.tracers {
		t.TraceIdempotency(ctx, TraceIdempotencyData{Key: key, Scope: scope, Outcome: o, StatusCode: status, Err: err})
	}
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	rd := http.MaxBytesReader(w, r.Body, limit)
	var body []byte
	var err error
	if cl := r.ContentLength; cl > 0 {
		// Known length: read into a buffer of that size (+1 to see EOF).
		body = make([]byte, 0, cl+1)
		for {
			n, rerr := rd.Read(body[len(body):cap(body)])
			body = body[:len(body)+n]
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				err = rerr
				break
			}
			if len(body) == cap(body) {
				body = append(body, 0)[:len(body)] // longer than announced: grow
			}
		}
	} else {
		body, err = io.ReadAll(rd)
	}
	r.Body.Close()
	if err != nil {
		return nil, err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, nil
}

func replay(w http.ResponseWriter, resp *StoredResponse) {
	hdr := w.Header()
	for k, v := range resp.Header {
		hdr[k] = append([]string(nil), v...)
	}
	hdr.Set(HeaderIdempotentReplayed, "true")
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(resp.Body)
}

// problem writes an RFC 9457 problem details response.
func problem(w http.ResponseWriter, status int, title, detail string) {
	b, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}{"about:blank", title, status, detail})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// recorder passes a response through and keeps a copy of it.
type recorder struct {
	w      http.ResponseWriter
	status int
	header http.Header // the handler's headers, kept at WriteHeader
	before http.Header // headers present before the handler ran
	wrote  bool
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.w.Header() }

func (r *recorder) WriteHeader(code int) {
	if r.wrote {
		return
	}
	if code >= 100 && code < 200 {
		r.w.WriteHeader(code) // informational: not the final response
		return
	}
	r.wrote = true
	r.status = code
	r.snapshot()
	r.w.WriteHeader(code)
}

// snapshot keeps the headers the handler set or changed.
func (r *recorder) snapshot() {
	cur := r.w.Header()
	r.header = make(http.Header, len(cur))
	for k, v := range cur {
		if old, ok := r.before[k]; ok && slices.Equal(old, v) {
			continue
		}
		r.header[k] = slices.Clone(v)
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	r.body.Write(p)
	return r.w.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush and so on).
func (r *recorder) Unwrap() http.ResponseWriter { return r.w }
