package testenv

import (
	"context"
	"net"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestNameIsUniqueAndSafe(t *testing.T) {
	a, b := Name(t, "q"), Name(t, "q")
	if a == b {
		t.Fatalf("two names are equal: %q", a)
	}
	if !regexp.MustCompile(`^q_[a-z0-9_]+_[0-9a-f]{8}$`).MatchString(a) {
		t.Fatalf("name %q has unsafe characters", a)
	}
}

func TestSchemaIsCreatedAndDropped(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		var dsn string
		name, dsn = Schema(t)
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var sp string
		if err := conn.QueryRow(ctx, "show search_path").Scan(&sp); err != nil {
			t.Fatal(err)
		}
		if sp != name {
			t.Fatalf("search_path = %q, want %q", sp, name)
		}
		if _, err := conn.Exec(ctx, "create table x (id int)"); err != nil {
			t.Fatal(err)
		}
	})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "select count(*) from information_schema.schemata where schema_name=$1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("schema %s survived its test", name)
	}
}

func TestReplicaIsInRecovery(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, ReplicaDatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rec bool
	if err := conn.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&rec); err != nil {
		t.Fatal(err)
	}
	if !rec {
		t.Fatal("REPLICA_DATABASE_URL points at a primary")
	}
}

func TestVHostAcceptsConnections(t *testing.T) {
	vhost, u := VHost(t)
	pu, err := url.Parse(u)
	if err != nil || pu.Path != "/"+vhost {
		t.Fatalf("url %q does not name vhost %q (%v)", u, vhost, err)
	}
	out, err := Rabbitmqctl("list_vhosts")
	if err != nil {
		t.Fatal(err, out)
	}
	if !regexp.MustCompile(`(?m)^` + vhost + `$`).MatchString(out) {
		t.Fatalf("vhost %s not listed: %s", vhost, out)
	}
	c, err := net.DialTimeout("tcp", pu.Host, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
