package rabbitmq_test

import (
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
)

// proxy forwards one test's AMQP connections to the broker; mute stops
// forwarding what the broker sends (confirms, heartbeats), a fault that hits
// only this test's connections; refuse closes new connections at once; cut
// drops the open ones.
type proxy struct {
	ln     net.Listener
	muted  atomic.Bool
	refuse atomic.Bool
	done   chan struct{}
	wg     sync.WaitGroup
	conns  sync.Map // client -> server
}

// cut closes every connection open through p.
func (p *proxy) cut() {
	p.conns.Range(func(c, s any) bool {
		c.(net.Conn).Close()
		s.(net.Conn).Close()
		p.conns.Delete(c)
		return true
	})
}

// newProxy returns a proxy to url's broker and url rewritten to go through it.
func newProxy(t *testing.T, url string) (*proxy, string) {
	t.Helper()
	u, err := amqp.ParseURI(url)
	if err != nil {
		t.Fatal(err)
	}
	target := net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			if p.refuse.Load() {
				client.Close()
				continue
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			p.conns.Store(client, server)
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(server, client); server.Close() }()
			go func() {
				defer p.wg.Done()
				defer client.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := server.Read(buf)
					if p.muted.Load() {
						<-p.done
						return
					}
					if n > 0 {
						if _, werr := client.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	a := ln.Addr().(*net.TCPAddr)
	u.Host, u.Port = a.IP.String(), a.Port
	return p, u.String()
}

// TestCloseAbandonsUnconfirmedAsNotConfirmed: a Publish whose confirms never
// come (the broker's answers are cut off) ends when Close gives up waiting,
// with broker.ErrNotConfirmed: its messages were sent and may or may not be
// kept, unlike a call that never got a connection (ErrClosed alone).
func TestCloseAbandonsUnconfirmedAsNotConfirmed(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	px, purl := newProxy(t, url)
	p := newPublisher(t, purl, rabbitmq.WithDrainTimeout(200*time.Millisecond))
	if err := p.Publish(ctxT(t, 10*time.Second), "mute", broker.Message{ID: "declared"}); err != nil {
		t.Fatal(err)
	}
	px.muted.Store(true)
	errc := make(chan error, 1)
	go func() { errc <- p.Publish(ctxT(t, 30*time.Second), "mute", broker.Message{ID: "unconfirmed"}) }()
	testenv.Eventually(t, 5*time.Second, "the second message sent", func() bool { return p.Stats().Sent >= 2 })
	closed := make(chan struct{})
	go func() { _ = p.Close(); close(closed) }()
	select {
	case err := <-errc:
		if !errors.Is(err, broker.ErrNotConfirmed) || !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Publish abandoned by Close: %v, want ErrNotConfirmed (and ErrClosed)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the Publish waiting for its confirm")
	}
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Error("Close hangs on a connection whose broker does not answer")
	}
	if st := p.Stats(); st.Published != 1 || st.Failed != 1 || st.InFlight != 0 {
		t.Errorf("stats %+v: want only the first message published, the second failed", st)
	}
}

// connEvents records connection events.
type connEvents struct {
	mu  sync.Mutex
	evs []rabbitmq.TraceConnectionData
	ctx []any // the value of ctxKey in each event's context
}

type ctxKey struct{}

func (c *connEvents) TraceConnection(ctx context.Context, d rabbitmq.TraceConnectionData) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evs = append(c.evs, d)
	c.ctx = append(c.ctx, ctx.Value(ctxKey{}))
}

func (c *connEvents) has(e rabbitmq.ConnectionEvent) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.evs {
		if d.Event == e {
			return true
		}
	}
	return false
}

// TestConnectionTracer: a ConnectionTracer is told of the first connection
// (in the constructor's context), of its loss, of failed reconnect attempts
// and of the reconnect, with the connection's name and its URL without the
// password; Stats count them.
func TestConnectionTracer(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	px, purl := newProxy(t, url)
	tr := &connEvents{}
	ctx := context.WithValue(ctxT(t, 30*time.Second), ctxKey{}, "constructor")
	p, err := rabbitmq.NewPublisher(ctx, purl, rabbitmq.WithConnectionName("traced"), rabbitmq.WithTracer(tr), rabbitmq.WithReconnectBackoff(5*time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	px.refuse.Store(true)
	px.cut()
	testenv.Eventually(t, 10*time.Second, "a failed reconnect attempt", func() bool { return tr.has(rabbitmq.ConnectionReconnecting) })
	px.refuse.Store(false)
	testenv.Eventually(t, 10*time.Second, "the reconnect", func() bool { return tr.has(rabbitmq.ConnectionReconnected) })
	if err := p.Publish(ctxT(t, 10*time.Second), "traced", broker.Message{}); err != nil {
		t.Fatal(err)
	}

	tr.mu.Lock()
	defer tr.mu.Unlock()
	var kinds []string
	for i, d := range tr.evs {
		kinds = append(kinds, d.Event.String())
		if d.Name != "traced" || d.URL == "" || strings.Contains(d.URL, ":guest@") {
			t.Errorf("event %d: %+v: want the connection's name and its URL without the password", i, d)
		}
		switch d.Event {
		case rabbitmq.ConnectionConnected:
			if tr.ctx[i] != "constructor" {
				t.Errorf("ConnectionConnected in context with %v, want the constructor's", tr.ctx[i])
			}
		case rabbitmq.ConnectionLost:
			if d.Err == nil {
				t.Error("ConnectionLost without its cause")
			}
		case rabbitmq.ConnectionReconnecting:
			if d.Err == nil || d.Attempt < 1 {
				t.Errorf("ConnectionReconnecting %+v: want the failed attempt's error and number", d)
			}
		}
	}
	got := strings.Join(kinds, " ")
	if ok, _ := regexp.MatchString(`^connected connection-lost (reconnecting )+reconnected$`, got); !ok {
		t.Errorf("events %q, want connected, connection-lost, reconnecting (at least once), reconnected", got)
	}
	if st := p.Stats(); st.Connects != 1 || st.Disconnects != 1 || st.Reconnects != 1 || st.Published != 1 {
		t.Errorf("stats %+v: want 1 connect, 1 disconnect, 1 reconnect, 1 published", st)
	}
}
