package shareddb

import (
	"context"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/go-integration/patterns/internal/testenv"
)

const ordersDDL = `create type mood as enum ('happy', 'sad');
create table orders (id bigint primary key, total numeric(10,2) not null, note varchar(200),
  tags text[], placed_at timestamptz not null default now(), customer_mood mood, secret text);
create table audit (id bigint, what text)`

func ordersContract(schema string) *Contract {
	return &Contract{Tables: []Table{{
		Schema: schema, Name: "orders",
		Columns: []Column{
			{Name: "id", Type: "int8"},
			{Name: "total", Type: "numeric(10,2)"},
			{Name: "note", Type: "character varying"},
			{Name: "tags", Type: "text[]"},
			{Name: "placed_at", Type: "timestamp with time zone"},
			{Name: "customer_mood", Type: "mood"},
		},
	}}}
}

func TestContractDrift(t *testing.T) {
	e := setup(t, ordersDDL)
	ctx := context.Background()
	c := ordersContract("") // current_schema() from the URL's search_path
	if err := c.Verify(ctx, e.admin); err != nil {
		t.Fatalf("Verify on the matching schema: %v", err)
	}
	r := e.reader(t, WithContract(c))

	// The owner of the database changes it under the reader.
	e.exec(t, "alter table orders drop column note")
	e.exec(t, "alter table orders alter column total type text")
	err := r.Verify(ctx)
	var ce *ContractError
	if !errors.As(err, &ce) || !errors.Is(err, ErrContract) {
		t.Fatalf("Verify after drift: %v, want a *ContractError", err)
	}
	want := []Diff{
		{Kind: TypeChanged, Schema: e.schema, Table: "orders", Column: "total", Want: "numeric(10,2)", Got: "text"},
		{Kind: MissingColumn, Schema: e.schema, Table: "orders", Column: "note", Want: "character varying"},
	}
	if !reflect.DeepEqual(ce.Diffs, want) {
		t.Fatalf("diffs = %+v\nwant    %+v", ce.Diffs, want)
	}
	for _, s := range []string{"(2 differences)", "column " + e.schema + ".orders.total: type text, want numeric(10,2)", "missing column " + e.schema + ".orders.note"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}

	// A missing table and more drift, all in one error.
	e.exec(t, "alter table orders alter column tags type varchar[]")
	c2 := ordersContract(e.schema)
	c2.Tables = append(c2.Tables, Table{Schema: e.schema, Name: "ghost", Columns: []Column{{Name: "id", Type: "int"}}})
	err = c2.Verify(ctx, e.admin)
	if !errors.As(err, &ce) || len(ce.Diffs) != 4 || ce.Diffs[3].Kind != MissingTable || ce.Diffs[3].Table != "ghost" ||
		ce.Diffs[2].Column != "tags" || ce.Diffs[2].Got != "varchar[]" {
		t.Fatalf("Verify: %v", err)
	}

	// New refuses a drifted contract.
	if _, err := New(ctx, e.primaryURL, e.options(WithContract(c2))...); !errors.Is(err, ErrContract) {
		t.Fatalf("New with a drifted contract: %v", err)
	}
}

func TestContractValidation(t *testing.T) {
	for _, c := range []*Contract{
		{},
		{Tables: []Table{{Name: ""}}},
		{Tables: []Table{{Name: "t"}, {Name: "t"}}},
		{Tables: []Table{{Name: "t", Columns: []Column{{Name: "a"}}}}},
		{Tables: []Table{{Name: "t", Columns: []Column{{Name: "a", Type: "int"}, {Name: "a", Type: "int"}}}}},
	} {
		if err := c.validate(); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("validate(%+v) = %v, want ErrInvalidOption", c, err)
		}
	}
	if _, err := ordersContract("").RoleSQL("r", RoleOptions{}); err == nil || !strings.Contains(err.Error(), "needs an explicit Schema") {
		t.Errorf("RoleSQL without schema: %v", err)
	}
	for want, in := range map[string]string{"int4": "INTEGER", "_int8": "bigint[]", "varchar": "varchar(20)", "timestamptz": "timestamp  with time zone", "mood": "public.mood"} {
		if got := normType(in); got != want {
			t.Errorf("normType(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLeastPrivilegeRole(t *testing.T) {
	e := setup(t, ordersDDL, "insert into orders (id, total, secret) values (1, 9.5, 'pin')", "insert into audit values (1, 'x')")
	ctx := context.Background()
	role := e.schema + "_ro"
	c := ordersContract(e.schema)
	stmts, err := c.RoleSQL(role, RoleOptions{Password: "it's", ConnectionLimit: 5})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stmts[0], `password 'it''s' connection limit 5`) || !strings.Contains(strings.Join(stmts, ";"), "set default_transaction_read_only = on") {
		t.Fatalf("RoleSQL = %q", stmts)
	}
	if err := c.CreateRole(ctx, e.admin, role, RoleOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range DropRoleSQL(role) {
			if _, err := e.admin.Exec(context.Background(), s); err != nil {
				t.Errorf("%s: %v", s, err)
			}
		}
	})

	conn, err := pgx.Connect(ctx, withUser(t, e.primaryURL, role))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	defer conn.Close(ctx)
	var total float64
	if err := conn.QueryRow(ctx, "select total from orders where id = 1").Scan(&total); err != nil || total != 9.5 {
		t.Fatalf("declared column: %v, %v", total, err)
	}
	if err := c.Verify(ctx, conn); err != nil {
		t.Fatalf("Verify as the role: %v", err)
	}
	denied := func(sql string, codes ...string) {
		t.Helper()
		_, err := conn.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || !contains(codes, pgErr.Code) {
			t.Errorf("%s: %v, want SQLSTATE %v", sql, err, codes)
		}
	}
	denied("select secret from orders", "42501")
	denied("select * from audit", "42501")
	denied("insert into orders (id, total) values (2, 1)", "25006", "42501")
	denied("delete from orders", "25006", "42501")
	denied("create table mine (id int)", "25006", "42501")
	// Even with read-only switched off, privileges forbid writing.
	if _, err := conn.Exec(ctx, "set default_transaction_read_only = off"); err != nil {
		t.Fatal(err)
	}
	denied("insert into orders (id, total) values (2, 1)", "42501")
	denied("update orders set total = 0", "42501")
	denied("insert into audit values (2, 'y')", "42501")

	// The role reads through a ReplicaReader too, on the replica once the role has replicated.
	e.waitReplica(t)
	r := e.readerAt(t, withUser(t, e.primaryURL, role), WithReplicas(withUser(t, e.replicaURL, role)), WithContract(c))
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.QueryRow(rctx, "select total from orders where id = 1").Scan(&total); err != nil || !onReplica(t, r) {
		t.Fatalf("read as the role through the reader: %v", err)
	}
}

// PostgreSQL grants TEMPORARY on a database to PUBLIC, so a RoleSQL role can
// create temporary tables once it turns read-only off, and a REVOKE from the
// role alone changes nothing. RevokeTempFromPublicSQL (opt-in, database-wide)
// closes it, and gives it back to the roles listed to keep it. The test runs
// in a database of its own, so the change never reaches "test".
func TestContractRoleCannotCreateTemp(t *testing.T) {
	base := testenv.DatabaseURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	dbName := testenv.Name(t, "db")
	role, keeper := dbName+"_ro", dbName+"_app"
	if _, err := admin.Exec(ctx, "create database "+ident(dbName)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer c.Close(ctx)
		for _, s := range []string{"drop database if exists " + ident(dbName) + " with (force)",
			"drop role if exists " + ident(role), "drop role if exists " + ident(keeper)} {
			if _, err := c.Exec(ctx, s); err != nil {
				t.Errorf("cleanup: %s: %v", s, err)
			}
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + dbName
	dbURL := u.String()
	adminDB, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer adminDB.Close(context.Background())
	run := func(stmts ...string) {
		t.Helper()
		for _, s := range stmts {
			if _, err := adminDB.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	run("create schema s", "create table s.orders (id bigint, total numeric)", "insert into s.orders values (1, 2)",
		"create role "+ident(keeper)+" login")
	c := &Contract{Tables: []Table{{Schema: "s", Name: "orders", Columns: []Column{{Name: "id", Type: "bigint"}}}}}
	stmts, err := c.RoleSQL(role, RoleOptions{Database: dbName})
	if err != nil {
		t.Fatal(err)
	}
	run(stmts...)

	// createTemp opens a new session as user (TEMPORARY is checked when a
	// session first makes its temporary schema) and tries a temporary table.
	createTemp := func(user string) error {
		t.Helper()
		conn, err := pgx.Connect(ctx, withUser(t, dbURL, user))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		defer conn.Close(context.Background())
		var id int64
		if err := conn.QueryRow(ctx, "select id from s.orders").Scan(&id); err != nil && user == role {
			t.Fatalf("the role cannot read its column: %v", err)
		}
		if _, err := conn.Exec(ctx, "set default_transaction_read_only = off"); err != nil {
			t.Fatal(err)
		}
		_, err = conn.Exec(ctx, "create temp table scratch (id int)")
		return err
	}
	refused := func(err error) bool {
		var pgErr *pgconn.PgError
		return errors.As(err, &pgErr) && pgErr.Code == "42501"
	}
	if err := createTemp(role); err != nil {
		t.Fatalf("before the revoke (PUBLIC holds TEMPORARY): %v, want the hole this test closes", err)
	}
	run("revoke temporary on database " + ident(dbName) + " from " + ident(role))
	if err := createTemp(role); err != nil {
		t.Fatalf("a per-role revoke should change nothing (the role holds TEMPORARY through PUBLIC): %v", err)
	}

	revoke, err := RevokeTempFromPublicSQL(dbName, keeper)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%q", revoke)
	run(revoke...)
	if err := createTemp(role); !refused(err) {
		t.Fatalf("after RevokeTempFromPublicSQL: %v, want SQLSTATE 42501", err)
	}
	if err := createTemp(keeper); err != nil {
		t.Fatalf("a role kept by RevokeTempFromPublicSQL: %v", err)
	}
	if _, err := RevokeTempFromPublicSQL(""); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("empty database: %v", err)
	}
	if _, err := RevokeTempFromPublicSQL("d", ""); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("empty role to keep: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
