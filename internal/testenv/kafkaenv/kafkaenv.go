// Package kafkaenv gives Kafka tests a cluster: the one named by KAFKA_BROKERS
// when it is set, otherwise an in-process kfake cluster (github.com/twmb/franz-go/pkg/kfake)
// that speaks the real Kafka wire protocol and is closed when the test ends.
//
// kfake is tuned for quick tests: a 200 ms minimum group session timeout so
// tests can shorten consumer-group rebalances, and 4 partitions for topics
// created with the broker default.
package kafkaenv

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/go-integration/patterns/internal/testenv"
)

// DefaultPartitions is the partition count kfake gives a topic created with
// the broker default (-1 partitions).
const DefaultPartitions = 4

// Brokers returns seed brokers for t: KAFKA_BROKERS when set (skipping or
// failing t, per INTEGRATION, when none answers), otherwise a fresh kfake
// cluster started for t alone.
func Brokers(t testing.TB) []string {
	t.Helper()
	if bs := testenv.KafkaBrokers(); bs != nil {
		if err := reachable(bs); err != nil {
			testenv.Unavailable(t, fmt.Sprintf("Kafka (KAFKA_BROKERS=%v)", bs), err)
		}
		return bs
	}
	c, err := Start()
	if err != nil {
		t.Fatalf("kafkaenv: start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// Start starts an in-process kfake cluster with the settings tests rely on.
// The caller closes it.
func Start(opts ...kfake.Opt) (*kfake.Cluster, error) {
	base := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(DefaultPartitions),
		kfake.GroupMinSessionTimeout(200 * time.Millisecond),
		kfake.Ports(0),
	}
	return kfake.NewCluster(append(base, opts...)...)
}

// External reports whether tests run against a real cluster (KAFKA_BROKERS set).
func External() bool { return testenv.KafkaBrokers() != nil }

func reachable(brokers []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var d net.Dialer
	var last error
	for _, b := range brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			return conn.Close()
		}
		last = err
	}
	return last
}
