package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/go-integration/patterns/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	vhost, url := testenv.VHost(t) // a private vhost; skip, or fail under INTEGRATION=required, without RabbitMQ
	t.Setenv("AMQP_URL", url)
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := out.String()
	m := regexp.MustCompile(`^published 2 messages to exchange (example_bookings_[a-z0-9]+), confirmed: 2\n`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("first line is not the confirmed publish:\n%s", got)
	}
	const want = `billing: rentals.france.nevache {"nights":3} handled
billing: rentals.italy.cortina attempt 1 failed
billing: rentals.italy.cortina attempt 2 failed
billing: rentals.italy.cortina attempt 3 failed
dead letter: rentals.italy.cortina from billing after 3 attempts: invalid booking: negative nights
subscriber: received 3, handled 2, retried 2, dead-lettered 1
`
	if rest := strings.TrimPrefix(got, m[0]); rest != want {
		t.Errorf("output after the first line:\n%s\nwant:\n%s", rest, want)
	}

	// The program deleted every queue and exchange it declared.
	for _, what := range []string{"list_queues", "list_exchanges"} {
		list, err := testenv.Rabbitmqctl(what, "-p", vhost, "name")
		if err != nil {
			t.Fatalf("rabbitmqctl %s: %v: %s", what, err, list)
		}
		if strings.Contains(list, m[1]) {
			t.Errorf("left behind in vhost %s (%s):\n%s", vhost, what, list)
		}
	}
}

func TestRunWithoutRabbitMQ(t *testing.T) {
	t.Setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
	var out bytes.Buffer
	err := run(context.Background(), &out)
	if err == nil || !strings.Contains(err.Error(), "needs RabbitMQ at 127.0.0.1:1: start it with scripts/services") {
		t.Fatalf("run without RabbitMQ: %v", err)
	}
	if strings.Contains(err.Error(), "guest:guest") {
		t.Errorf("the error shows the credentials: %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed before failing:\n%s", out.String())
	}
}
