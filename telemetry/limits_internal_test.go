package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/rpc"
	"github.com/go-integration/patterns/rpc/amqprpc"
	"github.com/go-integration/patterns/shareddb"
	"github.com/go-integration/patterns/webhook"
)

// member is a list-member key=value of exactly n bytes.
func member(key string, n int) string { return key + "=" + strings.Repeat("v", n-len(key)-1) }

func TestOutboundTracestate(t *testing.T) {
	a, big, c, d, e := member("a", 125), member("big", 200), member("c", 128), member("d", 128), member("e", 128)
	cases := []struct{ name, in, want string }{
		{"within", "a=1,b=2", "a=1,b=2"},
		{"exactly 512", strings.Join([]string{a, c, d, e}, ","), strings.Join([]string{a, c, d, e}, ",")},
		// W3C: members over 128 bytes go first, then from the end.
		{"big first", strings.Join([]string{a, big, c, d, e}, ","), strings.Join([]string{a, c, d, e}, ",")},
		{"from the end", strings.Join([]string{a, c, d, e, member("f", 10)}, ","), strings.Join([]string{a, c, d, e}, ",")},
		{"big kept when the rest fits after the end goes", strings.Join([]string{big, member("g", 300), a}, ","), strings.Join([]string{big, a}, ",")},
		{"white space and empty members", " " + strings.Join([]string{a, c, d, e}, " ,\t") + ",,,x=1", strings.Join([]string{a, c, d, e}, ",")},
		{"one member too long", member("z", 600), ""},
	}
	for _, tc := range cases {
		got := outbound("tracestate", tc.in)
		if got != tc.want {
			t.Errorf("%s: outbound = %q (%d bytes), want %q (%d bytes)", tc.name, got, len(got), tc.want, len(tc.want))
		}
		if len(got) > maxTracestateLen {
			t.Errorf("%s: %d bytes", tc.name, len(got))
		}
	}
}

func TestOutboundBaggage(t *testing.T) {
	var ms []string
	for i := range 40 {
		ms = append(ms, member(fmt.Sprintf("k%02d", i), 255))
	}
	if got, want := outbound("baggage", strings.Join(ms, ",")), strings.Join(ms[:32], ","); got != want {
		t.Errorf("40 members of 255 bytes: got %d bytes, want the first 32 (%d bytes)", len(got), len(want))
	}
	exact := strings.Join(append(ms[:31:31], member("k31", 256)), ",")
	if len(exact) != maxBaggageLen {
		t.Fatalf("test baggage is %d bytes", len(exact))
	}
	if got := outbound("baggage", exact); got != exact {
		t.Errorf("an 8192-byte baggage was cut to %d bytes", len(got))
	}
	var small []string
	for i := range 80 {
		small = append(small, fmt.Sprintf("k%d=v;p", i))
	}
	if got, want := outbound("baggage", strings.Join(small, ",")), strings.Join(small[:64], ","); got != want {
		t.Errorf("80 members: got %q, want the first 64", got)
	}
	if got := outbound("baggage", strings.Join(small[:64], ",")); got != strings.Join(small[:64], ",") {
		t.Errorf("64 members cut: %q", got)
	}
	if got := outbound("baggage", member("k", 9000)); got != "" {
		t.Errorf("one 9000-byte member: %d bytes left", len(got))
	}
	if got := outbound("traceparent", strings.Repeat("x", 9000)); len(got) != 9000 {
		t.Error("outbound cut a header other than tracestate and baggage")
	}
}

func TestInboundLimits(t *testing.T) {
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	cases := []struct {
		key, v string
		kept   bool
	}{
		{"traceparent", tp, true},
		{"traceparent", tp + "-00", false},
		{"tracestate", member("a", 512), true},
		{"tracestate", member("a", 513), false},
		{"baggage", member("a", 8192), true},
		{"baggage", member("a", 8193), false},
		{"other", strings.Repeat("x", 100000), true},
	}
	for _, tc := range cases {
		if got := inbound(tc.key, tc.v); (got == tc.v) != tc.kept || (!tc.kept && got != "") {
			t.Errorf("inbound(%s, %d bytes) = %d bytes, kept want %v", tc.key, len(tc.v), len(got), tc.kept)
		}
	}
}

// The carriers the propagator writes into cap, and remove a header cut to
// nothing (a stale value must not stay).
func TestCarriersCap(t *testing.T) {
	long := member("z", 600)
	m := brokerCarrier{"tracestate": "old"}
	m.Set("tracestate", long)
	if _, ok := m["tracestate"]; ok {
		t.Errorf("brokerCarrier kept %q", m["tracestate"])
	}
	m.Set("tracestate", "a=1,"+long)
	if m["tracestate"] != "a=1" {
		t.Errorf("brokerCarrier tracestate %q", m["tracestate"])
	}
	h := http.Header{"Tracestate": {"old"}}
	headerCarrier(h).Set("tracestate", long)
	if _, ok := h["Tracestate"]; ok {
		t.Errorf("headerCarrier kept %q", h.Get("tracestate"))
	}
	headerCarrier(h).Set("tracestate", "a=1,"+long)
	if got := headerCarrier(h).Get("tracestate"); got != "a=1" {
		t.Errorf("headerCarrier tracestate %q", got)
	}
	if keys := headerCarrier(h).Keys(); len(keys) != 1 || keys[0] != "Tracestate" {
		t.Errorf("keys %v", keys)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

// Every component names deadlines "timeout" and cancellation "canceled",
// even where its own sentinel wraps them.
func TestErrorTypeVocabulary(t *testing.T) {
	components := map[string]func(error) string{
		"broker":       brokerErrorType,
		"outbox":       outboxErrorType,
		"rpc":          rpcErrorType,
		"amqprpc":      amqprpcErrorType,
		"webhook":      webhookErrorType,
		"shared":       errTypeOf,
		"shareddb":     func(err error) string { et, _ := dbErrorType(err); return et },
		"filetransfer": func(err error) string { return exportErrorType(err).Value.AsString() },
	}
	cases := []struct {
		err  error
		want string
	}{
		{context.DeadlineExceeded, "timeout"},
		{fmt.Errorf("op: %w", context.DeadlineExceeded), "timeout"},
		{os.ErrDeadlineExceeded, "timeout"},
		{&net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}, "timeout"},
		{context.Canceled, "canceled"},
		{fmt.Errorf("%w: waiting: %w", broker.ErrNotConfirmed, context.DeadlineExceeded), "timeout"},
		{fmt.Errorf("%w: %w", shareddb.ErrNoFreshReplica, context.Canceled), "canceled"},
	}
	for name, f := range components {
		for _, tc := range cases {
			if got := f(tc.err); got != tc.want {
				t.Errorf("%s(%v) = %q, want %q", name, tc.err, got, tc.want)
			}
		}
	}
	// Each component's own names still come after the shared ones.
	own := []struct {
		name string
		f    func(error) string
		err  error
		want string
	}{
		{"broker", brokerErrorType, broker.ErrNotConfirmed, "not_confirmed"},
		{"broker", brokerErrorType, errors.New("x"), "_OTHER"},
		{"outbox", outboxErrorType, &pgconn.PgError{Code: "42P01"}, "42P01"},
		{"rpc", rpcErrorType, rpc.ErrCircuitOpen, "circuit_open"},
		{"amqprpc", amqprpcErrorType, amqprpc.ErrNoRoute, "no_route"},
		{"webhook", webhookErrorType, webhook.ErrBlockedAddress, "blocked_address"},
		{"shareddb", components["shareddb"], shareddb.ErrNoFreshReplica, "no_fresh_replica"},
		{"filetransfer", components["filetransfer"], &pgconn.PgError{Code: "22012"}, "22012"},
	}
	for _, tc := range own {
		if got := tc.f(tc.err); got != tc.want {
			t.Errorf("%s(%v) = %q, want %q", tc.name, tc.err, got, tc.want)
		}
	}
}

// The cost outbound adds to each header the propagator writes, within the
// limits (the usual case) and over them.
func BenchmarkOutbound(b *testing.B) {
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	var ms []string
	for i := range 40 {
		ms = append(ms, member(fmt.Sprintf("k%02d", i), 255))
	}
	big := strings.Join(ms, ",")
	b.Run("within", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = outbound("traceparent", tp)
			_ = outbound("tracestate", "congo=t61rcWkgMzE")
			_ = outbound("baggage", "userId=alice,serverNode=DF%2028")
		}
	})
	b.Run("baggage 10 KB", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = outbound("baggage", big)
		}
	})
}
