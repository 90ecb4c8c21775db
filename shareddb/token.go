package shareddb

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// LSN is a PostgreSQL write-ahead-log position (pg_lsn), printed as "16/B374D848".
type LSN uint64

// String formats l the way PostgreSQL does.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// ParseLSN parses PostgreSQL's "hi/lo" hexadecimal form.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("shareddb: invalid LSN %q: want hi/lo in hexadecimal", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("shareddb: invalid LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("shareddb: invalid LSN %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// Token is a read-your-writes token: the primary's WAL position right after a
// write committed. A read given the token (WithToken) is served by a replica
// only once that replica has replayed up to it; otherwise it waits, then
// reads from the primary. The zero Token asks for nothing. A token ahead of
// the primary's current WAL position (made by no write) fails the read at
// once with ErrInvalidToken; ParseToken cannot tell, as it has no server to ask.
//
// A Token travels as text (String, ParseToken): in a cookie, a header or a
// message, from the service that wrote to the one that reads.
type Token struct{ lsn LSN }

// TokenAt returns the token for a WAL position the caller got elsewhere (a
// writer that reads pg_current_wal_lsn() itself, a logical replication
// stream); CurrentToken and ParseToken cover the usual cases.
func TokenAt(l LSN) Token { return Token{lsn: l} }

// LSN returns the WAL position of t.
func (t Token) LSN() LSN { return t.lsn }

// IsZero reports whether t is the zero Token.
func (t Token) IsZero() bool { return t.lsn == 0 }

// String returns the token's text form (the LSN), or "" for the zero Token.
func (t Token) String() string {
	if t.IsZero() {
		return ""
	}
	return t.lsn.String()
}

// ParseToken parses the text form of a Token; "" gives the zero Token.
func ParseToken(s string) (Token, error) {
	if s == "" {
		return Token{}, nil
	}
	l, err := ParseLSN(s)
	return Token{lsn: l}, err
}

// RowQuerier is what CurrentToken and Contract.Verify need: *pgx.Conn,
// *pgxpool.Pool, *pgxpool.Conn and pgx.Tx all have it.
type RowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CurrentToken returns the primary's current WAL position
// (pg_current_wal_lsn()) as a Token. Call it on the primary after the write
// has committed (not inside the writing transaction) and hand the token to
// the reader.
func CurrentToken(ctx context.Context, primary RowQuerier) (Token, error) {
	var lsn int64
	err := primary.QueryRow(ctx, "select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8").Scan(&lsn)
	if err != nil {
		return Token{}, fmt.Errorf("shareddb: current WAL position: %w", err)
	}
	return Token{lsn: LSN(lsn)}, nil
}
