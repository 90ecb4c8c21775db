// Package pgschema applies PostgreSQL DDL safely when several processes do it
// at once (every instance of a service creating its tables at start-up).
//
// Concurrent "create table if not exists" statements for the same table race
// in the catalog: all but one can fail with a duplicate key on
// pg_type_typname_nsp_index. Apply serializes them with a transaction-level
// advisory lock (pg_advisory_xact_lock) on a key derived from a constant
// string, the approach of broker/outbox's Table.Migrate.
package pgschema

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Execer runs SQL: *pgxpool.Pool, *pgx.Conn, pgx.Tx and pgxpool.Conn do.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Locked returns ddl preceded by a statement that takes the transaction-level
// advisory lock pg_advisory_xact_lock(hashtext(key)). Sent in one Exec
// without arguments (pgx then uses the simple protocol), the statements run
// as one implicit transaction, so the lock is held until the DDL commits or
// rolls back; inside an explicit transaction it is held until that ends.
func Locked(key, ddl string) string {
	return "select pg_advisory_xact_lock(hashtext(" + Literal(key) + "));\n" + ddl
}

// Literal quotes s as an SQL string literal, for the statements that take
// no parameters: DDL run under Locked, replication commands, SET
// TRANSACTION SNAPSHOT, a role's password. It doubles single quotes, which
// is enough with standard_conforming_strings on (PostgreSQL's default
// since 9.1, and what pgx requires of the simple protocol); the
// replication grammar accepts no other form of string.
func Literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Apply runs ddl through db under the advisory lock of key (see Locked).
// Callers that apply the same DDL must use the same key: derive it from a
// constant and the object's name, such as "myapp/store create table " + table.
func Apply(ctx context.Context, db Execer, key, ddl string) error {
	_, err := db.Exec(ctx, Locked(key, ddl))
	return err
}

// ParseTable checks a table name, "table" or "schema.table" (case-sensitive),
// and returns it quoted for SQL (ident) and its last part (raw, for deriving
// index and constraint names). Callers wrap the error with their own value.
func ParseTable(name string) (ident, raw string, err error) {
	parts := strings.Split(name, ".")
	if name == "" || len(parts) > 2 {
		return "", "", errors.New("want a name or schema.name")
	}
	for _, p := range parts {
		if p == "" {
			return "", "", errors.New("empty part")
		}
	}
	return pgx.Identifier(parts).Sanitize(), parts[len(parts)-1], nil
}
