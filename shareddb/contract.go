package shareddb

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Contract declares the tables and columns a reader depends on in a database
// another service owns. Verify compares it with information_schema, so a
// reader learns at deploy time, not at 3 a.m., that a column it reads was
// dropped or changed type. Columns the contract does not name may come and go.
type Contract struct {
	Tables []Table
}

// Table is one table (or view) of a Contract.
type Table struct {
	// Schema holds the table; empty means the connection's current_schema().
	Schema string
	// Name of the table or view. Required.
	Name string
	// Columns the reader uses, with their types.
	Columns []Column
}

// Column is one column of a Table, with the type the reader expects.
type Column struct {
	Name string
	// Type as PostgreSQL spells it or an alias: "bigint" or "int8", "text",
	// "character varying" or "varchar", "timestamptz", "numeric", "uuid",
	// "jsonb", "text[]", an enum's name... Length and precision modifiers
	// ("varchar(20)", "numeric(10,2)") are accepted and not compared.
	Type string
}

// DiffKind says how the database differs from a Contract.
type DiffKind int

// Kinds of difference.
const (
	MissingTable  DiffKind = iota // the table (or view) does not exist, or the role cannot see it
	MissingColumn                 // the column does not exist, or the role cannot see it
	TypeChanged                   // the column's type is not the declared one
)

// Diff is one difference between a Contract and the database.
type Diff struct {
	Kind   DiffKind
	Schema string
	Table  string
	Column string // empty for MissingTable
	Want   string // declared type (MissingColumn, TypeChanged)
	Got    string // actual type (TypeChanged)
}

// String describes the difference in one line.
func (d Diff) String() string {
	t := d.Schema + "." + d.Table
	switch d.Kind {
	case MissingTable:
		return "missing table " + t
	case MissingColumn:
		return "missing column " + t + "." + d.Column + " (want " + d.Want + ")"
	default:
		return "column " + t + "." + d.Column + ": type " + d.Got + ", want " + d.Want
	}
}

// ContractError lists every difference Verify found. errors.Is(err, ErrContract) matches it.
type ContractError struct {
	Diffs []Diff
}

func (e *ContractError) Error() string {
	parts := make([]string, len(e.Diffs))
	for i, d := range e.Diffs {
		parts[i] = d.String()
	}
	return fmt.Sprintf("%v (%d differences): %s", ErrContract, len(e.Diffs), strings.Join(parts, "; "))
}

// Is matches ErrContract.
func (e *ContractError) Is(target error) bool { return target == ErrContract }

// Querier runs a query returning rows: *pgx.Conn, *pgxpool.Pool,
// *pgxpool.Conn, pgx.Tx and a ReplicaReader all have it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// validate rejects a contract that cannot be checked.
func (c *Contract) validate() error {
	if len(c.Tables) == 0 {
		return fmt.Errorf("%w: contract declares no tables", ErrInvalidOption)
	}
	seen := map[string]bool{}
	for _, t := range c.Tables {
		if t.Name == "" {
			return fmt.Errorf("%w: contract: a table has no name", ErrInvalidOption)
		}
		key := t.Schema + "." + t.Name
		if seen[key] {
			return fmt.Errorf("%w: contract: table %s declared twice", ErrInvalidOption, key)
		}
		seen[key] = true
		cols := map[string]bool{}
		for _, col := range t.Columns {
			if col.Name == "" || strings.TrimSpace(col.Type) == "" {
				return fmt.Errorf("%w: contract: table %s: column %q needs a name and a type", ErrInvalidOption, t.Name, col.Name)
			}
			if cols[col.Name] {
				return fmt.Errorf("%w: contract: column %s.%s declared twice", ErrInvalidOption, t.Name, col.Name)
			}
			cols[col.Name] = true
		}
	}
	return nil
}

// Verify checks the contract against information_schema through q (the
// primary, or a replica: their schemas are the same) and returns nil, or one
// *ContractError listing every difference: missing tables, missing columns,
// changed types. The role's privileges matter: information_schema shows only
// what it may use, so a table it cannot read is reported missing.
func (c *Contract) Verify(ctx context.Context, q Querier) error {
	if err := c.validate(); err != nil {
		return err
	}
	tables, err := c.resolve(ctx, q)
	if err != nil {
		return err
	}
	schemas := make([]string, len(tables))
	names := make([]string, len(tables))
	for i, t := range tables {
		schemas[i], names[i] = t.Schema, t.Name
	}
	rows, err := q.Query(ctx, `select t.table_schema::text, t.table_name::text,
 c.column_name::text, c.data_type::text, c.udt_name::text
from information_schema.tables t
left join information_schema.columns c on c.table_schema = t.table_schema and c.table_name = t.table_name
where t.table_schema = any($1) and t.table_name = any($2)`, schemas, names)
	if err != nil {
		return fmt.Errorf("shareddb: contract: read information_schema: %w", err)
	}
	type colInfo struct{ dataType, udt string }
	found := map[string]map[string]colInfo{} // "schema.table" -> column -> type
	for rows.Next() {
		var s, t string
		var col, dt, udt *string
		if err := rows.Scan(&s, &t, &col, &dt, &udt); err != nil {
			rows.Close()
			return fmt.Errorf("shareddb: contract: read information_schema: %w", err)
		}
		key := s + "." + t
		if found[key] == nil {
			found[key] = map[string]colInfo{}
		}
		if col != nil {
			found[key][*col] = colInfo{dataType: deref(dt), udt: deref(udt)}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("shareddb: contract: read information_schema: %w", err)
	}

	var diffs []Diff
	for _, t := range tables {
		cols, ok := found[t.Schema+"."+t.Name]
		if !ok {
			diffs = append(diffs, Diff{Kind: MissingTable, Schema: t.Schema, Table: t.Name})
			continue
		}
		for _, want := range t.Columns {
			got, ok := cols[want.Name]
			switch {
			case !ok:
				diffs = append(diffs, Diff{Kind: MissingColumn, Schema: t.Schema, Table: t.Name, Column: want.Name, Want: want.Type})
			case normType(want.Type) != normType(got.udt):
				diffs = append(diffs, Diff{Kind: TypeChanged, Schema: t.Schema, Table: t.Name, Column: want.Name, Want: want.Type, Got: showType(got.dataType, got.udt)})
			}
		}
	}
	if len(diffs) > 0 {
		return &ContractError{Diffs: diffs}
	}
	return nil
}

// resolve fills empty schemas with the connection's current_schema().
func (c *Contract) resolve(ctx context.Context, q Querier) ([]Table, error) {
	tables := append([]Table(nil), c.Tables...)
	need := false
	for _, t := range tables {
		need = need || t.Schema == ""
	}
	if !need {
		return tables, nil
	}
	rows, err := q.Query(ctx, "select current_schema()::text")
	if err != nil {
		return nil, fmt.Errorf("shareddb: contract: current_schema(): %w", err)
	}
	cur, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[*string])
	if err != nil {
		return nil, fmt.Errorf("shareddb: contract: current_schema(): %w", err)
	}
	if cur == nil {
		return nil, fmt.Errorf("shareddb: contract: tables without a Schema, and current_schema() is null (no schema of search_path exists)")
	}
	for i := range tables {
		if tables[i].Schema == "" {
			tables[i].Schema = *cur
		}
	}
	return tables, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// typeAliases maps spellings to information_schema.columns.udt_name.
var typeAliases = map[string]string{
	"int": "int4", "integer": "int4", "serial": "int4", "serial4": "int4",
	"bigint": "int8", "bigserial": "int8", "serial8": "int8",
	"smallint": "int2", "smallserial": "int2",
	"character varying": "varchar",
	"char":              "bpchar", "character": "bpchar",
	"boolean":                  "bool",
	"timestamp with time zone": "timestamptz", "timestamp without time zone": "timestamp",
	"time without time zone": "time", "time with time zone": "timetz",
	"double precision": "float8", "float": "float8", "real": "float4",
	"decimal": "numeric",
}

// normType reduces a declared or actual type to its udt_name form.
func normType(t string) string {
	t = strings.ToLower(strings.TrimSpace(t))
	if elem, ok := strings.CutSuffix(t, "[]"); ok {
		return "_" + normType(elem)
	}
	if i := strings.IndexByte(t, '('); i >= 0 {
		if j := strings.IndexByte(t[i:], ')'); j >= 0 {
			t = strings.TrimSpace(t[:i] + t[i+j+1:])
		}
	}
	t = strings.Join(strings.Fields(t), " ")
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		t = t[i+1:] // schema-qualified enum or domain
	}
	t = strings.Trim(t, `"`)
	if a, ok := typeAliases[t]; ok {
		return a
	}
	return t
}

// showType names an actual type the way a reader would declare it.
func showType(dataType, udt string) string {
	switch dataType {
	case "ARRAY":
		return strings.TrimPrefix(udt, "_") + "[]"
	case "USER-DEFINED":
		return udt
	}
	return dataType
}

// RevokeTempFromPublicSQL returns the statements that stop roles creating
// temporary tables in database; run them next to RoleSQL's, as an owner of
// the database or a superuser. RoleSQL does not emit them, because they
// change the database for every role, not just the one it creates.
//
// PostgreSQL grants TEMPORARY on every database to PUBLIC, and a privilege
// held through PUBLIC cannot be taken from one role: REVOKE TEMPORARY ...
// FROM role changes nothing. So a RoleSQL role that runs SET
// default_transaction_read_only = off can create temporary tables: private
// to its session, but using disk and catalog space. The only way to refuse
// is to revoke TEMPORARY from PUBLIC, which the first statement does (it
// carries a comment saying so). Roles that still need temporary tables (an
// application, a reporting tool) are granted it directly by the statements
// after it: list them in keep. The database owner and superusers keep it
// anyway. It applies to sessions that have not yet made a temporary table.
// To undo: GRANT TEMPORARY ON DATABASE <database> TO PUBLIC.
func RevokeTempFromPublicSQL(database string, keep ...string) ([]string, error) {
	if database == "" {
		return nil, fmt.Errorf("%w: database name is empty", ErrInvalidOption)
	}
	db := pgx.Identifier{database}.Sanitize()
	stmts := []string{"-- affects every role without its own TEMPORARY grant: PUBLIC holds it by default, and it cannot be revoked from one role\n" +
		"revoke temporary on database " + db + " from public"}
	for _, r := range keep {
		if r == "" {
			return nil, fmt.Errorf("%w: empty role name in keep", ErrInvalidOption)
		}
		stmts = append(stmts, "grant temporary on database "+db+" to "+pgx.Identifier{r}.Sanitize())
	}
	return stmts, nil
}
