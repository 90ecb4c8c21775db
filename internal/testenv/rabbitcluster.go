package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// The 3-node cluster of scripts/rabbitmq-cluster: node names and AMQP ports.
var (
	RabbitClusterNodes = [3]string{"rabbit-c1@localhost", "rabbit-c2@localhost", "rabbit-c3@localhost"}
	RabbitClusterPorts = [3]int{5681, 5682, 5683}
)

// RabbitCluster is the local 3-node RabbitMQ cluster of
// scripts/rabbitmq-cluster with a vhost of the test's own, for the cluster
// fault tests of broker/rabbitmq and rpc/amqprpc.
type RabbitCluster struct {
	t     testing.TB
	VHost string // the test's own vhost on the cluster
	mu    sync.Mutex
	down  [3]bool
}

// NewRabbitCluster skips t outside the fault stage and when the cluster does not
// answer (fails it with INTEGRATION=required), creates a vhost for t and,
// when t ends, starts every node t stopped and deletes the vhost.
func NewRabbitCluster(t testing.TB) *RabbitCluster {
	t.Helper()
	FaultTest(t)
	for _, p := range RabbitClusterPorts {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 2*time.Second)
		if err != nil {
			Unavailable(t, "the 3-node RabbitMQ cluster (start it with scripts/rabbitmq-cluster start)", err)
		}
		_ = conn.Close()
	}
	c := &RabbitCluster{t: t, VHost: Name(t, "v")}
	if out, err := c.Ctl(0, "add_vhost", c.VHost); err != nil {
		t.Fatalf("add_vhost: %v: %s", err, out)
	}
	t.Cleanup(func() {
		for i := range RabbitClusterNodes {
			c.mu.Lock()
			down := c.down[i]
			c.mu.Unlock()
			if down {
				c.Start(i)
			}
		}
		if out, err := c.Ctl(0, "delete_vhost", c.VHost); err != nil {
			t.Logf("delete_vhost %s: %v: %s", c.VHost, err, out)
		}
	})
	if out, err := c.Ctl(0, "set_permissions", "-p", c.VHost, "guest", ".*", ".*", ".*"); err != nil {
		t.Fatalf("set_permissions: %v: %s", err, out)
	}
	return c
}

// Ctl runs rabbitmqctl against node i.
func (c *RabbitCluster) Ctl(i int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q", "-n", RabbitClusterNodes[i]}, args...)...).CombinedOutput()
	return string(out), err
}

// URL is node i's AMQP URL for the test's vhost.
func (c *RabbitCluster) URL(i int) string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/%s", RabbitClusterPorts[i], c.VHost)
}

// Others are the URLs of the nodes after i, for WithNodes.
func (c *RabbitCluster) Others(i int) []string {
	return []string{c.URL((i + 1) % 3), c.URL((i + 2) % 3)}
}

// Up returns a node that runs.
func (c *RabbitCluster) Up() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, d := range c.down {
		if !d {
			return i
		}
	}
	c.t.Fatal("every node is down")
	return 0
}

// Leader returns the node holding queue's leader, waiting while the queue
// has none (an election after its leader stopped).
func (c *RabbitCluster) Leader(queue string) int {
	c.t.Helper()
	node := -1
	var last string
	Eventually(c.t, 60*time.Second, "quorum queue "+queue+" has a leader on a running node", func() bool {
		out, err := c.Ctl(c.Up(), "list_queues", "-p", c.VHost, "name", "leader")
		last = out
		if err != nil {
			return false
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == queue {
				for i, n := range RabbitClusterNodes {
					c.mu.Lock()
					down := c.down[i]
					c.mu.Unlock()
					if n == f[1] && !down {
						node = i
						return true
					}
				}
			}
		}
		return false
	})
	if node < 0 {
		c.t.Fatalf("no leader for %s: %s", queue, last)
	}
	return node
}

// Stop stops node i's RabbitMQ application (the Erlang node stays up).
func (c *RabbitCluster) Stop(i int) {
	c.t.Helper()
	c.mu.Lock()
	c.down[i] = true
	c.mu.Unlock()
	if out, err := c.Ctl(i, "stop_app"); err != nil {
		c.t.Errorf("stop_app %s: %v: %s", RabbitClusterNodes[i], err, out)
	}
}

// Start starts node i's application again and waits until it serves.
func (c *RabbitCluster) Start(i int) {
	c.t.Helper()
	if out, err := c.Ctl(i, "start_app"); err != nil {
		c.t.Errorf("start_app %s: %v: %s", RabbitClusterNodes[i], err, out)
	}
	if out, err := c.Ctl(i, "await_startup"); err != nil {
		c.t.Errorf("await_startup %s: %v: %s", RabbitClusterNodes[i], err, out)
	}
	c.mu.Lock()
	c.down[i] = false
	c.mu.Unlock()
}

// IsDown reports whether node i was stopped by Stop and not started again.
func (c *RabbitCluster) IsDown(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down[i]
}
