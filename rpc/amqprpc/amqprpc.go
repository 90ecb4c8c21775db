package amqprpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/internal/backoff"
	"github.com/go-integration/patterns/internal/hooks"
)

// Message is a request or a reply.
type Message struct {
	Body        []byte
	ContentType string
	// Header travels as AMQP headers; keys starting with "x-rpc-" are reserved.
	Header map[string]string
}

// Handler answers one request. Returning an error sends it back to the
// caller as an *Error (an *Error keeps its Code; other errors get CodeInternal).
// ctx ends at the caller's deadline, or when the connection is lost (no reply
// can be sent then).
type Handler func(ctx context.Context, req Message) (Message, error)

// Error codes set by the server itself.
const (
	// CodeInternal is the code of a handler error that is not an *Error.
	CodeInternal = "internal"
	// CodePanic is the code sent when the handler panicked.
	CodePanic = "panic"
)

// Error is an error returned by the remote handler. Test for a code with
// errors.Is(err, &amqprpc.Error{Code: "not_found"}) or errors.As.
type Error struct {
	Code    string
	Message string
}

// Error returns "amqprpc: remote error <code>: <message>".
func (e *Error) Error() string {
	return fmt.Sprintf("amqprpc: remote error %s: %s", e.Code, e.Message)
}

// Is reports whether target is an *Error with the same Code (and the same
// Message, when target's Message is not empty).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// Errors of the client and server; test them with errors.Is.
var (
	// ErrClosed is returned by calls after Close, and by Run after Close.
	ErrClosed = errors.New("amqprpc: closed")
	// ErrConnectionLost is returned by calls in flight when the connection
	// to RabbitMQ dropped: the request may or may not have been handled.
	ErrConnectionLost = errors.New("amqprpc: connection lost")
	// ErrNoRoute is returned when RabbitMQ has no queue for the request (it
	// returned the mandatory message): no server ever declared it.
	ErrNoRoute = errors.New("amqprpc: no queue for request")
	// ErrInvalidOption is returned for a bad option or argument: a missing
	// handler, a bad URL, or a queue name AMQP cannot carry (empty for a
	// Server, over 255 bytes, not UTF-8, or starting with "amq." for a queue
	// the Server declares), which Run and Call refuse before sending
	// anything.
	ErrInvalidOption = errors.New("amqprpc: invalid option")
)

// Reserved header names.
const (
	headerDeadline  = "x-rpc-deadline" // unix milliseconds
	headerErrorCode = "x-rpc-error-code"
	headerErrorMsg  = "x-rpc-error"
	replyTo         = "amq.rabbitmq.reply-to"
)

// Defaults of the options.
const (
	DefaultConcurrency = 16
	// DefaultReconnectMin and DefaultReconnectMax bound the wait before
	// reconnecting (exponential, full jitter): see WithReconnectBackoff.
	DefaultReconnectMin = 250 * time.Millisecond
	DefaultReconnectMax = 30 * time.Second
	DefaultDrainTimeout = 30 * time.Second
)

// Options are typed by what they configure, as franz-go's ProducerOpt and
// ConsumerOpt are: NewClient takes ClientOptions, NewServer ServerOptions,
// so an option the other would ignore does not compile. An Option is both.
// Every option checks its arguments; an invalid one makes the constructor
// fail with an error wrapping ErrInvalidOption that names the option.

// ClientOption configures a Client.
type ClientOption interface{ applyClient(*config) error }

// ServerOption configures a Server.
type ServerOption interface{ applyServer(*config) error }

// Option configures a Client and a Server alike.
type Option interface {
	ClientOption
	ServerOption
}

type sharedOpt func(*config) error

func (f sharedOpt) applyClient(c *config) error { return f(c) }
func (f sharedOpt) applyServer(c *config) error { return f(c) }

type serverOpt func(*config) error

func (f serverOpt) applyServer(c *config) error { return f(c) }

type config struct {
	amqp         amqp.Config
	concurrency  int
	reconnect    backoff.Policy
	drainTimeout time.Duration
	declare      bool
	quorum       bool     // WithQuorumQueue
	nodes        []string // WithNodes: more nodes of the cluster, after the main URL
	logger       *slog.Logger
	tracers      []any
}

func defaultConfig() config {
	return config{
		amqp:         amqp.Config{Properties: amqp.Table{}},
		concurrency:  DefaultConcurrency,
		reconnect:    backoff.Policy{Min: DefaultReconnectMin, Max: DefaultReconnectMax},
		drainTimeout: DefaultDrainTimeout,
		declare:      true,
		logger:       slog.Default(),
	}
}

// WithConnectionName sets the connection_name client property shown by
// RabbitMQ's management tools. Default: none.
func WithConnectionName(name string) Option {
	return sharedOpt(func(c *config) error {
		if name == "" {
			return fmt.Errorf("%w: WithConnectionName(\"\")", ErrInvalidOption)
		}
		c.amqp.Properties["connection_name"] = name
		return nil
	})
}

// WithAMQPConfig sets the amqp091 connection configuration (TLS, heartbeat,
// dialer). Default: amqp091's defaults. cfg.Recovery must be nil: the Client
// and the Server reconnect themselves, and with amqp091's recovery a lost
// connection would leave calls waiting for replies that cannot come instead
// of failing them with ErrConnectionLost.
func WithAMQPConfig(cfg amqp.Config) Option {
	return sharedOpt(func(c *config) error {
		if cfg.Recovery != nil {
			return fmt.Errorf("%w: WithAMQPConfig: Recovery must be nil (amqprpc reconnects itself; amqp091's recovery would keep calls waiting on a lost connection)", ErrInvalidOption)
		}
		props := c.amqp.Properties
		c.amqp = cfg
		if c.amqp.Properties == nil {
			c.amqp.Properties = amqp.Table{}
		}
		for k, v := range props {
			if _, ok := c.amqp.Properties[k]; !ok {
				c.amqp.Properties[k] = v
			}
		}
		return nil
	})
}

// WithReconnectBackoff bounds the wait before dialling again after a lost
// connection or a failed dial: a random wait up to min, doubling with each
// failure in a row up to max ("full jitter"), so that many clients and
// servers losing the broker together do not all come back at once. A Server
// waits before reconnecting; a Client dials on the next call, but not before
// the wait after a failed dial has passed (calls meanwhile wait for that
// dial under their context). Defaults DefaultReconnectMin and
// DefaultReconnectMax.
func WithReconnectBackoff(min, max time.Duration) Option {
	return sharedOpt(func(c *config) error {
		p := backoff.Policy{Min: min, Max: max}
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%w: WithReconnectBackoff(%v, %v): %v", ErrInvalidOption, min, max, err)
		}
		c.reconnect = p
		return nil
	})
}

// WithDrainTimeout bounds how long Close waits for calls in flight (Client)
// or running handlers (Server) before closing the connection. A Server then
// cancels the handlers' context and waits for them to return; their requests
// go back to the queue. Default 30s.
func WithDrainTimeout(d time.Duration) Option {
	return sharedOpt(func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: WithDrainTimeout(%v): negative", ErrInvalidOption, d)
		}
		c.drainTimeout = d
		return nil
	})
}

// WithTracer adds a tracer: a value implementing CallTracer and/or
// ConnectionTracer for a Client, ServeTracer and/or ConnectionTracer for a
// Server. It may be given several times; tracers are called in that order,
// synchronously, and must not block. A value implementing none of the
// interfaces the constructor uses is ErrInvalidOption.
func WithTracer(t any) Option { return tracerOpt{t} }

type tracerOpt struct{ t any }

func (o tracerOpt) applyClient(c *config) error {
	if err := hooks.Check(o.t, "amqprpc.CallTracer, amqprpc.ConnectionTracer", hooks.Is[CallTracer](), hooks.Is[ConnectionTracer]()); err != nil {
		return fmt.Errorf("%w: WithTracer: %v", ErrInvalidOption, err)
	}
	c.tracers = append(c.tracers, o.t)
	return nil
}

func (o tracerOpt) applyServer(c *config) error {
	if err := hooks.Check(o.t, "amqprpc.ServeTracer, amqprpc.ConnectionTracer", hooks.Is[ServeTracer](), hooks.Is[ConnectionTracer]()); err != nil {
		return fmt.Errorf("%w: WithTracer: %v", ErrInvalidOption, err)
	}
	c.tracers = append(c.tracers, o.t)
	return nil
}

// WithConcurrency sets how many requests a Server handles at once (and its
// prefetch). Default 16.
func WithConcurrency(n int) ServerOption {
	return serverOpt(func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%w: WithConcurrency(%d): must be at least 1", ErrInvalidOption, n)
		}
		c.concurrency = n
		return nil
	})
}

// WithoutDeclare makes a Server use its queue as it is instead of declaring
// it (durable, not auto-deleted).
func WithoutDeclare() ServerOption {
	return serverOpt(func(c *config) error {
		c.declare = false
		return nil
	})
}

// WithLogger sets where a Server logs connection losses and failed replies.
// Default: slog.Default().
func WithLogger(l *slog.Logger) ServerOption {
	return serverOpt(func(c *config) error {
		if l == nil {
			return fmt.Errorf("%w: WithLogger(nil)", ErrInvalidOption)
		}
		c.logger = l
		return nil
	})
}

// closeTimeout bounds waiting for connection.close-ok: a connection the
// broker blocks (resource alarm) is not read from and never answers.
const closeTimeout = 5 * time.Second

// amqpConn is a connection with its socket, so that closing it can give up
// on the broker: amqp091's CloseDeadline alone does not bound the wait, as
// every heartbeat the broker still sends pushes the read deadline again.
type amqpConn struct {
	*amqp.Connection
	sock net.Conn
}

// dialAMQP dials like amqp.DialConfig and keeps the socket.
func dialAMQP(url string, cfg amqp.Config) (amqpConn, error) {
	var sock net.Conn
	dial := cfg.Dial
	if dial == nil {
		// amqp091's default, connection_timeout in the URL included.
		timeout := 30 * time.Second
		if u, err := amqp.ParseURI(url); err == nil && u.ConnectionTimeout > 0 {
			timeout = time.Duration(u.ConnectionTimeout) * time.Millisecond
		}
		dial = amqp.DefaultDial(timeout)
	}
	cfg.Dial = func(network, addr string) (net.Conn, error) {
		c, err := dial(network, addr)
		sock = c
		return c, err
	}
	conn, err := amqp.DialConfig(url, cfg)
	if err != nil {
		return amqpConn{}, err
	}
	return amqpConn{conn, sock}, nil
}

// close closes the connection, waiting at most closeTimeout for the broker
// to answer before dropping the socket.
func (c amqpConn) close() error {
	done := make(chan error, 1)
	go func() { done <- c.CloseDeadline(time.Now().Add(closeTimeout)) }()
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		_ = c.sock.Close() // the reader fails and shuts the connection down
		return <-done
	}
}

func toTable(h map[string]string) amqp.Table {
	if len(h) == 0 {
		return nil
	}
	t := make(amqp.Table, len(h))
	for k, v := range h {
		t[k] = v
	}
	return t
}

func fromTable(t amqp.Table) map[string]string {
	var h map[string]string
	for k, v := range t {
		if len(k) >= 6 && k[:6] == "x-rpc-" {
			continue
		}
		if h == nil {
			h = make(map[string]string, len(t))
		}
		if s, ok := v.(string); ok {
			h[k] = s
		} else {
			h[k] = fmt.Sprint(v)
		}
	}
	return h
}
