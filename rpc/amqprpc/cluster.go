package amqprpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-integration/patterns/internal/amqpnodes"
	amqp "github.com/rabbitmq/amqp091-go"
)

// WithNodes adds more nodes of a RabbitMQ cluster (amqp:// or amqps://
// URLs) to the one the constructor is given. A dial tries the nodes in
// turn: the first from the constructor's URL, the next ones from the node
// after the one last connected to (a lost connection's node is the
// likeliest to be down). Only when every node failed does the Client or
// Server wait the reconnect backoff (WithReconnectBackoff) before the next
// round. For a Server's queue to survive its node, make it a quorum queue
// (WithQuorumQueue). Default: the constructor's URL only.
func WithNodes(urls ...string) Option {
	return sharedOpt(func(c *config) error {
		if len(urls) == 0 {
			return fmt.Errorf("%w: WithNodes(): no URL", ErrInvalidOption)
		}
		for i, u := range urls {
			if _, err := amqp.ParseURI(u); err != nil {
				return fmt.Errorf("%w: WithNodes: URL %d: %v", ErrInvalidOption, i+1, err)
			}
		}
		c.nodes = append(c.nodes, urls...)
		return nil
	})
}

// WithQuorumQueue makes a Server declare its request queue as a quorum
// queue (x-queue-type quorum): replicated over the cluster's nodes, it
// survives the loss of a minority of them, where a classic queue is
// unavailable while its one node is down. A queue that already exists as a
// classic queue makes the declaration fail (PRECONDITION_FAILED): delete it
// first. Ignored with WithoutDeclare. Default: a classic durable queue.
func WithQuorumQueue() ServerOption {
	return serverOpt(func(c *config) error {
		c.quorum = true
		return nil
	})
}

// queueArgs returns the arguments the request queue is declared with.
func (s *Server) queueArgs() amqp.Table {
	if !s.cfg.quorum {
		return nil
	}
	return amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}
}

// dialNodes dials url and then cfg.nodes, from node start (modulo their
// number) on, each once, and returns the first connection made with its
// node's index. With one node the error is as it always was; with several
// it names each node's failure (passwords hidden).
func dialNodes(url string, cfg config, start int) (amqpConn, int, error) {
	urls := append([]string{url}, cfg.nodes...)
	conn, i, errs := amqpnodes.DialAny(context.Background(), len(urls), start, func(i int) (amqpConn, error) {
		return dialAMQP(urls[i], cfg.amqp)
	})
	switch {
	case errs == nil:
		return conn, i, nil
	case len(urls) == 1:
		return amqpConn{}, 0, fmt.Errorf("amqprpc: dial: %w", errs[0])
	}
	for k := range errs {
		errs[k] = fmt.Errorf("%s: %w", amqpnodes.Redact(urls[(start+k)%len(urls)]), errs[k])
	}
	return amqpConn{}, 0, fmt.Errorf("amqprpc: dial: no node of %d answered: %w", len(urls), errors.Join(errs...))
}

// nodeURL returns node i of url and cfg.nodes.
func nodeURL(url string, cfg config, i int) string {
	if i == 0 {
		return url
	}
	return cfg.nodes[i-1]
}
