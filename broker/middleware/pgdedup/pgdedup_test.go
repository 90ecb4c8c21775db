package pgdedup_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/go-integration/patterns/broker/middleware"
	"github.com/go-integration/patterns/broker/middleware/deduptest"
	"github.com/go-integration/patterns/broker/middleware/pgdedup"
	"github.com/go-integration/patterns/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newStore returns a store on a fresh schema, its table created, and the
// schema's database URL.
func newStore(t *testing.T) (*pgdedup.Store, string) {
	t.Helper()
	_, dsn := testenv.Schema(t)
	s, err := pgdedup.New(testenv.Pool(t, dsn))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, dsn
}

func TestConformance(t *testing.T) {
	deduptest.Run(t, deduptest.Harness{
		// The database's clock: no synctest bubble, the suite sleeps.
		New: func(t *testing.T) middleware.DedupStore { s, _ := newStore(t); return s },
	})
}

func TestCleanup(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	c, _ := s.Claim(ctx, "handled-short", time.Minute)
	_ = s.Done(ctx, "handled-short", c.Token, time.Millisecond)
	c, _ = s.Claim(ctx, "handled-long", time.Minute)
	_ = s.Done(ctx, "handled-long", c.Token, time.Hour)
	abandoned, _ := s.Claim(ctx, "abandoned", time.Millisecond)
	_, _ = s.Claim(ctx, "running", time.Hour)
	time.Sleep(5 * time.Millisecond)
	n, err := s.Cleanup(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Cleanup = %d, %v; want 2", n, err)
	}
	if err := s.Done(ctx, "abandoned", abandoned.Token, time.Hour); !errors.Is(err, middleware.ErrStaleClaim) {
		t.Fatalf("Done of a claim Cleanup deleted = %v, want ErrStaleClaim", err)
	}
	for id, want := range map[string]middleware.ClaimResult{"handled-long": middleware.Handled, "running": middleware.InProgress, "handled-short": middleware.Claimed} {
		if c, err := s.Claim(ctx, id, time.Minute); err != nil || c.Result != want {
			t.Fatalf("Claim(%s) = %v, %v; want %v", id, c.Result, err, want)
		}
	}
}

func TestWithTableAndConcurrentMigrate(t *testing.T) {
	schema, _ := testenv.Schema(t)
	pool := testenv.Pool(t, testenv.DatabaseURL(t))
	s, err := pgdedup.New(pool, pgdedup.WithTable(schema+".dedup"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = s.Migrate(context.Background()) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	if c, err := s.Claim(context.Background(), "m", time.Minute); err != nil || c.Result != middleware.Claimed {
		t.Fatalf("Claim = %+v, %v", c, err)
	}
	var n int
	if err := pool.QueryRow(context.Background(), "select count(*) from "+schema+".dedup").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows in %s.dedup = %d, %v", schema, n, err)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	pool := &pgxpool.Pool{}
	for _, tc := range []struct {
		db   pgdedup.DB
		opt  pgdedup.Option
		want string
	}{
		{nil, pgdedup.WithQueryTimeout(time.Second), "New: nil DB"},
		{pool, nil, "New: nil option"},
		{pool, pgdedup.WithTable(""), `WithTable("")`},
		{pool, pgdedup.WithTable("a.b.c"), `WithTable("a.b.c")`},
		{pool, pgdedup.WithTable("a."), `WithTable("a.")`},
		{pool, pgdedup.WithQueryTimeout(0), "WithQueryTimeout(0s)"},
		{pool, pgdedup.WithQueryTimeout(-time.Second), "WithQueryTimeout(-1s)"},
	} {
		s, err := pgdedup.New(tc.db, tc.opt)
		if !errors.Is(err, pgdedup.ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) || s != nil {
			t.Errorf("New with %s = %v; want ErrInvalidOption naming it", tc.want, err)
		}
	}
	// Every bad value is named.
	_, err := pgdedup.New(nil, pgdedup.WithTable(""), pgdedup.WithQueryTimeout(0))
	for _, want := range []string{"nil DB", "WithTable", "WithQueryTimeout"} {
		if !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("New with three bad values = %v; %s not named", err, want)
		}
	}
}
