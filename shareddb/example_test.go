package shareddb_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-integration/patterns/shareddb"
)

// A reader for the orders service's database: reads go to the replica when
// it is at most 2 s behind, else to the primary, through read-only connections.
func Example() {
	ctx := context.Background()
	contract := &shareddb.Contract{Tables: []shareddb.Table{{
		Schema: "orders", Name: "orders",
		Columns: []shareddb.Column{{Name: "id", Type: "bigint"}, {Name: "total", Type: "numeric"}},
	}}}
	r, err := shareddb.New(ctx, "postgres://reader@orders-db:5432/orders",
		shareddb.WithReplicas("postgres://reader@orders-db-replica:5432/orders"),
		shareddb.WithMaxLag(2*time.Second),
		shareddb.WithContract(contract), // New fails, listing every difference, if the schema drifted
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()

	var total float64
	err = r.QueryRow(ctx, "select total from orders.orders where id = $1", 42).Scan(&total)
	fmt.Println(total, err)
}

// A read that must see a write the caller just made: the writer hands over
// a Token, the reader waits for a replica that has replayed it (or reads
// the primary at the deadline).
func ExampleWithToken() {
	var r *shareddb.ReplicaReader                // from shareddb.New
	tok, err := shareddb.ParseToken("0/3016B70") // e.g. from a header set by the writer's CurrentToken
	if err != nil || r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var n int
	_ = r.With(shareddb.WithToken(tok)).QueryRow(ctx, "select count(*) from orders.orders").Scan(&n)
}

// A tracer counting reads per route and logging retries: a value
// implementing any of QueryTracer, QueryRetryTracer, CheckTracer and
// NodeChangeTracer, installed with WithTracer.
type routeCounter struct {
	mu     sync.Mutex
	routes map[shareddb.Route]int
}

func (c *routeCounter) TraceQueryStart(ctx context.Context, d shareddb.TraceQueryStartData) context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.routes[d.Route]++
	return ctx
}

func (c *routeCounter) TraceQueryEnd(context.Context, shareddb.TraceQueryEndData) {}

func (c *routeCounter) TraceQueryRetry(_ context.Context, d shareddb.TraceQueryRetryData) {
	fmt.Printf("retried after %v on %s\n", d.Err, d.Node)
}

func ExampleWithTracer() {
	counter := &routeCounter{routes: map[shareddb.Route]int{}}
	r, err := shareddb.New(context.Background(), "postgres://reader@orders-db:5432/orders",
		shareddb.WithReplicas("postgres://reader@orders-db-replica:5432/orders"),
		shareddb.WithTracer(counter))
	if err != nil {
		return
	}
	defer r.Close()
}

func ExampleContract_RoleSQL() {
	c := &shareddb.Contract{Tables: []shareddb.Table{{
		Schema: "orders", Name: "orders",
		Columns: []shareddb.Column{{Name: "id", Type: "bigint"}, {Name: "total", Type: "numeric"}},
	}}}
	stmts, err := c.RoleSQL("billing_reader", shareddb.RoleOptions{Database: "orders"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range stmts {
		fmt.Println(s + ";")
	}
	// Output:
	// create role "billing_reader" login nosuperuser nocreatedb nocreaterole noreplication nobypassrls;
	// alter role "billing_reader" set default_transaction_read_only = on;
	// grant connect on database "orders" to "billing_reader";
	// grant usage on schema "orders" to "billing_reader";
	// grant select ("id", "total") on table "orders"."orders" to "billing_reader";
}

func ExampleParseToken() {
	tok, err := shareddb.ParseToken("16/B374D848")
	fmt.Println(tok, uint64(tok.LSN()), err)
	// Output: 16/B374D848 97500059720 <nil>
}

// A reader that follows a primary failover: the primary's URL names both
// hosts, and the pool connects to whichever is out of recovery
// (target_session_attrs=read-write; every shareddb session is read-only, so
// shareddb checks pg_is_in_recovery() for it). After a failover the old
// replica reports Promoted; reads that need the primary reach it through
// the same URL (docs/failover.md).
func ExampleNew_failover() {
	ctx := context.Background()
	r, err := shareddb.New(ctx,
		"postgres://reader@db-a:5432,db-b:5432/orders?target_session_attrs=read-write&connect_timeout=2",
		shareddb.WithReplicas("postgres://reader@db-b:5432/orders"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	for _, st := range r.Status() {
		if st.Promoted {
			fmt.Printf("%s (%s) was promoted: point the replica URLs at the new standbys\n", st.Name, st.Addr)
		}
	}
}
