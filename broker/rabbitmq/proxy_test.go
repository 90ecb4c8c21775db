package rabbitmq_test

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// proxy forwards one test's AMQP connections to the broker; mute stops
// forwarding what the broker sends (confirms, heartbeats), a fault that hits
// only this test's connections.
type proxy struct {
	ln    net.Listener
	muted atomic.Bool
	done  chan struct{}
	wg    sync.WaitGroup
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
	var conns sync.Map
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			conns.Store(client, server)
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
		conns.Range(func(c, s any) bool {
			c.(net.Conn).Close()
			s.(net.Conn).Close()
			return true
		})
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
	p := newPublisher(t, purl)
	p.SetFlushTimeout(200 * time.Millisecond)
	if err := p.Publish(ctxT(t, 10*time.Second), "mute", broker.Message{ID: "declared"}); err != nil {
		t.Fatal(err)
	}
	px.muted.Store(true)
	errc := make(chan error, 1)
	go func() { errc <- p.Publish(ctxT(t, 30*time.Second), "mute", broker.Message{ID: "unconfirmed"}) }()
	for deadline := time.Now().Add(5 * time.Second); p.Stats().Published < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second message was not sent")
		}
	}
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
	if st := p.Stats(); st.Confirmed != 1 {
		t.Errorf("stats %+v: want only the first message confirmed", st)
	}
}
