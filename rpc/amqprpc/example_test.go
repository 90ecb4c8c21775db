package amqprpc_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/go-integration/patterns/rpc/amqprpc"
)

// A server answering "quotes" requests and a client calling it. (Not run as
// a test: it needs RabbitMQ.)
func Example() {
	const url = "amqp://guest:guest@127.0.0.1:5672/"
	errSoldOut := &amqprpc.Error{Code: "sold_out"}

	srv, err := amqprpc.NewServer(url, "quotes", func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		if string(req.Body) == "room 13" {
			return amqprpc.Message{}, &amqprpc.Error{Code: "sold_out", Message: "no room 13 left"}
		}
		return amqprpc.Message{Body: []byte("120 EUR"), ContentType: "text/plain"}, nil
	}, amqprpc.WithConcurrency(32))
	if err != nil {
		log.Fatal(err)
	}
	go srv.Run(context.Background())
	defer srv.Close() // stops consuming, lets running handlers reply and ack

	client, err := amqprpc.NewClient(context.Background(), url, amqprpc.WithConnectionName("booking-web"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	reply, err := client.Call(ctx, "quotes", amqprpc.Message{Body: []byte("room 7")})
	switch {
	case errors.Is(err, errSoldOut):
		fmt.Println("sold out")
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Println("no answer in time")
	case errors.Is(err, amqprpc.ErrConnectionLost):
		fmt.Println("connection lost: the request may or may not have run")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println(string(reply.Body))
	}
}
