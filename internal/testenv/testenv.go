// Package testenv finds the services that integration tests need and hands each
// test its own names (schemas, vhosts, exchanges, queues, topics) so tests run
// in parallel and leave nothing behind.
//
// Services come from environment variables with local defaults:
//
//	DATABASE_URL          postgres://postgres@127.0.0.1:5432/test   primary PostgreSQL
//	REPLICA_DATABASE_URL  postgres://postgres@127.0.0.1:5433/test   streaming replica of it
//	AMQP_URL              amqp://guest:guest@127.0.0.1:5672/        RabbitMQ
//	KAFKA_BROKERS         empty: tests start kfake in-process       a real cluster when set
//	S3_ENDPOINT           empty: tests start gofakes3 in-process    a real S3-compatible store
//	INTEGRATION           empty: skip unreachable services          "required": fail instead
//	FAULT_TESTS           empty: skip server-wide fault tests       "1": run them (serially, -p 1)
//
// A test that needs an unreachable service is skipped with the service's name
// and the command that starts it, unless INTEGRATION=required, where it fails.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults used when the matching environment variable is empty.
const (
	DefaultDatabaseURL        = "postgres://postgres@127.0.0.1:5432/test"
	DefaultReplicaDatabaseURL = "postgres://postgres@127.0.0.1:5433/test"
	DefaultAMQPURL            = "amqp://guest:guest@127.0.0.1:5672/"
)

// howToStart is appended to every skip so the reader knows the next step.
const howToStart = "start the services with: scripts/services (or scripts/services --install on a machine without them)"

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Required reports whether INTEGRATION=required is set, so unreachable services fail tests.
func Required() bool { return os.Getenv("INTEGRATION") == "required" }

// Unavailable skips t, or fails it when INTEGRATION=required, naming the service and why.
func Unavailable(t testing.TB, service string, err error) {
	t.Helper()
	msg := service + " is unreachable: " + err.Error() + "; " + howToStart
	if Required() {
		t.Fatal("INTEGRATION=required: " + msg)
	}
	t.Skip(msg)
}

// FaultTest skips t unless FAULT_TESTS=1. Faults that hit a whole server
// (restarting RabbitMQ, pausing replay on the replica) must not run while other
// packages' tests share that server, so .ci/run runs them in a separate serial step.
func FaultTest(t testing.TB) {
	t.Helper()
	if os.Getenv("FAULT_TESTS") != "1" {
		t.Skip("server-wide fault test: runs in the serial step (FAULT_TESTS=1 go test -p 1 -run '^TestFault' ./...)")
	}
}

// Name returns a name unique to this test run: prefix, a short form of the test
// name and random hex, using only [a-z0-9_] so it is valid as a PostgreSQL
// schema, a RabbitMQ queue or vhost and a Kafka topic.
func Name(t testing.TB, prefix string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(prefix)
	b.WriteByte('_')
	n := 0
	for _, r := range strings.ToLower(t.Name()) {
		if n >= 24 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			n++
		case r == '/' || r == '_' || r == '-':
			b.WriteByte('_')
			n++
		}
	}
	b.WriteByte('_')
	b.WriteString(randomHex(4))
	return b.String()
}

func randomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

// reachable dials the host:port of a URL with a short timeout.
func reachable(rawURL, defPort string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), defPort)
	}
	conn, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}

// DatabaseURL returns the primary PostgreSQL URL, skipping (or failing) t when it does not answer.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	u := env("DATABASE_URL", DefaultDatabaseURL)
	if err := pingPostgres(u); err != nil {
		Unavailable(t, "PostgreSQL (DATABASE_URL="+u+")", err)
	}
	return u
}

// ReplicaDatabaseURL returns the replica's URL, skipping (or failing) t when it
// does not answer or is not in recovery.
func ReplicaDatabaseURL(t testing.TB) string {
	t.Helper()
	u := env("REPLICA_DATABASE_URL", DefaultReplicaDatabaseURL)
	if err := pingPostgres(u); err != nil {
		Unavailable(t, "PostgreSQL replica (REPLICA_DATABASE_URL="+u+")", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		Unavailable(t, "PostgreSQL replica (REPLICA_DATABASE_URL="+u+")", err)
	}
	defer conn.Close(ctx)
	var inRecovery bool
	if err := conn.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		Unavailable(t, "PostgreSQL replica (REPLICA_DATABASE_URL="+u+")", err)
	}
	if !inRecovery {
		t.Fatalf("testenv: REPLICA_DATABASE_URL=%s is not in recovery: it is a primary, not a replica", u)
	}
	return u
}

func pingPostgres(u string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

// Schema creates a schema of its own for t on the primary, returns its name and
// a database URL whose search_path is that schema, and drops it when t ends.
func Schema(t testing.TB) (name, databaseURL string) {
	t.Helper()
	base := DatabaseURL(t)
	name = Name(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("testenv: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "create schema "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testenv: create schema %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("testenv: drop schema %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "drop schema "+pgx.Identifier{name}.Sanitize()+" cascade"); err != nil {
			t.Errorf("testenv: drop schema %s: %v", name, err)
		}
	})
	return name, WithSearchPath(base, name)
}

// WithSearchPath returns databaseURL with search_path set to schema.
func WithSearchPath(databaseURL, schema string) string {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return databaseURL
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// AMQPURL returns the RabbitMQ URL, skipping (or failing) t when it does not answer.
func AMQPURL(t testing.TB) string {
	t.Helper()
	u := env("AMQP_URL", DefaultAMQPURL)
	if err := reachable(u, "5672"); err != nil {
		Unavailable(t, "RabbitMQ (AMQP_URL="+u+")", err)
	}
	return u
}

// VHost creates a RabbitMQ virtual host of its own for t with rabbitmqctl, gives
// the URL's user full permissions on it, and deletes it when t ends. Faults a
// test injects into its vhost (rabbitmqctl close_all_connections --vhost V)
// cannot hurt tests in other packages. It returns the vhost and an AMQP URL for it.
// Tests that cannot run rabbitmqctl (a remote broker) are skipped.
func VHost(t testing.TB) (vhost, amqpURL string) {
	t.Helper()
	base := AMQPURL(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("testenv: AMQP_URL: %v", err)
	}
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		Unavailable(t, "rabbitmqctl (needed to create a vhost per test)", err)
	}
	vhost = Name(t, "v")
	user := u.User.Username()
	if user == "" {
		user = "guest"
	}
	if out, err := Rabbitmqctl("add_vhost", vhost); err != nil {
		t.Fatalf("testenv: add_vhost %s: %v: %s", vhost, err, out)
	}
	t.Cleanup(func() {
		if out, err := Rabbitmqctl("delete_vhost", vhost); err != nil {
			t.Logf("testenv: delete_vhost %s: %v: %s", vhost, err, out)
		}
	})
	if out, err := Rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*"); err != nil {
		t.Fatalf("testenv: set_permissions on %s: %v: %s", vhost, err, out)
	}
	u.Path = "/" + vhost
	u.RawPath = ""
	return vhost, u.String()
}

// Rabbitmqctl runs rabbitmqctl with args and returns its combined output.
func Rabbitmqctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	return string(out), err
}

// KafkaBrokers returns the brokers from KAFKA_BROKERS, or nil when tests should
// start kfake in-process.
func KafkaBrokers() []string {
	v := os.Getenv("KAFKA_BROKERS")
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// S3Endpoint returns S3_ENDPOINT, or "" when tests should start gofakes3 in-process.
func S3Endpoint() string { return os.Getenv("S3_ENDPOINT") }

// SchemaGone fails t when schema still exists on the database at
// databaseURL, and drops it so one failed run does not leave it for the next.
// Tests of programs that create and drop their own schema call it.
func SchemaGone(t testing.TB, databaseURL, schema string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatalf("testenv: connect: %v", err)
	}
	defer conn.Close(ctx)
	var left bool
	if err := conn.QueryRow(ctx, `select exists (select from pg_namespace where nspname = $1)`, schema).Scan(&left); err != nil {
		t.Fatalf("testenv: look for schema %s: %v", schema, err)
	}
	if left {
		t.Errorf("schema %s was left behind", schema)
		_, _ = conn.Exec(ctx, "drop schema "+pgx.Identifier{schema}.Sanitize()+" cascade")
	}
}
