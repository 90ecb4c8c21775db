package shareddb

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-integration/patterns/internal/pgschema"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// RoleOptions shape the login role made by Contract.RoleSQL.
type RoleOptions struct {
	// Password for the role; empty means none (for trust, peer or certificate auth).
	Password string
	// Database, when set, gets GRANT CONNECT (needed where CONNECT was revoked from PUBLIC).
	Database string
	// ConnectionLimit caps the role's connections; zero means no limit.
	ConnectionLimit int
}

// RoleSQL returns the statements that create a least-privilege login role
// for this contract: it can log in, use the declared tables' schemas and
// SELECT the declared columns of the declared tables, nothing else; and its
// sessions default to read-only transactions (default_transaction_read_only).
// Every table needs an explicit Schema. Print them for a DBA, or run them
// with CreateRole.
func (c *Contract) RoleSQL(role string, o RoleOptions) ([]string, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if role == "" {
		return nil, fmt.Errorf("%w: role name is empty", ErrInvalidOption)
	}
	if o.ConnectionLimit < 0 {
		return nil, fmt.Errorf("%w: negative ConnectionLimit", ErrInvalidOption)
	}
	r := ident(role)
	create := "create role " + r + " login nosuperuser nocreatedb nocreaterole noreplication nobypassrls"
	if o.Password != "" {
		create += " password " + pgschema.Literal(o.Password)
	}
	if o.ConnectionLimit > 0 {
		create += fmt.Sprintf(" connection limit %d", o.ConnectionLimit)
	}
	stmts := []string{create, "alter role " + r + " set default_transaction_read_only = on"}
	if o.Database != "" {
		stmts = append(stmts, "grant connect on database "+ident(o.Database)+" to "+r)
	}
	seen := map[string]bool{}
	for _, t := range c.Tables {
		if t.Schema == "" {
			return nil, fmt.Errorf("%w: table %s: RoleSQL needs an explicit Schema", ErrInvalidOption, t.Name)
		}
		if !seen[t.Schema] {
			seen[t.Schema] = true
			stmts = append(stmts, "grant usage on schema "+ident(t.Schema)+" to "+r)
		}
	}
	for _, t := range c.Tables {
		if len(t.Columns) == 0 {
			return nil, fmt.Errorf("%w: table %s.%s declares no columns to grant", ErrInvalidOption, t.Schema, t.Name)
		}
		cols := make([]string, len(t.Columns))
		for i, col := range t.Columns {
			cols[i] = ident(col.Name)
		}
		stmts = append(stmts, "grant select ("+strings.Join(cols, ", ")+") on table "+
			pgx.Identifier{t.Schema, t.Name}.Sanitize()+" to "+r)
	}
	return stmts, nil
}

// Execer runs a statement: *pgx.Conn, *pgxpool.Pool and pgx.Tx have it.
// CreateRole needs one with the right to create roles on the primary, not a
// ReplicaReader (which cannot write).
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// CreateRole runs RoleSQL on admin (a connection to the primary that may
// create roles and grant on the tables), in one transaction when admin can
// begin one. Tables without a Schema get the admin connection's current_schema().
func (c *Contract) CreateRole(ctx context.Context, admin Execer, role string, o RoleOptions) error {
	cc := *c
	if q, ok := admin.(Querier); ok {
		tables, err := c.resolve(ctx, q)
		if err != nil {
			return err
		}
		cc.Tables = tables
	}
	stmts, err := cc.RoleSQL(role, o)
	if err != nil {
		return err
	}
	type beginner interface {
		Begin(ctx context.Context) (pgx.Tx, error)
	}
	if b, ok := admin.(beginner); ok {
		tx, err := b.Begin(ctx)
		if err != nil {
			return fmt.Errorf("shareddb: create role %s: %w", role, err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("shareddb: create role %s: %s: %w", role, s, err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("shareddb: create role %s: commit: %w", role, err)
		}
		return nil
	}
	for _, s := range stmts {
		if _, err := admin.Exec(ctx, s); err != nil {
			return fmt.Errorf("shareddb: create role %s: %s: %w", role, s, err)
		}
	}
	return nil
}

// DropRoleSQL returns the statements that revoke what RoleSQL granted (in
// the current database) and drop the role.
func DropRoleSQL(role string) []string {
	r := ident(role)
	return []string{"drop owned by " + r, "drop role " + r}
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }
