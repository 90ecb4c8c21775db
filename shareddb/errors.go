package shareddb

import (
	"errors"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrNoFreshReplica is returned when no replica is healthy and fresh enough
	// for a read and the fallback policy is FallbackRefuse.
	ErrNoFreshReplica = errors.New("shareddb: no fresh replica")
	// ErrReadOnly is returned (wrapping the server's error) when a read tries to
	// write: every connection of a ReplicaReader is read-only, even on the primary.
	ErrReadOnly = errors.New("shareddb: reader is read-only")
	// ErrRecoveryConflict wraps a replica's "canceling statement due to
	// conflict with recovery" when the read could not be retried elsewhere.
	ErrRecoveryConflict = errors.New("shareddb: query cancelled by a recovery conflict on the replica")
	// ErrNotReplica reports a replica URL that points at a server which is not
	// in recovery (a primary), or at a standby of another cluster.
	ErrNotReplica = errors.New("shareddb: replica is not a standby of the primary")
	// ErrPrimaryInRecovery reports a primary URL that points at a server in recovery (a standby).
	ErrPrimaryInRecovery = errors.New("shareddb: primary is in recovery")
	// ErrInvalidOption reports an option or argument that cannot work: a bad
	// URL, a negative duration, conflicting options (New, With), an invalid
	// Contract (WithContract, Verify, RoleSQL) or role name. The error names
	// the option or the field.
	ErrInvalidOption = errors.New("shareddb: invalid option")
	// ErrContract is matched (errors.Is) by the *ContractError that Verify returns.
	ErrContract = errors.New("shareddb: schema contract violated")
	// ErrInvalidToken is returned by a read given a Token (WithToken) that is
	// ahead of the primary's current WAL position: no write made it, so no
	// replica, nor the primary, could ever serve it.
	ErrInvalidToken = errors.New("shareddb: invalid token")
	// ErrClosed is returned by every read, Token and Verify after Close, and
	// matched by the error of a read Close cancelled after the drain timeout.
	ErrClosed = errors.New("shareddb: reader closed")
)

// NodeError tells which node an error came from. It wraps the server's or
// driver's error and, where one applies, this package's error value for it
// (ErrReadOnly, ErrRecoveryConflict), so errors.Is works on both.
type NodeError struct {
	Node string // node name, as in NodeStatus.Name
	Kind error  // ErrReadOnly, ErrRecoveryConflict or nil
	Err  error  // the server's or driver's error
}

func (e *NodeError) Error() string {
	if e.Kind != nil {
		return "shareddb: " + e.Node + ": " + strings.TrimPrefix(e.Kind.Error(), "shareddb: ") + ": " + e.Err.Error()
	}
	return "shareddb: " + e.Node + ": " + e.Err.Error()
}

// Unwrap returns Kind (when set) and Err.
func (e *NodeError) Unwrap() []error {
	if e.Kind != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Err}
}

// errKind classifies an error returned by a node.
type errKind int

const (
	errOther    errKind = iota
	errConflict         // recovery conflict: retry elsewhere
	errDown             // connection-level failure: node is down, retry elsewhere
	errReadOnly         // write attempt
)

func classify(err error) errKind {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.Contains(pgErr.Message, "conflict with recovery"):
			return errConflict
		case pgErr.Code == "25006": // read_only_sql_transaction
			return errReadOnly
		case strings.HasPrefix(pgErr.Code, "57P"), strings.HasPrefix(pgErr.Code, "08"):
			// admin/crash shutdown, cannot connect now, connection exceptions
			return errDown
		}
		return errOther
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	if errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) {
		return errDown
	}
	if strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "unexpected EOF") {
		return errDown
	}
	return errOther
}

// wrapNodeErr wraps err with the node's name and this package's error value for its kind.
func wrapNodeErr(node string, kind errKind, err error) error {
	e := &NodeError{Node: node, Err: err}
	switch kind {
	case errConflict:
		e.Kind = ErrRecoveryConflict
	case errReadOnly:
		e.Kind = ErrReadOnly
	}
	return e
}
