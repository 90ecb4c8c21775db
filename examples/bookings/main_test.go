package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/go-integration/patterns/internal/testenv"
)

// expected lists, per step, lines its output must hold when it runs.
var expected = map[string][]string{
	"1.": {
		"committed booking b-1001 (chalet-17, 7 nights) + booking_created in one transaction",
		"notifications received booking_created b-1003 for villa-9",
		"relay: 3 published, 0 pending; b-1099 was never announced",
	},
	"2.": {
		"french-concierge got rentals.france.nevache",
		"french-concierge got the 2 French bookings, analytics got all 3",
	},
	"4.": {
		"a forged webhook (signed with another secret) gets 401",
		"address blocked by the SSRF guard",
		"got 500, retry in",
		"got 204, delivery succeeded",
		"the partner stored b-1001 once",
		"got 200, delivery succeeded",
	},
	"3.": {
		"availability: partition",
		"search-index: chalet-17",
		"b-1001 created, 7 nights -> b-1001 extended to 9 nights -> b-1001 cancelled -> b-1005 created, 3 nights",
		"both groups saw every rental's changes in publish order, and committed: lag 0",
	},
	"5a.": {
		"client: POST /bookings attempt 1 -> 502 (retry in",
		"Idempotent-Replayed: true; the handler ran once",
		"circuit breaker for the pricing host: closed -> open",
		"circuit breaker for the pricing host: half-open -> closed",
	},
	"5b.": {
		`reply: {"available":true`,
		"remote error not_found",
	},
	"6.": {
		"missing column",
		"report: cortina: 1 booking(s), 5 nights; nevache: 2 booking(s), 10 nights; paris: 1 booking(s), 2 nights",
		"reader is read-only",
	},
	"9.": {
		"invoicing (v2) got b-1001 sent as v1: 7 nights, 84000 EUR cents",
		"invoicing (v2) got b-1002 sent as v1: 2 nights, 25990 EUR cents",
		"loyalty (v1) got b-1001: 7 nights, 840.00 EUR, 84 points",
		"dead letter from invoicing: permanent: event: upcast failed: com.rentals.booking.confirmed from version 1",
		"dead letter from loyalty: permanent: event: cannot decode: com.rentals.booking.confirmed version 1",
		"invoicing: 2 handled, 1 dead-lettered; loyalty: 2 handled, 1 dead-lettered",
	},
	"8.": {
		"the monolith had 4 bookings; then it extended b-1002, took b-1006 and cancelled b-1003",
		"cdc: 4 snapshot rows (op r) and 3 changes published to Kafka and confirmed",
		"occupancy: op u b-1002 flat-3, 4 nights",
		"occupancy: op c b-1006 flat-3, 4 nights",
		"occupancy: op d b-1003 deleted",
		"occupancy's view equals the bookings table: b-1001, b-1002, b-1004, b-1006",
	},
	"7.": {
		"GET /exports/bookings?from=2026-07-01&to=2026-07-03 -> 3 link(s), 0 day(s) missing",
		"| b-1004,chalet-17,nevache,3,2026-07-03",
		"the 3 files hold all 4 bookings",
	},
}

// section returns the output of the step whose name starts with prefix.
func section(out, prefix string) string {
	_, rest, ok := strings.Cut(out, "\n== "+prefix)
	if !ok {
		return ""
	}
	if i := strings.Index(rest, "\n== "); i >= 0 {
		rest = rest[:i]
	}
	return strings.Join(strings.Fields(rest), " ") // columns are padded
}

func runForTest(t *testing.T) (*tour, string) {
	t.Helper()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	obs, err := newObservability("")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := obs.shutdown(); err != nil {
			t.Error(err)
		}
	}()
	var out bytes.Buffer
	tr, err := runTour(ctx, &out, obs)
	if err != nil {
		t.Fatalf("tour failed: %v\n%s", err, out.String())
	}
	return tr, out.String()
}

func TestTourRuns(t *testing.T) {
	tr, out := runForTest(t)
	required := os.Getenv("INTEGRATION") == "required"
	if len(tr.results) != 10 {
		t.Errorf("%d steps ran, want 10", len(tr.results))
	}
	for _, r := range tr.results {
		prefix, _, _ := strings.Cut(r.name, " ")
		switch {
		case r.err != nil:
			t.Errorf("step %q failed: %v", r.name, r.err)
		case r.skipped != "":
			if required {
				t.Errorf("step %q skipped under INTEGRATION=required: %s", r.name, r.skipped)
			} else {
				t.Logf("step %q skipped: %s", r.name, r.skipped)
			}
		default:
			sec := section(out, prefix)
			for _, want := range expected[prefix] {
				if !strings.Contains(sec, want) {
					t.Errorf("step %q: output lacks %q", r.name, want)
				}
			}
		}
	}
	if required && !strings.Contains(section(out, "6."), "replica1 (replica) served") {
		t.Error("under INTEGRATION=required the replica must serve the reports")
	}
	if !strings.Contains(out, "\n== Summary\n") {
		t.Error("no summary")
	}
	if tr.ran("1.") {
		checkBookingTrace(t, tr, out)
	} else if required {
		t.Error("under INTEGRATION=required the booking's trace must be checked")
	}
	checkBrokerTraces(t, tr)
	checkMetrics(t, tr, out)
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// Without PostgreSQL and RabbitMQ the steps that need them are skipped with
// the reason, and the others still run.
func TestTourWithoutServices(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:1/test?connect_timeout=2")
	t.Setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
	tr, out := runForTest(t)
	needs := map[string]string{"1.": "needs PostgreSQL", "5b.": "needs RabbitMQ", "6.": "needs PostgreSQL", "7.": "needs PostgreSQL", "8.": "needs PostgreSQL"}
	for _, r := range tr.results {
		prefix, _, _ := strings.Cut(r.name, " ")
		if r.err != nil {
			t.Errorf("step %q failed: %v", r.name, r.err)
		}
		if why, ok := needs[prefix]; ok && !strings.Contains(r.skipped, why) {
			t.Errorf("step %q: skipped %q, want a skip saying %q", r.name, r.skipped, why)
		}
		if _, ok := needs[prefix]; !ok && r.skipped != "" {
			t.Errorf("step %q skipped without its service being missing: %s", r.name, r.skipped)
		}
	}
	out = strings.Join(strings.Fields(out), " ")
	for _, want := range []string{
		"PostgreSQL: not available, DATABASE_URL=postgres://postgres@127.0.0.1:1/test",
		"steps that need it (outbox, reporting, daily export, change data capture) will be skipped",
		"skipped (needs RabbitMQ: AMQP_URL=amqp://guest:xxxxx@127.0.0.1:1/ does not answer",
		"french-concierge got the 2 French bookings, analytics got all 3",
		"== Telemetry: the trace of booking b-1001 no trace: step 1 did not take the booking",
		"== Telemetry: metrics of the run messages sent: kafka 8, memory 6",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// Without the replica the reporting service reads the primary, and says so.
func TestTourWithoutReplica(t *testing.T) {
	testenv.DatabaseURL(t) // skips, or fails under INTEGRATION=required, without PostgreSQL
	t.Setenv("REPLICA_DATABASE_URL", "postgres://postgres@127.0.0.1:1/test?connect_timeout=2")
	tr, out := runForTest(t)
	for _, r := range tr.results {
		if r.err != nil {
			t.Errorf("step %q failed: %v", r.name, r.err)
		}
	}
	sec := section(out, "6.")
	for _, want := range []string{
		"the replica (REPLICA_DATABASE_URL=postgres://postgres@127.0.0.1:1/test?connect_timeout=2) does not answer",
		"so zero replicas: every read goes to the primary",
		`msg="no replicas configured: every read goes to the primary"`,
		"primary (primary) served 2 read(s)",
		"reader is read-only",
	} {
		if !strings.Contains(sec, want) {
			t.Errorf("step 6: output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}
