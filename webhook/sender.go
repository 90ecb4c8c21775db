package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultSchedule is the Standard Webhooks retry schedule: the delay before
// each attempt, the first immediately. Eight attempts over about 28 hours.
var DefaultSchedule = []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}

// Defaults of a Sender.
const (
	DefaultJitter           = 0.2
	DefaultAttemptTimeout   = 15 * time.Second
	DefaultMaxResponseBytes = 4 << 10
	DefaultMaxRetryAfter    = time.Hour
	DefaultDisableAfter     = 5 * 24 * time.Hour
	DefaultConcurrency      = 8
	DefaultPollInterval     = time.Second
)

// Sender delivers messages to the endpoints of a Store: Send enqueues, Run
// delivers. Each attempt carries the message's webhook-id, a fresh
// webhook-timestamp and a signature with every secret of the endpoint.
//
// An attempt succeeds on a 2xx answer. Any other answer, a transport error or
// a timeout fails it, and the delivery is retried after the schedule's next
// delay (±jitter), or fails when the schedule is exhausted. Redirects are
// never followed (3xx fails). 410 Gone fails the delivery and disables the
// endpoint. 429, 502, 503 and 504 with a Retry-After header (seconds or an
// HTTP date) wait at least that long, capped by WithMaxRetryAfter. An endpoint
// whose attempts have all failed for WithDisableAfter is disabled.
//
// The SSRF guard is on: the Sender refuses to connect to loopback, private,
// link-local, CGNAT, multicast and unspecified addresses (see IsPublicAddr),
// checked on the resolved address at dial time. WithAllowedNetworks lets
// internal endpoints and tests through. WithTLSConfig and WithTransport
// configure TLS and wrap the transport (for instrumentation) behind the guard.
//
// The Sender caches the parsed secrets of the endpoints it signs for, up to
// 1,024 distinct secret lists; beyond that the least recently used are
// dropped and parsed again when next needed.
type Sender struct {
	store   Store
	cfg     senderConfig
	client  *http.Client
	base    *http.Transport // the guarded transport, also when WithTransport wraps it
	wake    chan struct{}
	signers *signerCache // secrets joined by " " -> *Signer
}

type senderConfig struct {
	schedule      []time.Duration
	jitter        float64
	timeout       time.Duration
	lease         time.Duration
	maxBody       int64
	maxRetryAfter time.Duration
	disableAfter  time.Duration
	onDisable     func(e Endpoint, reason string)
	onAttempt     func(d Delivery, a Attempt)
	onError       func(error)
	logger        *slog.Logger
	now           func() time.Time
	concurrency   int
	poll          time.Duration
	guard         bool
	allow         []netip.Prefix
	lookup        func(ctx context.Context, host string) ([]netip.Addr, error)
	userAgent     string
	contentType   string
	tlsConfig     *tls.Config
	transport     func(base *http.Transport) http.RoundTripper
}

// SenderOption configures a Sender.
type SenderOption func(*senderConfig)

// WithSchedule sets the delay before each attempt; its length is the number
// of attempts. Default DefaultSchedule. Tests use milliseconds.
func WithSchedule(delays ...time.Duration) SenderOption {
	return func(c *senderConfig) { c.schedule = append([]time.Duration(nil), delays...) }
}

// WithJitter sets the random spread of each retry delay, as a fraction:
// 0.2 (the default) gives delays between 80% and 120% of the schedule's.
func WithJitter(f float64) SenderOption { return func(c *senderConfig) { c.jitter = f } }

// WithAttemptTimeout bounds one attempt: connecting, sending and reading the
// answer. Default DefaultAttemptTimeout (15 s).
func WithAttemptTimeout(d time.Duration) SenderOption { return func(c *senderConfig) { c.timeout = d } }

// WithLease sets how long a claimed delivery stays reserved for this process.
// If the process dies between an attempt and its record, another worker
// retries the delivery once the lease ends. It must exceed the attempt
// timeout. Default attempt timeout + 30 s.
func WithLease(d time.Duration) SenderOption { return func(c *senderConfig) { c.lease = d } }

// WithMaxResponseBytes sets how much of a response body is read and logged.
// Default DefaultMaxResponseBytes (4 KiB).
func WithMaxResponseBytes(n int64) SenderOption { return func(c *senderConfig) { c.maxBody = n } }

// WithMaxRetryAfter caps how long a Retry-After header can delay a retry.
// Default DefaultMaxRetryAfter (1 h).
func WithMaxRetryAfter(d time.Duration) SenderOption {
	return func(c *senderConfig) { c.maxRetryAfter = d }
}

// WithDisableAfter disables an endpoint whose attempts have all failed for
// this long. Default DefaultDisableAfter (5 days). Zero never disables.
func WithDisableAfter(d time.Duration) SenderOption {
	return func(c *senderConfig) { c.disableAfter = d }
}

// WithOnDisable sets a function called when the Sender disables an endpoint
// (410 Gone, or failing for WithDisableAfter). Default none.
func WithOnDisable(f func(e Endpoint, reason string)) SenderOption {
	return func(c *senderConfig) { c.onDisable = f }
}

// WithOnAttempt sets a function called after every attempt, once it is
// recorded (for logging and metrics). Default none.
func WithOnAttempt(f func(d Delivery, a Attempt)) SenderOption {
	return func(c *senderConfig) { c.onAttempt = f }
}

// WithOnError sets a function called with store errors that the Sender
// survives (a failed claim, record or disable) instead of logging them.
// Default: they are logged (see WithLogger).
func WithOnError(f func(error)) SenderOption { return func(c *senderConfig) { c.onError = f } }

// WithLogger sets the logger of store errors that the Sender survives, when
// WithOnError is not set: level Error, or Warn for ErrLeaseLost, with the
// error as the "err" attribute. A failing store is logged once per attempt
// and once per poll. Default slog.Default(), as it is when the error happens.
func WithLogger(l *slog.Logger) SenderOption { return func(c *senderConfig) { c.logger = l } }

// WithSenderClock sets the clock for timestamps and schedules. Default time.Now.
func WithSenderClock(now func() time.Time) SenderOption { return func(c *senderConfig) { c.now = now } }

// WithConcurrency sets how many attempts Run makes at once. Default DefaultConcurrency.
func WithConcurrency(n int) SenderOption { return func(c *senderConfig) { c.concurrency = n } }

// WithPollInterval sets how often Run looks for due deliveries when idle.
// Send in the same process wakes it at once. Default DefaultPollInterval (1 s).
func WithPollInterval(d time.Duration) SenderOption { return func(c *senderConfig) { c.poll = d } }

// WithAllowedNetworks lets the sender connect to these networks although the
// SSRF guard would refuse them: internal endpoints, or 127.0.0.0/8 in tests.
func WithAllowedNetworks(prefixes ...netip.Prefix) SenderOption {
	return func(c *senderConfig) { c.allow = append(c.allow, prefixes...) }
}

// WithoutSSRFGuard turns the SSRF guard off entirely. Only for senders whose
// endpoints are all trusted.
func WithoutSSRFGuard() SenderOption { return func(c *senderConfig) { c.guard = false } }

// WithLookup replaces the DNS resolver (default: the system's). The SSRF
// guard checks whatever addresses it returns. Useful in tests.
func WithLookup(f func(ctx context.Context, host string) ([]netip.Addr, error)) SenderOption {
	return func(c *senderConfig) { c.lookup = f }
}

// WithContentType sets the Content-Type of requests. Default "application/json".
func WithContentType(ct string) SenderOption { return func(c *senderConfig) { c.contentType = ct } }

// NewSender returns a Sender over store. An option it cannot accept gives an
// error wrapping ErrInvalidOption.
func NewSender(store Store, opts ...SenderOption) (*Sender, error) {
	c := senderConfig{schedule: DefaultSchedule, jitter: DefaultJitter, timeout: DefaultAttemptTimeout,
		maxBody: DefaultMaxResponseBytes, maxRetryAfter: DefaultMaxRetryAfter, disableAfter: DefaultDisableAfter,
		now: time.Now, concurrency: DefaultConcurrency, poll: DefaultPollInterval, guard: true,
		userAgent: "patterns-webhook/1", contentType: "application/json"}
	for _, o := range opts {
		o(&c)
	}
	if c.lease == 0 {
		c.lease = c.timeout + 30*time.Second
	}
	switch {
	case store == nil:
		return nil, errors.New("webhook: NewSender: nil store")
	case len(c.schedule) == 0:
		return nil, optionErrorf("webhook: WithSchedule: at least one attempt")
	case c.jitter < 0 || c.jitter >= 1:
		return nil, optionErrorf("webhook: WithJitter(%v): must be in [0, 1)", c.jitter)
	case c.timeout <= 0:
		return nil, optionErrorf("webhook: WithAttemptTimeout(%v): must be positive", c.timeout)
	case c.lease <= c.timeout:
		return nil, optionErrorf("webhook: WithLease(%v) must exceed WithAttemptTimeout(%v)", c.lease, c.timeout)
	case c.concurrency <= 0:
		return nil, optionErrorf("webhook: WithConcurrency(%d): must be positive", c.concurrency)
	case c.poll <= 0:
		return nil, optionErrorf("webhook: WithPollInterval(%v): must be positive", c.poll)
	}
	for _, d := range c.schedule {
		if d < 0 {
			return nil, optionErrorf("webhook: WithSchedule: negative delay %v", d)
		}
	}
	transport, base, err := newTransport(&c, newGuard(c.guard, c.allow, c.lookup))
	if err != nil {
		return nil, err
	}
	client := &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Sender{store: store, cfg: c, client: client, base: base, wake: make(chan struct{}, 1), signers: newSignerCache(signerCacheSize)}, nil
}

// Send stores m for every enabled endpoint subscribed to m.Type and wakes Run.
// It fills an empty ID (NewID) and a zero Time, and returns the message as
// stored and the number of deliveries created. Sending a message ID again
// creates no second delivery to an endpoint. An ID containing '.' is refused
// with an error wrapping ErrInvalidMessageID.
func (s *Sender) Send(ctx context.Context, m Message) (Message, int, error) {
	now := s.cfg.now()
	if m.ID == "" {
		m.ID = NewID()
	}
	if err := ValidateMessageID(m.ID); err != nil {
		return m, 0, fmt.Errorf("webhook: Send: %w", err)
	}
	if m.Time.IsZero() {
		m.Time = now
	}
	n, err := s.store.Enqueue(ctx, m, now.Add(s.cfg.schedule[0]))
	if err != nil {
		return m, 0, err
	}
	s.Wake()
	return m, n, nil
}

// Resend delivers a message again, to one endpoint or (endpointID "") to
// every endpoint it was sent to, from the first attempt of the schedule.
// It returns how many deliveries were queued again. A messageID that is
// empty or contains '.' is refused with an error wrapping ErrInvalidMessageID.
func (s *Sender) Resend(ctx context.Context, messageID, endpointID string) (int, error) {
	if err := ValidateMessageID(messageID); err != nil {
		return 0, fmt.Errorf("webhook: Resend: %w", err)
	}
	n, err := s.store.Resend(ctx, messageID, endpointID, s.cfg.now())
	if err == nil {
		s.Wake()
	}
	return n, err
}

// ResendFailed queues every failed delivery of an endpoint again (after the
// endpoint is fixed and enabled) and returns how many.
func (s *Sender) ResendFailed(ctx context.Context, endpointID string) (int, error) {
	n, err := s.store.ResendFailed(ctx, endpointID, s.cfg.now())
	if err == nil {
		s.Wake()
	}
	return n, err
}

// Wake makes Run look for due deliveries now (after a Resend, say).
func (s *Sender) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close releases idle connections. Stop Run by cancelling its context.
func (s *Sender) Close() error {
	s.client.CloseIdleConnections() // the WithTransport wrapper's, if it has any
	s.base.CloseIdleConnections()
	return nil
}

// Run delivers due deliveries until ctx is done, then waits for the attempts
// in flight to finish and be recorded (each is bounded by the attempt
// timeout) and returns nil. Several Run loops, in one process or many, can
// share a Store that supports it (pgstore.Store).
func (s *Sender) Run(ctx context.Context) error {
	done := make(chan struct{}, s.cfg.concurrency)
	inflight := 0
	defer func() {
		for ; inflight > 0; inflight-- {
			<-done
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if free := s.cfg.concurrency - inflight; free > 0 && ctx.Err() == nil {
			ds, err := s.store.Claim(ctx, s.cfg.now(), s.cfg.lease, free)
			if err != nil && ctx.Err() == nil {
				s.storeError(ctx, fmt.Errorf("webhook: claim: %w", err))
			}
			for _, d := range ds {
				inflight++
				go func() {
					defer func() { done <- struct{}{} }()
					s.deliver(context.WithoutCancel(ctx), d)
				}()
			}
			if len(ds) == free {
				// Probably more due; look again as soon as a slot frees.
				select {
				case <-done:
					inflight--
					continue
				case <-ctx.Done():
					return nil
				}
			}
		}
		timer.Reset(s.cfg.poll)
		select {
		case <-ctx.Done():
			return nil
		case <-done:
			inflight--
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// RunOnce claims the deliveries due now (up to the concurrency limit), makes
// one attempt at each and records it, and returns how many it attempted. It
// is Run without the loop, for tests and cron-style senders.
func (s *Sender) RunOnce(ctx context.Context) (int, error) {
	ds, err := s.store.Claim(ctx, s.cfg.now(), s.cfg.lease, s.cfg.concurrency)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.deliver(ctx, d)
		}()
	}
	wg.Wait()
	return len(ds), nil
}

func (s *Sender) signer(secrets []string) (*Signer, error) {
	key := strings.Join(secrets, " ")
	if sg := s.signers.get(key); sg != nil {
		return sg, nil
	}
	sg, err := NewSigner(secrets...)
	if err != nil {
		return nil, err
	}
	return s.signers.add(key, sg), nil
}

// deliver makes one attempt at d, records it and applies its consequences.
func (s *Sender) deliver(ctx context.Context, d Delivery) {
	a, retryAfter := s.attempt(ctx, d)
	a.Number = d.Attempts + 1
	disable := ""
	switch {
	case a.StatusCode == 0 && ValidateMessageID(d.Message.ID) != nil:
		// Stored before IDs were checked: it can never be signed safely.
		a.State = DeliveryFailed
	case a.StatusCode >= 200 && a.StatusCode < 300:
		a.State = DeliverySucceeded
	case a.StatusCode == http.StatusGone:
		a.State = DeliveryFailed
		disable = "410 Gone from " + d.Endpoint.URL
	case a.Number >= len(s.cfg.schedule):
		a.State = DeliveryFailed
		a.Error = fmt.Sprintf("%s; gave up after %d attempts", a.Error, a.Number)
	default:
		a.State = DeliveryPending
		delay := s.jittered(s.cfg.schedule[a.Number])
		if retryAfter > s.cfg.maxRetryAfter {
			retryAfter = s.cfg.maxRetryAfter
		}
		delay = max(delay, retryAfter)
		a.NextAttempt = a.Start.Add(a.Duration).Add(delay)
	}
	failingSince, err := s.store.Record(ctx, d, a)
	if err != nil {
		s.storeError(ctx, fmt.Errorf("webhook: record attempt %d of delivery %s: %w", a.Number, d.ID, err))
		if errors.Is(err, ErrLeaseLost) || failingSince.IsZero() {
			return
		}
	}
	if s.cfg.onAttempt != nil {
		s.cfg.onAttempt(d, a)
	}
	if a.State == DeliveryPending && err == nil {
		// A retry due before the next poll would otherwise wait for it.
		if wait := a.NextAttempt.Sub(s.cfg.now()); wait < s.cfg.poll {
			time.AfterFunc(max(wait, 0), s.Wake)
		}
	}
	if disable == "" && a.State != DeliverySucceeded && s.cfg.disableAfter > 0 && !failingSince.IsZero() &&
		s.cfg.now().Sub(failingSince) >= s.cfg.disableAfter {
		disable = fmt.Sprintf("failing since %s (more than %v)", failingSince.UTC().Format(time.RFC3339), s.cfg.disableAfter)
	}
	if disable != "" {
		if err := s.store.DisableEndpoint(ctx, d.Endpoint.ID, disable); err != nil {
			s.storeError(ctx, fmt.Errorf("webhook: disable endpoint %s: %w", d.Endpoint.ID, err))
			return
		}
		if s.cfg.onDisable != nil {
			e := d.Endpoint
			e.Disabled, e.DisabledReason = true, disable
			s.cfg.onDisable(e, disable)
		}
	}
}

// storeError reports a store error the Sender survives: to WithOnError's
// function when set, otherwise to the logger.
func (s *Sender) storeError(ctx context.Context, err error) {
	if s.cfg.onError != nil {
		s.cfg.onError(err)
		return
	}
	l := s.cfg.logger
	if l == nil {
		l = slog.Default()
	}
	level := slog.LevelError
	if errors.Is(err, ErrLeaseLost) {
		level = slog.LevelWarn
	}
	l.Log(ctx, level, "webhook: sender store error", "err", err)
}

func (s *Sender) jittered(d time.Duration) time.Duration {
	if s.cfg.jitter == 0 || d == 0 {
		return d
	}
	f := 1 + s.cfg.jitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

// attempt sends one signed request and reports what happened, plus the
// Retry-After delay the endpoint asked for (zero when none or not honoured).
func (s *Sender) attempt(ctx context.Context, d Delivery) (Attempt, time.Duration) {
	a := Attempt{DeliveryID: d.ID, Start: s.cfg.now()}
	began := time.Now()
	sg, err := s.signer(d.Endpoint.Secrets)
	if err != nil {
		a.Error = "endpoint secrets: " + err.Error()
		return a, 0
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Endpoint.URL, bytes.NewReader(d.Message.Payload))
	if err != nil {
		a.Error = "endpoint URL: " + err.Error()
		return a, 0
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		a.Error = fmt.Sprintf("endpoint URL: scheme %q is not http or https", req.URL.Scheme)
		return a, 0
	}
	req.Header.Set("Content-Type", s.cfg.contentType)
	req.Header.Set("User-Agent", s.cfg.userAgent)
	if err := sg.SignHeader(req.Header, d.Message.ID, a.Start, d.Message.Payload); err != nil {
		a.Error = "message ID: " + err.Error()
		return a, 0
	}
	resp, err := s.client.Do(req)
	if err != nil {
		a.Duration = time.Since(began)
		a.Error = err.Error()
		return a, 0
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, s.cfg.maxBody))
	resp.Body.Close()
	a.Duration = time.Since(began)
	a.StatusCode, a.ResponseBody = resp.StatusCode, body
	var retryAfter time.Duration
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return a, 0
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		a.Error = fmt.Sprintf("%s (redirects are not followed; Location: %s)", resp.Status, resp.Header.Get("Location"))
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusBadGateway,
		resp.StatusCode == http.StatusServiceUnavailable, resp.StatusCode == http.StatusGatewayTimeout:
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), a.Start)
		a.Error = resp.Status
	default:
		a.Error = resp.Status
	}
	if rerr != nil {
		a.Error += "; reading body: " + rerr.Error()
	}
	return a, retryAfter
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
// It returns zero for an absent, malformed or past value.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(1<<62/time.Second) {
			secs = int64(1 << 62 / time.Second)
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
