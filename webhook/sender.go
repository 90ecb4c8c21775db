package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-integration/patterns/internal/retryafter"
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
	DefaultDrainTimeout     = 30 * time.Second
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
// The SSRF guard is on: the Sender refuses to connect to addresses that are
// not public (see IsPublicAddr), checked on the resolved address at dial
// time. WithAllowedNetworks lets internal endpoints and tests through.
// WithTLSConfig and WithTransport configure TLS and wrap the transport (for
// instrumentation) behind the guard.
//
// Attempts are traced with WithTracer (AttemptTracer, DisableTracer,
// StoreErrorTracer); store failures are also logged (WithLogger). Stats
// counts them.
//
// The Sender caches the parsed secrets of the endpoints it signs for, up to
// 1,024 distinct secret lists; beyond that the least recently used are
// dropped and parsed again when next needed.
type Sender struct {
	store   Store
	cfg     senderConfig
	tr      senderTracers
	client  *http.Client
	base    *http.Transport // the guarded transport, also when WithTransport wraps it
	wake    chan struct{}
	signers *signerCache // secrets joined by " " -> *Signer

	mu        sync.Mutex
	closed    bool
	work      sync.WaitGroup // Run and RunOnce calls in progress
	stop      context.Context
	stopFn    context.CancelFunc // Close: stop claiming
	abort     context.Context
	abortFn   context.CancelFunc // drain timeout over: cancel attempts
	closeOnce sync.Once

	stats senderCounters
}

type senderConfig struct {
	common
	schedule      []time.Duration
	jitter        float64
	timeout       time.Duration
	lease         time.Duration
	maxBody       int64
	maxRetryAfter time.Duration
	disableAfter  time.Duration
	concurrency   int
	poll          time.Duration
	drainTimeout  time.Duration
	guard         bool
	allow         []netip.Prefix
	lookup        func(ctx context.Context, host string) ([]netip.Addr, error)
	userAgent     string
	contentType   string
	tlsConfig     *tls.Config
	transport     func(base *http.Transport) http.RoundTripper
	ce            ceConfig
}

// WithSchedule sets the delay before each attempt; its length is the number
// of attempts (at least one; no delay negative). Default DefaultSchedule.
// Tests use milliseconds.
func WithSchedule(delays ...time.Duration) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if len(delays) == 0 {
			return optionErrorf("webhook: WithSchedule(): at least one attempt")
		}
		for _, d := range delays {
			if d < 0 {
				return optionErrorf("webhook: WithSchedule: negative delay %v", d)
			}
		}
		c.schedule = append([]time.Duration(nil), delays...)
		return nil
	})
}

// WithJitter sets the random spread of each retry delay, as a fraction in
// [0, 1): 0.2 (the default) gives delays between 80% and 120% of the
// schedule's.
func WithJitter(f float64) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if !(f >= 0 && f < 1) {
			return optionErrorf("webhook: WithJitter(%v): must be in [0, 1)", f)
		}
		c.jitter = f
		return nil
	})
}

// WithAttemptTimeout bounds one attempt: connecting, sending and reading the
// answer. Positive; default DefaultAttemptTimeout (15 s).
func WithAttemptTimeout(d time.Duration) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if d <= 0 {
			return optionErrorf("webhook: WithAttemptTimeout(%v): must be positive", d)
		}
		c.timeout = d
		return nil
	})
}

// WithLease sets how long a claimed delivery stays reserved for this process.
// If the process dies between an attempt and its record, another worker
// retries the delivery once the lease ends. It must exceed the attempt
// timeout. Default attempt timeout + 30 s.
func WithLease(d time.Duration) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if d <= 0 {
			return optionErrorf("webhook: WithLease(%v): must be positive", d)
		}
		c.lease = d
		return nil
	})
}

// WithMaxResponseBytes sets how much of a response body is read and
// recorded; 0 reads none. Default DefaultMaxResponseBytes (4 KiB).
func WithMaxResponseBytes(n int64) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if n < 0 {
			return optionErrorf("webhook: WithMaxResponseBytes(%d): negative", n)
		}
		c.maxBody = n
		return nil
	})
}

// WithMaxRetryAfter caps how long a Retry-After header can delay a retry; 0
// ignores Retry-After. Default DefaultMaxRetryAfter (1 h).
func WithMaxRetryAfter(d time.Duration) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if d < 0 {
			return optionErrorf("webhook: WithMaxRetryAfter(%v): negative", d)
		}
		c.maxRetryAfter = d
		return nil
	})
}

// WithDisableAfter disables an endpoint whose attempts have all failed for
// this long. Default DefaultDisableAfter (5 days). Zero never disables.
func WithDisableAfter(d time.Duration) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if d < 0 {
			return optionErrorf("webhook: WithDisableAfter(%v): negative", d)
		}
		c.disableAfter = d
		return nil
	})
}

// WithConcurrency sets how many attempts Run makes at once. Positive;
// default DefaultConcurrency.
func WithConcurrency(n int) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if n <= 0 {
			return optionErrorf("webhook: WithConcurrency(%d): must be positive", n)
		}
		c.concurrency = n
		return nil
	})
}

// WithPollInterval sets how often Run looks for due deliveries when idle.
// Send in the same process wakes it at once. Positive; default
// DefaultPollInterval (1 s).
func WithPollInterval(d time.Duration) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if d <= 0 {
			return optionErrorf("webhook: WithPollInterval(%v): must be positive", d)
		}
		c.poll = d
		return nil
	})
}

// WithDrainTimeout bounds how long Close lets the attempts in flight finish
// and be recorded before it cancels them. Positive; default
// DefaultDrainTimeout (30 s).
func WithDrainTimeout(d time.Duration) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if d <= 0 {
			return optionErrorf("webhook: WithDrainTimeout(%v): must be positive", d)
		}
		c.drainTimeout = d
		return nil
	})
}

// WithAllowedNetworks lets the sender connect to these networks although the
// SSRF guard would refuse them: internal endpoints, or 127.0.0.0/8 in tests.
// Several calls add up.
func WithAllowedNetworks(prefixes ...netip.Prefix) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		for _, p := range prefixes {
			if !p.IsValid() {
				return optionErrorf("webhook: WithAllowedNetworks: invalid prefix %v", p)
			}
			c.allow = append(c.allow, p.Masked())
		}
		return nil
	})
}

// WithoutSSRFGuard turns the SSRF guard off entirely. Only for senders whose
// endpoints are all trusted.
func WithoutSSRFGuard() SenderOption {
	return senderOpt(func(c *senderConfig) error { c.guard = false; return nil })
}

// WithLookup replaces the DNS resolver (default: the system's). The SSRF
// guard checks whatever addresses it returns. For tests and for resolvers
// of your own; nil is refused.
func WithLookup(f func(ctx context.Context, host string) ([]netip.Addr, error)) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if f == nil {
			return optionErrorf("webhook: WithLookup(nil)")
		}
		c.lookup = f
		return nil
	})
}

// WithContentType sets the Content-Type of requests. Default "application/json".
func WithContentType(ct string) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if ct == "" {
			return optionErrorf("webhook: WithContentType(\"\")")
		}
		c.contentType = ct
		return nil
	})
}

// NewSender returns a Sender over store. An option it cannot accept gives an
// error wrapping ErrInvalidOption that names the option. NewSender does no
// I/O; Run delivers.
func NewSender(store Store, opts ...SenderOption) (*Sender, error) {
	if store == nil {
		return nil, errors.New("webhook: NewSender: nil store")
	}
	c := senderConfig{common: defaultCommon(), schedule: DefaultSchedule, jitter: DefaultJitter, timeout: DefaultAttemptTimeout,
		maxBody: DefaultMaxResponseBytes, maxRetryAfter: DefaultMaxRetryAfter, disableAfter: DefaultDisableAfter,
		concurrency: DefaultConcurrency, poll: DefaultPollInterval, drainTimeout: DefaultDrainTimeout, guard: true,
		userAgent: "patterns-webhook/1", contentType: "application/json"}
	if err := applyOptions(opts, func(o SenderOption) error { return o.applySender(&c) }); err != nil {
		return nil, err
	}
	if c.lease == 0 {
		c.lease = c.timeout + 30*time.Second
	}
	if c.lease <= c.timeout {
		return nil, optionErrorf("webhook: WithLease(%v) must exceed WithAttemptTimeout(%v)", c.lease, c.timeout)
	}
	if c.ce.subject != nil && c.ce.mode == 0 {
		return nil, optionErrorf("webhook: WithCloudEventsSubject needs WithCloudEvents")
	}
	if c.ce.mode != 0 && strings.HasPrefix(mediaType(c.contentType), "application/cloudevents") {
		// The content type is the data's; the Sender writes the event format itself.
		return nil, optionErrorf("webhook: WithContentType(%q) and WithCloudEvents conflict: the content type is the payload's", c.contentType)
	}
	tr, err := newSenderTracers(c.tracers)
	if err != nil {
		return nil, err
	}
	transport, base, err := newTransport(&c, newGuard(c.guard, c.allow, c.lookup))
	if err != nil {
		return nil, err
	}
	client := &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	s := &Sender{store: store, cfg: c, tr: tr, client: client, base: base, wake: make(chan struct{}, 1),
		signers: newSignerCache(signerCacheSize)}
	s.stop, s.stopFn = context.WithCancel(context.Background())
	s.abort, s.abortFn = context.WithCancel(context.Background())
	return s, nil
}

// SenderStats are a Sender's counters since NewSender (see Sender.Stats).
type SenderStats struct {
	// Attempts counts the attempts started; every finished one is counted
	// once more, in Succeeded, Failed or Abandoned.
	Attempts  uint64
	Succeeded uint64 // answered 2xx
	Failed    uint64 // transport error, timeout, non-2xx answer, or unsignable
	// Abandoned counts attempts Close cut off after the drain timeout: not
	// recorded, retried once their leases end.
	Abandoned uint64
	// RetriesScheduled counts failed attempts after which the delivery
	// stays pending; GaveUp counts deliveries failed for good.
	RetriesScheduled  uint64
	GaveUp            uint64
	EndpointsDisabled uint64
	StoreErrors       uint64 // store failures survived (also logged)
	InFlight          int    // attempts running now
}

type senderCounters struct {
	attempts, succeeded, failed, abandoned, retries, gaveUp, disabled, storeErrors atomic.Uint64
	inFlight                                                                       atomic.Int64
}

// Stats returns a snapshot of the Sender's counters. It does no I/O; the
// store's backlog is the store's business (Store.Deliveries).
func (s *Sender) Stats() SenderStats {
	return SenderStats{
		Attempts: s.stats.attempts.Load(), Succeeded: s.stats.succeeded.Load(), Failed: s.stats.failed.Load(),
		Abandoned: s.stats.abandoned.Load(), RetriesScheduled: s.stats.retries.Load(), GaveUp: s.stats.gaveUp.Load(),
		EndpointsDisabled: s.stats.disabled.Load(), StoreErrors: s.stats.storeErrors.Load(),
		InFlight: int(s.stats.inFlight.Load()),
	}
}

// enter registers a Run or RunOnce call, or returns ErrClosed.
func (s *Sender) enter() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.work.Add(1)
	return nil
}

func (s *Sender) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// attemptContext returns parent, cancelled also when Close's drain timeout
// is over.
func (s *Sender) attemptContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	stop := context.AfterFunc(s.abort, cancel)
	return ctx, func() { stop(); cancel() }
}

// Send stores m for every enabled endpoint subscribed to m.Type and wakes Run.
// It fills an empty ID (NewID) and a zero Time, and returns the message as
// stored and the number of deliveries created. Sending a message ID again
// creates no second delivery to an endpoint. An ID containing '.' is refused
// with an error wrapping ErrInvalidMessageID. With WithCloudEvents, a
// message with an empty Type is refused with an error wrapping
// ErrInvalidCloudEvent. After Close it returns ErrClosed.
func (s *Sender) Send(ctx context.Context, m Message) (Message, int, error) {
	if s.isClosed() {
		return m, 0, ErrClosed
	}
	now := s.cfg.now()
	if m.ID == "" {
		m.ID = NewID()
	}
	if err := ValidateMessageID(m.ID); err != nil {
		return m, 0, fmt.Errorf("webhook: Send: %w", err)
	}
	if s.cfg.ce.mode != 0 {
		if err := checkCloudEventMessage(m); err != nil {
			return m, 0, fmt.Errorf("webhook: Send: %w", err)
		}
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
	if s.isClosed() {
		return 0, ErrClosed
	}
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
	if s.isClosed() {
		return 0, ErrClosed
	}
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

// Close stops the Sender: Run stops claiming deliveries, the attempts in
// flight may finish and be recorded for up to the drain timeout
// (WithDrainTimeout), then the rest are cancelled (not recorded: their
// deliveries are retried when their leases end). Close waits for Run and
// RunOnce to return and releases idle connections. It is idempotent and
// always returns nil; afterwards Send, Resend, ResendFailed, Run and RunOnce
// return ErrClosed.
func (s *Sender) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.stopFn()
		done := make(chan struct{})
		go func() { s.work.Wait(); close(done) }()
		timer := time.NewTimer(s.cfg.drainTimeout)
		select {
		case <-done:
		case <-timer.C:
			s.cfg.log().Warn("webhook: sender closing: drain timeout over, cancelling the attempts in flight; their deliveries are retried when their leases end",
				"in_flight", s.stats.inFlight.Load(), "drain_timeout", s.cfg.drainTimeout)
			s.abortFn()
			<-done
		}
		timer.Stop()
		s.abortFn()
		s.client.CloseIdleConnections() // the WithTransport wrapper's, if it has any
		s.base.CloseIdleConnections()
	})
	return nil
}

// Run delivers due deliveries until ctx is done or Close is called. When ctx
// ends it waits for the attempts in flight to finish and be recorded (each
// is bounded by the attempt timeout) and returns nil; after Close it returns
// ErrClosed (see Close for the attempts in flight). Several Run loops, in one
// process or many, can share a Store that supports it (pgstore.Store).
func (s *Sender) Run(ctx context.Context) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.work.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.stop, cancel)()
	// Attempts outlive ctx (they finish and are recorded) but keep its values.
	attemptParent := context.WithoutCancel(ctx)
	done := make(chan struct{}, s.cfg.concurrency)
	inflight := 0
	defer func() {
		for ; inflight > 0; inflight-- {
			<-done
		}
	}()
	result := func() error {
		if s.stop.Err() != nil {
			return ErrClosed
		}
		return nil
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if free := s.cfg.concurrency - inflight; free > 0 && ctx.Err() == nil {
			ds, err := s.store.Claim(ctx, s.cfg.now(), s.cfg.lease, free)
			if err != nil && ctx.Err() == nil {
				s.storeError(ctx, "claim", fmt.Errorf("webhook: claim: %w", err))
			}
			for _, d := range ds {
				inflight++
				go func() {
					defer func() { done <- struct{}{} }()
					actx, cancel := s.attemptContext(attemptParent)
					defer cancel()
					s.deliver(actx, d)
				}()
			}
			if len(ds) == free {
				// Probably more due; look again as soon as a slot frees.
				select {
				case <-done:
					inflight--
					continue
				case <-ctx.Done():
					return result()
				}
			}
		}
		timer.Reset(s.cfg.poll)
		select {
		case <-ctx.Done():
			return result()
		case <-done:
			inflight--
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// RunOnce claims the deliveries due now (up to the concurrency limit), makes
// one attempt at each and records it, and returns how many it attempted. It
// is Run without the loop, for tests and cron-style senders. After Close it
// returns ErrClosed.
func (s *Sender) RunOnce(ctx context.Context) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.work.Done()
	ds, err := s.store.Claim(ctx, s.cfg.now(), s.cfg.lease, s.cfg.concurrency)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			actx, cancel := s.attemptContext(ctx)
			defer cancel()
			s.deliver(actx, d)
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

// deliver makes one attempt at d, records it and applies its consequences,
// tracing all of it.
func (s *Sender) deliver(ctx context.Context, d Delivery) {
	s.stats.attempts.Add(1)
	s.stats.inFlight.Add(1)
	defer s.stats.inFlight.Add(-1)
	header := make(http.Header)
	for _, t := range s.tr.attempt {
		ctx = t.TraceAttemptStart(ctx, TraceAttemptStartData{DeliveryID: d.ID, MessageID: d.Message.ID,
			EventType: d.Message.Type, EndpointID: d.Endpoint.ID, URL: d.Endpoint.URL, Attempt: d.Attempts + 1, Header: header})
	}
	a, retryAfter, attemptErr := s.attempt(ctx, d, header)
	a.Number = d.Attempts + 1
	end := func() {
		for _, t := range s.tr.attempt {
			t.TraceAttemptEnd(ctx, TraceAttemptEndData{StatusCode: a.StatusCode, Err: attemptErr, Duration: a.Duration,
				State: a.State, NextAttempt: a.NextAttempt, Attempt: a})
		}
	}
	if ctx.Err() != nil && s.abort.Err() != nil {
		// Close gave up waiting: leave the delivery to its lease.
		s.stats.abandoned.Add(1)
		a.State = DeliveryPending
		attemptErr = fmt.Errorf("%w: attempt cancelled after the drain timeout: %v", ErrClosed, attemptErr)
		end()
		return
	}
	disable := ""
	switch {
	case a.StatusCode == 0 && ValidateMessageID(d.Message.ID) != nil:
		// Stored before IDs were checked: it can never be signed safely.
		a.State = DeliveryFailed
	case a.StatusCode == 0 && errors.Is(attemptErr, ErrInvalidCloudEvent):
		// Enqueued without Send's check (pgstore.EnqueueTx): no retry helps.
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
		delay = max(delay, min(retryAfter, s.cfg.maxRetryAfter))
		a.NextAttempt = a.Start.Add(a.Duration).Add(delay)
	}
	switch {
	case a.State == DeliverySucceeded:
		s.stats.succeeded.Add(1)
	case a.State == DeliveryPending:
		s.stats.failed.Add(1)
		s.stats.retries.Add(1)
	default:
		s.stats.failed.Add(1)
		s.stats.gaveUp.Add(1)
	}
	defer end()
	failingSince, err := s.store.Record(ctx, d, a)
	if err != nil {
		s.storeError(ctx, "record", fmt.Errorf("webhook: record attempt %d of delivery %s: %w", a.Number, d.ID, err))
		if errors.Is(err, ErrLeaseLost) || failingSince.IsZero() {
			return
		}
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
			s.storeError(ctx, "disable", fmt.Errorf("webhook: disable endpoint %s: %w", d.Endpoint.ID, err))
			return
		}
		s.stats.disabled.Add(1)
		e := d.Endpoint
		e.Disabled, e.DisabledReason = true, disable
		for _, t := range s.tr.disable {
			t.TraceDisable(ctx, TraceDisableData{Endpoint: e, Reason: disable})
		}
	}
}

// storeError reports a store error the Sender survives: to the logger and
// the StoreErrorTracers.
func (s *Sender) storeError(ctx context.Context, op string, err error) {
	s.stats.storeErrors.Add(1)
	s.cfg.logStoreError(ctx, "webhook: sender store error", err)
	traceStoreError(ctx, s.tr.storeErr, op, err)
}

func (s *Sender) jittered(d time.Duration) time.Duration {
	if s.cfg.jitter == 0 || d == 0 {
		return d
	}
	f := 1 + s.cfg.jitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

// attempt sends one signed request and reports what happened, the
// Retry-After delay the endpoint asked for (zero when none or not honoured)
// and, when it failed, why.
func (s *Sender) attempt(ctx context.Context, d Delivery, header http.Header) (Attempt, time.Duration, error) {
	a := Attempt{DeliveryID: d.ID, Start: s.cfg.now()}
	began := time.Now()
	fail := func(prefix string, err error) (Attempt, time.Duration, error) {
		a.Error = prefix + err.Error()
		return a, 0, fmt.Errorf("webhook: %s%w", prefix, err)
	}
	sg, err := s.signer(d.Endpoint.Secrets)
	if err != nil {
		return fail("endpoint secrets: ", err)
	}
	body, contentType := d.Message.Payload, s.cfg.contentType
	if s.cfg.ce.mode != 0 {
		if err := checkCloudEventMessage(d.Message); err != nil {
			a.Error = err.Error()
			return a, 0, err
		}
		if s.cfg.ce.mode == CloudEventsStructured {
			body, contentType = s.cfg.ce.structuredBody(d.Message, contentType), ContentTypeCloudEventsJSON
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Endpoint.URL, bytes.NewReader(body))
	if err != nil {
		return fail("endpoint URL: ", err)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fail("endpoint URL: ", fmt.Errorf("scheme %q is not http or https", req.URL.Scheme))
	}
	req.Header = header
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", s.cfg.userAgent)
	if s.cfg.ce.mode == CloudEventsBinary {
		s.cfg.ce.setBinaryHeaders(req.Header, d.Message)
	}
	// The signature covers the exact body sent: in structured mode, the event.
	if err := sg.SignHeader(req.Header, d.Message.ID, a.Start, body); err != nil {
		return fail("message ID: ", err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		a.Duration = time.Since(began)
		a.Error = err.Error()
		return a, 0, err
	}
	var respBody []byte
	var rerr error
	if s.cfg.maxBody > 0 {
		respBody, rerr = io.ReadAll(io.LimitReader(resp.Body, s.cfg.maxBody))
	}
	resp.Body.Close()
	a.Duration = time.Since(began)
	a.StatusCode, a.ResponseBody = resp.StatusCode, respBody
	var retryAfter time.Duration
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return a, 0, nil
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		a.Error = fmt.Sprintf("%s (redirects are not followed; Location: %s)", resp.Status, resp.Header.Get("Location"))
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusBadGateway,
		resp.StatusCode == http.StatusServiceUnavailable, resp.StatusCode == http.StatusGatewayTimeout:
		retryAfter, _ = retryafter.Parse(resp.Header.Get("Retry-After"), a.Start)
		a.Error = resp.Status
	default:
		a.Error = resp.Status
	}
	if rerr != nil {
		a.Error += "; reading body: " + rerr.Error()
	}
	return a, retryAfter, fmt.Errorf("webhook: endpoint answered %s", a.Error)
}
