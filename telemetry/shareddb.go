package telemetry

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/shareddb"
)

// WithDBQueryText records the SQL of each shareddb read as db.query.text
// on its span. Off by default: SQL written with literals instead of
// parameters carries data (an e-mail, a card number) into the traces. The
// arguments are never recorded.
func WithDBQueryText(on bool) Option {
	return option(func(t *Telemetry) error {
		t.dbQueryText = on
		return nil
	})
}

// Attributes of the shareddb spans and metrics that the semantic
// conventions have no name for.
const (
	sdbNodeKey      = attribute.Key("patterns.shareddb.node")              // "primary", "replica1", ...
	sdbRoleKey      = attribute.Key("patterns.shareddb.role")              // "primary" or "replica"
	sdbRouteKey     = attribute.Key("patterns.shareddb.route")             // see routeName
	sdbOpKey        = attribute.Key("patterns.shareddb.operation")         // shareddb.Op: "query", "query_row", ...
	sdbLagKey       = attribute.Key("patterns.shareddb.replica.lag")       // seconds, at the last check
	sdbLagKnownKey  = attribute.Key("patterns.shareddb.replica.lag_known") // false: the receiver does not stream
	sdbLagBytesKey  = attribute.Key("patterns.shareddb.replica.lag_bytes") // WAL bytes behind the primary
	sdbMaxLagKey    = attribute.Key("patterns.shareddb.max_lag")           // seconds; -1: any lag
	sdbTokenKey     = attribute.Key("patterns.shareddb.token")             // the read's token (an LSN)
	sdbTokenWaitKey = attribute.Key("patterns.shareddb.token.wait")        // seconds waited for a replica to reach it
	sdbAttemptsKey  = attribute.Key("patterns.shareddb.attempts")          // nodes the read ran on
	sdbAttemptKey   = attribute.Key("patterns.shareddb.attempt")           // retry event: the failed attempt
	sdbChangeKey    = attribute.Key("patterns.shareddb.change")            // see changeName
)

// sharedDBInstruments are the metrics of the shareddb tracer.
type sharedDBInstruments struct {
	duration metric.Float64Histogram // db.client.operation.duration
	routed   metric.Int64Counter     // patterns.shareddb.routed
	retries  metric.Int64Counter     // patterns.shareddb.retries
	changes  metric.Int64Counter     // patterns.shareddb.node.changes

	routeOpts [shareddb.RouteTokenFallback + 1]metric.MeasurementOption

	mu       sync.RWMutex
	durOpts  map[sdbDurationKey]metric.MeasurementOption
	nodeOpts map[sdbNodeID]metric.MeasurementOption

	// The last check of every node seen, for the observable gauges.
	checkMu sync.Mutex
	checks  map[sdbNodeID]*sdbCheck
}

// sdbDurationKey is the attribute set of a db.client.operation.duration record.
type sdbDurationKey struct {
	node, addr string
	role       shareddb.NodeRole
	route      shareddb.Route
	errType    string
}

// sdbNodeID names a node across readers: readers name their nodes in the
// order given, so the same name on another address is another node.
type sdbNodeID struct{ node, addr string }

// sdbCheck is what the last check of a node saw.
type sdbCheck struct {
	opt       metric.MeasurementOption // node, role, server.address, server.port
	role      shareddb.NodeRole
	ok        bool // the check succeeded
	healthy   bool
	lag       time.Duration
	lagKnown  bool
	lagBytes  int64
	seen      time.Time     // when the tracer was told
	interval  time.Duration // between the last two checks
	lastCheck time.Time
}

// sdbStaleAfter is the least time without a check after which a node's
// gauges stop being reported (its reader was closed, or is stuck); a node
// checked at longer intervals keeps its gauges for 4 intervals.
const sdbStaleAfter = 30 * time.Second

func (in *sharedDBInstruments) init(m metric.Meter) error {
	var err, e error
	in.duration, e = m.Float64Histogram("db.client.operation.duration",
		metric.WithDescription("Duration of database client operations: shareddb reads, from routing to their end."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10))
	err = errors.Join(err, e)
	in.routed, e = m.Int64Counter("patterns.shareddb.routed",
		metric.WithDescription("shareddb reads by routing decision (route none: refused or failed before a node was chosen)."),
		metric.WithUnit("{read}"))
	err = errors.Join(err, e)
	in.retries, e = m.Int64Counter("patterns.shareddb.retries",
		metric.WithDescription("shareddb reads retried on another node, by the node that failed."),
		metric.WithUnit("{retry}"))
	err = errors.Join(err, e)
	in.changes, e = m.Int64Counter("patterns.shareddb.node.changes",
		metric.WithDescription("Changes of a shareddb node's state seen by its checks."),
		metric.WithUnit("{change}"))
	err = errors.Join(err, e)
	lag, e := m.Float64ObservableGauge("patterns.shareddb.replica.lag",
		metric.WithDescription("Replay lag of each replica at its last check, while known."),
		metric.WithUnit("s"))
	err = errors.Join(err, e)
	lagBytes, e := m.Int64ObservableGauge("patterns.shareddb.replica.lag_bytes",
		metric.WithDescription("WAL bytes each replica's replay position is behind the primary, at its last successful check."),
		metric.WithUnit("By"))
	err = errors.Join(err, e)
	healthy, e := m.Int64ObservableGauge("patterns.shareddb.node.healthy",
		metric.WithDescription("1 when the node's last check succeeded and it has its role, else 0."),
		metric.WithUnit("1"))
	err = errors.Join(err, e)
	if err != nil {
		return err
	}
	for r := range in.routeOpts {
		in.routeOpts[r] = metric.WithAttributeSet(attribute.NewSet(sdbRouteKey.String(routeName(shareddb.Route(r)))))
	}
	in.durOpts = map[sdbDurationKey]metric.MeasurementOption{}
	in.nodeOpts = map[sdbNodeID]metric.MeasurementOption{}
	in.checks = map[sdbNodeID]*sdbCheck{}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := time.Now()
		in.checkMu.Lock()
		defer in.checkMu.Unlock()
		for id, c := range in.checks {
			if now.Sub(c.seen) > max(sdbStaleAfter, 4*c.interval) {
				delete(in.checks, id)
				continue
			}
			h := int64(0)
			if c.healthy {
				h = 1
			}
			o.ObserveInt64(healthy, h, c.opt)
			if c.role != shareddb.RoleReplica || !c.ok {
				continue
			}
			o.ObserveInt64(lagBytes, c.lagBytes, c.opt)
			if c.lagKnown {
				o.ObserveFloat64(lag, c.lag.Seconds(), c.opt)
			}
		}
		return nil
	}, lag, lagBytes, healthy)
	return err
}

// durationOpt returns the attribute set of a read's duration, made once per
// combination.
func (in *sharedDBInstruments) durationOpt(k sdbDurationKey) metric.MeasurementOption {
	in.mu.RLock()
	o, ok := in.durOpts[k]
	in.mu.RUnlock()
	if ok {
		return o
	}
	attrs := []attribute.KeyValue{semconv.DBSystemNamePostgreSQL, sdbRouteKey.String(routeName(k.route))}
	if k.node != "" {
		attrs = append(attrs, sdbNodeKey.String(k.node), sdbRoleKey.String(k.role.String()))
		attrs = appendServer(attrs, k.addr)
	}
	if k.errType != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(k.errType))
	}
	o = metric.WithAttributeSet(attribute.NewSet(attrs...))
	in.mu.Lock()
	in.durOpts[k] = o
	in.mu.Unlock()
	return o
}

// nodeOpt returns the attribute set naming a node (node, server address and
// port; role when known).
func (in *sharedDBInstruments) nodeOpt(node, addr string) metric.MeasurementOption {
	id := sdbNodeID{node, addr}
	in.mu.RLock()
	o, ok := in.nodeOpts[id]
	in.mu.RUnlock()
	if ok {
		return o
	}
	o = metric.WithAttributeSet(attribute.NewSet(appendServer([]attribute.KeyValue{sdbNodeKey.String(node)}, addr)...))
	in.mu.Lock()
	in.nodeOpts[id] = o
	in.mu.Unlock()
	return o
}

// sharedDBTracer implements the shareddb tracer interfaces.
type sharedDBTracer struct {
	t  *Telemetry
	in *sharedDBInstruments
}

var (
	_ shareddb.QueryTracer      = (*sharedDBTracer)(nil)
	_ shareddb.QueryRetryTracer = (*sharedDBTracer)(nil)
	_ shareddb.CheckTracer      = (*sharedDBTracer)(nil)
	_ shareddb.NodeChangeTracer = (*sharedDBTracer)(nil)
)

// SharedDB returns the tracer for shareddb.WithTracer. It implements
// shareddb.QueryTracer, QueryRetryTracer, CheckTracer and NodeChangeTracer.
//
// Each routed read is a span of kind Client named "postgresql" (the
// database system: a read has no operation name or table to name it by
// without parsing its SQL), with db.system.name, server.address and
// server.port of the node that served it, and the routing decision:
// patterns.shareddb.node, .role, .route ("replica", "primary", "fallback",
// "token_fallback", "none" when no node was chosen), .operation (the
// shareddb.Op), .replica.lag (seconds), .replica.lag_known and
// .replica.lag_bytes as the last check saw the replica, .max_lag (seconds,
// -1 for any), .token and .token.wait (seconds spent waiting for a
// replica to reach the token, before the span starts), and .attempts at
// the end. db.query.text only with WithDBQueryText(true). The span of a
// Query ends when its rows are closed. A read that fails has status Error,
// its error recorded, error.type (the SQLSTATE for a server error, which is
// also db.response.status_code); pgx.ErrNoRows is not a failure. A retry on
// another node is an event "retry" on the read's span.
//
// Metrics: db.client.operation.duration (s; db.system.name, node, role,
// route, server.address, server.port, error.type), patterns.shareddb.routed
// (reads by route), patterns.shareddb.retries (by the node that failed),
// patterns.shareddb.node.changes (node, change: "down", "up", "wrong_role",
// "receiver_stopped", "receiver_streaming", "stale", "fresh"), and three
// observable gauges from each node's last check: patterns.shareddb.node.healthy
// (1 or 0), patterns.shareddb.replica.lag (s, only while the lag is known:
// a replica whose WAL receiver stopped reports none rather than a stale
// value) and patterns.shareddb.replica.lag_bytes. A node not checked for
// 30 s (or 4 check intervals, if longer) stops being reported, so the
// gauges of a closed reader disappear. Node changes are not logged here:
// the reader logs them.
//
// One value serves any number of readers.
func (t *Telemetry) SharedDB() any {
	return &sharedDBTracer{t: t, in: &t.instr.sharedDB}
}

// sdbSpanOpts are the start options of a read's span, made once.
var sdbSpanOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

// sdbSpanKey holds a read's span in the read's context, so that its end
// and retries find it whatever other tracers put in the context after it.
type sdbSpanKey struct{}

// TraceQueryStart starts the read's span and counts the routing decision.
func (s *sharedDBTracer) TraceQueryStart(ctx context.Context, d shareddb.TraceQueryStartData) context.Context {
	if c := s.in.routed; c.Enabled(ctx) {
		c.Add(ctx, 1, s.in.routeOpt(d.Route))
	}
	sctx, span := s.t.tracer.Start(ctx, "postgresql", sdbSpanOpts...)
	if !span.IsRecording() {
		span.End()
		return ctx
	}
	maxLag := d.MaxLag.Seconds()
	if d.MaxLag < 0 {
		maxLag = -1 // any lag
	}
	attrs := make([]attribute.KeyValue, 0, 16)
	attrs = append(attrs,
		semconv.DBSystemNamePostgreSQL,
		sdbOpKey.String(string(d.Op)),
		sdbRouteKey.String(routeName(d.Route)),
		sdbMaxLagKey.Float64(maxLag),
	)
	if d.Node != "" {
		attrs = append(attrs, sdbNodeKey.String(d.Node), sdbRoleKey.String(d.Role.String()))
		attrs = appendServer(attrs, d.Addr)
		if d.Role == shareddb.RoleReplica {
			attrs = append(attrs, sdbLagKnownKey.Bool(d.LagKnown), sdbLagBytesKey.Int64(d.LagBytes))
			if d.LagKnown {
				attrs = append(attrs, sdbLagKey.Float64(d.Lag.Seconds()))
			}
		}
	}
	if !d.Token.IsZero() {
		attrs = append(attrs, sdbTokenKey.String(d.Token.String()), sdbTokenWaitKey.Float64(d.Waited.Seconds()))
	}
	if s.t.dbQueryText && d.SQL != "" {
		attrs = append(attrs, semconv.DBQueryText(d.SQL))
	}
	span.SetAttributes(attrs...)
	return context.WithValue(sctx, sdbSpanKey{}, span)
}

// TraceQueryEnd records the read's duration and ends its span.
func (s *sharedDBTracer) TraceQueryEnd(ctx context.Context, d shareddb.TraceQueryEndData) {
	err := d.Err
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil // an answer, not a failure
	}
	var errType, sqlState string
	if err != nil {
		errType, sqlState = dbErrorType(err)
	}
	if h := s.in.duration; h.Enabled(ctx) {
		h.Record(ctx, d.Duration.Seconds(), s.in.durationOpt(sdbDurationKey{node: d.Node, addr: d.Addr, role: d.Role, route: d.Route, errType: errType}))
	}
	span, ok := ctx.Value(sdbSpanKey{}).(trace.Span)
	if !ok {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs, sdbAttemptsKey.Int(d.Attempts))
	if d.Attempts > 1 && d.Node != "" { // retried: the node that served the read, or failed it last
		attrs = append(attrs, sdbNodeKey.String(d.Node), sdbRoleKey.String(d.Role.String()), sdbRouteKey.String(routeName(d.Route)))
		attrs = appendServer(attrs, d.Addr)
	}
	if err != nil {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
		if sqlState != "" {
			attrs = append(attrs, semconv.DBResponseStatusCode(sqlState))
		}
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.SetAttributes(attrs...)
	span.End()
}

// TraceQueryRetry adds a "retry" event to the read's span and counts it.
func (s *sharedDBTracer) TraceQueryRetry(ctx context.Context, d shareddb.TraceQueryRetryData) {
	if c := s.in.retries; c.Enabled(ctx) {
		c.Add(ctx, 1, s.in.nodeOpt(d.Node, d.Addr))
	}
	span, ok := ctx.Value(sdbSpanKey{}).(trace.Span)
	if !ok || !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{sdbNodeKey.String(d.Node), sdbAttemptKey.Int(d.Attempt)}
	attrs = appendServer(attrs, d.Addr)
	if d.Err != nil {
		et, _ := dbErrorType(d.Err)
		attrs = append(attrs, semconv.ErrorTypeKey.String(et), attribute.String("error.message", d.Err.Error()))
	}
	span.AddEvent("retry", trace.WithAttributes(attrs...))
}

// TraceCheck keeps the check's findings for the observable gauges.
func (s *sharedDBTracer) TraceCheck(_ context.Context, d shareddb.TraceCheckData) {
	in := s.in
	id := sdbNodeID{d.Name, d.Addr}
	now := time.Now()
	in.checkMu.Lock()
	defer in.checkMu.Unlock()
	c := in.checks[id]
	if c == nil {
		attrs := []attribute.KeyValue{sdbNodeKey.String(d.Name), sdbRoleKey.String(d.Role.String())}
		c = &sdbCheck{opt: metric.WithAttributeSet(attribute.NewSet(appendServer(attrs, d.Addr)...))}
		in.checks[id] = c
	}
	if !c.lastCheck.IsZero() && d.CheckedAt.After(c.lastCheck) {
		c.interval = d.CheckedAt.Sub(c.lastCheck)
	}
	c.lastCheck, c.seen = d.CheckedAt, now
	c.role, c.ok, c.healthy = d.Role, d.LastError == nil, d.Healthy
	c.lag, c.lagKnown, c.lagBytes = d.Lag, d.LagKnown, d.LagBytes
}

// TraceNodeChange counts the change.
func (s *sharedDBTracer) TraceNodeChange(ctx context.Context, d shareddb.TraceNodeChangeData) {
	c := s.in.changes
	if !c.Enabled(ctx) {
		return
	}
	attrs := []attribute.KeyValue{sdbNodeKey.String(d.Status.Name), sdbChangeKey.String(changeName(d.Change))}
	c.Add(ctx, 1, metric.WithAttributes(appendServer(attrs, d.Status.Addr)...))
}

func (in *sharedDBInstruments) routeOpt(r shareddb.Route) metric.MeasurementOption {
	if r >= 0 && int(r) < len(in.routeOpts) {
		return in.routeOpts[r]
	}
	return metric.WithAttributes(sdbRouteKey.String(routeName(r)))
}

// routeName is the attribute value of a route: its String in snake case.
func routeName(r shareddb.Route) string {
	switch r {
	case shareddb.RouteNone:
		return "none"
	case shareddb.RouteReplica:
		return "replica"
	case shareddb.RoutePrimary:
		return "primary"
	case shareddb.RouteFallback:
		return "fallback"
	case shareddb.RouteTokenFallback:
		return "token_fallback"
	}
	return strings.ReplaceAll(r.String(), " ", "_")
}

// changeName is the attribute value of a node change: its String in snake case.
func changeName(c shareddb.NodeChange) string {
	return strings.ReplaceAll(c.String(), " ", "_")
}

// appendServer appends server.address and server.port of a host:port.
func appendServer(attrs []attribute.KeyValue, addr string) []attribute.KeyValue {
	if addr == "" {
		return attrs
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return append(attrs, semconv.ServerAddress(addr))
	}
	attrs = append(attrs, semconv.ServerAddress(host))
	if p, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, semconv.ServerPort(p))
	}
	return attrs
}

// dbErrorType returns error.type for a failed read (low cardinality) and
// the SQLSTATE when the server answered with an error.
func dbErrorType(err error) (errType, sqlState string) {
	if et := commonErrorType(err); et != "" {
		return et, ""
	}
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		return pe.Code, pe.Code
	case errors.Is(err, shareddb.ErrNoFreshReplica):
		return "no_fresh_replica", ""
	case errors.Is(err, shareddb.ErrInvalidToken):
		return "invalid_token", ""
	case errors.Is(err, shareddb.ErrClosed):
		return "closed", ""
	}
	var ne *shareddb.NodeError
	if errors.As(err, &ne) && ne.Err != nil {
		err = ne.Err
	}
	return semconv.ErrorType(err).Value.AsString(), ""
}
