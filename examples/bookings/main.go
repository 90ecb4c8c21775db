// Command bookings tells the story of a rental-booking platform with the
// patterns of this module, printing what happens as it happens:
//
//  1. the monolith writes a booking and its event in one transaction (broker/outbox);
//  2. events are routed by key on a topic exchange (broker, broker/memory);
//  3. an ordered Kafka stream of booking changes is replayed by a new group (broker/kafka);
//  4. a signed webhook reaches a partner, who verifies it (webhook);
//  5. synchronous calls retry safely behind a circuit breaker (rpc, rpc/amqprpc);
//  6. a reporting service reads through the replica under a schema contract (shareddb);
//  7. a daily CSV export lands in S3 and is served as one link per day (filetransfer);
//  8. the bookings table itself streams to Kafka through change data capture, and
//     a new service rebuilds it by replaying the topic (broker/cdc);
//  9. a typed event at version 1 reaches a service on version 2 (upcast) and one
//     still on version 1; a payload that breaks the contract is dead-lettered (event).
//
// It runs on embedded defaults: go run ./examples/bookings
//
// Kafka (kfake), S3 (gofakes3) and the routed-events broker run in-process.
// PostgreSQL is used when DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
// answers, its replica at REPLICA_DATABASE_URL (default port 5433), and
// RabbitMQ at AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/); steps whose
// service is missing are skipped with the reason, and the rest still runs.
// The tour works in a schema of its own, dropped at the end.
//
// Every component is traced with OpenTelemetry (package telemetry, set up in
// telemetry.go): at the end the tour prints the trace of one booking, from
// the request that made it to the call its consumer made, and a summary of
// the metrics. With -metrics-addr :9464 (or BOOKINGS_METRICS_ADDR) the
// metrics are served at /metrics in the Prometheus format while the tour
// runs, and afterwards until Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
)

func main() {
	metricsAddr := flag.String("metrics-addr", os.Getenv("BOOKINGS_METRICS_ADDR"),
		"serve the tour's metrics at http://`ADDR`/metrics in the Prometheus format (e.g. :9464)")
	flag.Parse()
	// Ctrl-C ends the running step; the tour still cleans up after itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, *metricsAddr); err != nil {
		fmt.Fprintln(os.Stderr, "bookings:", err)
		stop()
		os.Exit(1)
	}
}

// run runs every step of the tour, printing as it goes, and a summary at the
// end. With a metricsAddr, /metrics is served until ctx ends.
func run(ctx context.Context, w io.Writer, metricsAddr string) (err error) {
	obs, err := newObservability(metricsAddr)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, obs.shutdown()) }()
	if obs.metricsURL != "" {
		fmt.Fprintf(w, "Metrics: %s (Prometheus format)\n\n", obs.metricsURL)
	}
	_, err = runTour(ctx, w, obs)
	if obs.metricsURL != "" && ctx.Err() == nil {
		fmt.Fprintf(w, "\nStill serving %s; Ctrl-C to stop.\n", obs.metricsURL)
		<-ctx.Done()
	}
	return err
}

// runTour is run, returning the tour so that tests can look at each step's
// result. The components report to obs.
func runTour(ctx context.Context, w io.Writer, obs *observability) (*tour, error) {
	t := &tour{ctx: ctx, w: w, obs: obs, tel: obs.tel}
	e := &env{}
	t.printf("A rental-booking platform, told in nine steps. A monolith takes bookings of\n")
	t.printf("chalets and flats; the services around it learn about them through events,\n")
	t.printf("webhooks, synchronous calls, a shared database and files.\n\n")
	t.printf("== Services\n")
	e.openDB(ctx, t)
	withEnv := func(f func(context.Context, *tour, *env) error) func(context.Context, *tour) error {
		return func(ctx context.Context, t *tour) error { return f(ctx, t, e) }
	}
	t.step("1. The monolith: a booking and its event in one transaction (outbox)", withEnv(monolithOutbox))
	t.step("2. Events on a topic exchange (memory broker)", routedEvents)
	t.step("3. An ordered stream of booking changes (Kafka)", kafkaStream)
	t.step("4. A signed webhook to a partner (webhook)", partnerWebhook)
	t.step("5a. A synchronous call: retries, breaker, idempotency (rpc)", httpCalls)
	t.step("5b. Request-reply over RabbitMQ (rpc/amqprpc)", amqpCall)
	t.step("6. Reporting reads through the replica (shareddb)", withEnv(reporting))
	t.step("7. Daily CSV export to S3, one link per day (filetransfer)", withEnv(dailyExport))
	t.step("8. The bookings table streamed to Kafka (broker/cdc)", withEnv(changeDataCapture))
	t.step("9. Typed events: one contract, two versions (event)", typedEvents)
	// Read the metrics before closing the replica reader: its lag gauges go with it.
	var merr error
	t.metrics, merr = obs.collect(ctx)
	e.closeDB(t)
	err := errors.Join(t.summary(), merr)
	obs.report(w, tracedBooking, t.metrics)
	return t, err
}
