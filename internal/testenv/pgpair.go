package testenv

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The private PostgreSQL pair of scripts/pg-pair, for failover tests: never
// the shared servers on 5432/5433, which other packages' tests use meanwhile.
const (
	PairPrimaryURL = "postgres://postgres@127.0.0.1:5440/test" // pair_a, the primary after Pair
	PairStandbyURL = "postgres://postgres@127.0.0.1:5441/test" // pair_b, its synchronous standby
	// PairURL names both hosts: pgx connects to whichever is read-write.
	PairURL = "postgres://postgres@127.0.0.1:5440,127.0.0.1:5441/test?target_session_attrs=read-write"
)

// PGPair is the private primary+standby pair while a failover test runs.
type PGPair struct {
	script string
}

// Pair starts the private pair (scripts/pg-pair start: pair_a primary on
// 5440, pair_b its synchronous standby on 5441), and when t ends restores it
// the same way (rebuilding pair_b from pair_a after a failover) and drops
// what tests left on it: schemas named t_*, publications and inactive
// replication slots. It is a server-wide fault: the caller runs
// FaultTest first. Without PostgreSQL installed or root, t is skipped (or
// fails with INTEGRATION=required).
func Pair(t testing.TB) *PGPair {
	t.Helper()
	script, err := pairScript()
	if err != nil {
		Unavailable(t, "scripts/pg-pair", err)
	}
	if os.Geteuid() != 0 {
		Unavailable(t, "scripts/pg-pair", errors.New("it runs pg_createcluster and pg_ctlcluster: needs root"))
	}
	if _, err := exec.LookPath("pg_ctlcluster"); err != nil {
		Unavailable(t, "PostgreSQL (pg_ctlcluster for scripts/pg-pair)", err)
	}
	p := &PGPair{script: script}
	if out, err := p.run("start"); err != nil {
		t.Fatalf("testenv: scripts/pg-pair start: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := p.run("start"); err != nil {
			t.Errorf("testenv: restoring the pair: scripts/pg-pair start: %v\n%s", err, out)
			return
		}
		if err := pairClean(); err != nil {
			t.Errorf("testenv: cleaning the pair: %v", err)
		}
	})
	return p
}

// Crash stops the primary, pair_a, at once (pg_ctlcluster stop -m
// immediate: no shutdown checkpoint, connections cut), as a crash would.
func (p *PGPair) Crash(t testing.TB) {
	t.Helper()
	if out, err := p.run("crash"); err != nil {
		t.Fatalf("testenv: scripts/pg-pair crash: %v\n%s", err, out)
	}
}

// Promote promotes pair_b and returns once it accepts writes.
func (p *PGPair) Promote(t testing.TB) {
	t.Helper()
	if out, err := p.run("promote"); err != nil {
		t.Fatalf("testenv: scripts/pg-pair promote: %v\n%s", err, out)
	}
}

// Schema creates a schema of its own for t on the pair's primary and
// returns its name and URLs whose search_path is that schema: the
// two-host URL (PairURL), pair_a's and pair_b's. The schema reaches pair_b
// by replication and is dropped when the pair is restored.
func (p *PGPair) Schema(t testing.TB) (name, pairURL, primaryURL, standbyURL string) {
	t.Helper()
	name = Name(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, PairPrimaryURL)
	if err != nil {
		t.Fatalf("testenv: connect to the pair: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "create schema "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testenv: create schema %s on the pair: %v", name, err)
	}
	return name, PairURL + "&search_path=" + name, WithSearchPath(PairPrimaryURL, name), WithSearchPath(PairStandbyURL, name)
}

func (p *PGPair) run(cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, p.script, cmd).CombinedOutput()
	return string(out), err
}

// pairScript finds scripts/pg-pair above the working directory (a test runs
// in its package's directory).
func pairScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		s := filepath.Join(dir, "scripts", "pg-pair")
		if _, err := os.Stat(s); err == nil {
			return s, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/pg-pair not found above the working directory")
		}
		dir = parent
	}
}

// pairClean drops what failover tests leave on the restored primary. A
// replication slot left behind would keep WAL forever.
func pairClean() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, PairPrimaryURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var errs []error
	for _, q := range []string{
		`select pg_drop_replication_slot(slot_name) from pg_replication_slots where not active`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			errs = append(errs, err)
		}
	}
	for _, list := range []string{
		`select quote_ident(nspname) from pg_namespace where nspname like 't\_%'`,
		`select quote_ident(pubname) from pg_publication`,
	} {
		rows, _ := conn.Query(ctx, list) // an error comes back from CollectRows
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, n := range names {
			kind := "schema " + n + " cascade"
			if strings.Contains(list, "pg_publication") {
				kind = "publication " + n
			}
			if _, err := conn.Exec(ctx, "drop "+kind); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
