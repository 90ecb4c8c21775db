package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/rpc/amqprpc"
)

// amqpCall asks the availability service over RabbitMQ request-reply: the
// request goes to a queue, the reply comes back on direct reply-to.
func amqpCall(ctx context.Context, t *tour) error {
	url := getenv("AMQP_URL", defaultAMQPURL)
	cfg := amqp.Config{Dial: amqp.DefaultDial(3 * time.Second), Heartbeat: 10 * time.Second, Locale: "en_US"}
	admin, err := amqp.DialConfig(url, cfg)
	if err != nil {
		t.printf("   RabbitMQ: %v\n", err)
		return errSkip{fmt.Sprintf("needs RabbitMQ: AMQP_URL=%s does not answer", redact(url))}
	}
	defer admin.Close()
	t.printf("   The front end asks the availability service, which sits behind RabbitMQ\n")
	t.printf("   (%s), and waits for the answer like an HTTP call.\n", redact(url))

	// A queue of the tour's own, removed at the end (and by RabbitMQ after a
	// minute unused, should the tour die first).
	queue := "bookings-tour.availability." + randomHex(4)
	ch, err := admin.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(queue, false, false, false, false, amqp.Table{"x-expires": int32(60000)}); err != nil {
		return fmt.Errorf("declare %s: %w", queue, err)
	}
	defer func() { _, _ = ch.QueueDelete(queue, false, false, false) }()

	type question struct {
		Rental string `json:"rental"`
		From   string `json:"from"`
		Nights int    `json:"nights"`
	}
	srv, err := amqprpc.NewServer(url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		var q question
		if err := json.Unmarshal(req.Body, &q); err != nil {
			return amqprpc.Message{}, &amqprpc.Error{Code: "bad_request", Message: err.Error()}
		}
		if q.Rental != "chalet-17" {
			return amqprpc.Message{}, &amqprpc.Error{Code: "not_found", Message: "no rental " + q.Rental}
		}
		return amqprpc.Message{Body: []byte(`{"available":true,"per_night_eur":180}`), ContentType: "application/json"}, nil
	}, amqprpc.WithoutDeclare(), amqprpc.WithAMQPConfig(cfg), amqprpc.WithLogger(t.logger()), amqprpc.WithConnectionName("bookings-tour availability"),
		amqprpc.WithTracer(t.tel.AMQPRPC()))
	if err != nil {
		return err
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Run(ctx) }()
	defer func() {
		_ = srv.Close()
		<-serveDone
	}()

	client, err := amqprpc.NewClient(ctx, url, amqprpc.WithAMQPConfig(cfg), amqprpc.WithConnectionName("bookings-tour front end"),
		amqprpc.WithTracer(t.tel.AMQPRPC()))
	if err != nil {
		return err
	}
	defer client.Close()

	call := func(q question) (amqprpc.Message, error) {
		body, err := json.Marshal(q)
		if err != nil {
			return amqprpc.Message{}, err
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return client.Call(ctx, queue, amqprpc.Message{Body: body, ContentType: "application/json"})
	}
	reply, err := call(question{Rental: "chalet-17", From: "2026-08-01", Nights: 7})
	if err != nil {
		return fmt.Errorf("call: %w", err)
	}
	t.printf("   is chalet-17 free from 2026-08-01 for 7 nights? reply: %s\n", reply.Body)

	_, err = call(question{Rental: "igloo-1", From: "2026-08-01", Nights: 2})
	if !errors.Is(err, &amqprpc.Error{Code: "not_found"}) {
		return fmt.Errorf("asking for an unknown rental: %v, want a not_found error", err)
	}
	t.printf("   is igloo-1 free? the handler's error comes back as a value: %v\n", err)
	return nil
}
