package amqprpc_test

import (
	"context"
	"log"

	"github.com/go-integration/patterns/rpc/amqprpc"
)

// A server and a client on a 3-node cluster: both fail over to the other
// nodes, and the request queue is a quorum queue, so it outlives the node
// that holds its leader. (Not run as a test: it needs a running cluster,
// such as scripts/rabbitmq-cluster's.)
func ExampleWithNodes() {
	nodes := []string{
		"amqp://guest:guest@127.0.0.1:5681/",
		"amqp://guest:guest@127.0.0.1:5682/",
		"amqp://guest:guest@127.0.0.1:5683/",
	}
	srv, err := amqprpc.NewServer(nodes[0], "quotes", func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		return amqprpc.Message{Body: []byte("120 EUR")}, nil
	}, amqprpc.WithNodes(nodes[1:]...), amqprpc.WithQuorumQueue())
	if err != nil {
		log.Fatal(err)
	}
	go srv.Run(context.Background())
	defer srv.Close()

	client, err := amqprpc.NewClient(context.Background(), nodes[2], amqprpc.WithNodes(nodes[:2]...))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	// A call in flight when the client's node dies fails with
	// ErrConnectionLost; the next one dials another node.
	_, _ = client.Call(context.Background(), "quotes", amqprpc.Message{Body: []byte("room 7")})
}
