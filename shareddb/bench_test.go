package shareddb

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/jackc/pgx/v5/pgxpool"
)

// BenchmarkQueryRow compares one QueryRow through a ReplicaReader with the
// same query on a plain pgxpool.Pool to the same replica, in the same run.
// The difference is the routing overhead (health checks run in the background).
func BenchmarkQueryRow(b *testing.B) {
	primary, replica := testenv.DatabaseURL(b), testenv.ReplicaDatabaseURL(b)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, replica)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	r, err := New(ctx, primary, WithReplicas(replica), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if !onReplica(&testing.T{}, r) {
		b.Skip("replica is not fresh: the reader would read the primary")
	}
	const q = "select $1::int4 + 1"
	b.Run("pgxpool", func(b *testing.B) {
		var n int32
		for b.Loop() {
			if err := pool.QueryRow(ctx, q, 1).Scan(&n); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ReplicaReader", func(b *testing.B) {
		var n int32
		for b.Loop() {
			if err := r.QueryRow(ctx, q, 1).Scan(&n); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pgxpool-parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			var n int32
			for pb.Next() {
				if err := pool.QueryRow(ctx, q, 1).Scan(&n); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("ReplicaReader-parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			var n int32
			for pb.Next() {
				if err := r.QueryRow(ctx, q, 1).Scan(&n); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkQueryRowInterleaved alternates the two, call by call, so drift
// in the shared machine's load hits both alike, and reports each one's mean
// and the reader's overhead in percent.
func BenchmarkQueryRowInterleaved(b *testing.B) {
	primary, replica := testenv.DatabaseURL(b), testenv.ReplicaDatabaseURL(b)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, replica)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	r, err := New(ctx, primary, WithReplicas(replica), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	const q = "select $1::int4 + 1"
	var n int32
	var tPool, tReader []time.Duration
	for i := 0; b.Loop(); i++ {
		// Alternate which goes first, too.
		first, second := func() { must(b, pool.QueryRow(ctx, q, 1).Scan(&n)) }, func() { must(b, r.QueryRow(ctx, q, 1).Scan(&n)) }
		d1, d2 := &tPool, &tReader
		if i%2 == 1 {
			first, second, d1, d2 = second, first, d2, d1
		}
		s := time.Now()
		first()
		m := time.Now()
		second()
		e := time.Now()
		*d1 = append(*d1, m.Sub(s))
		*d2 = append(*d2, e.Sub(m))
	}
	if r.Status()[1].Routed == 0 {
		b.Fatal("the reader did not read the replica")
	}
	// Medians: the shared machine's hiccups hit single calls, not the typical one.
	mp, mr := median(tPool), median(tReader)
	b.ReportMetric(float64(mp.Nanoseconds()), "pgxpool-median-ns")
	b.ReportMetric(float64(mr.Nanoseconds()), "reader-median-ns")
	b.ReportMetric(100*(float64(mr)-float64(mp))/float64(mp), "overhead-%")
}

func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

func must(b *testing.B, err error) {
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRoute measures routing alone: choosing a node from the checkers' state.
func BenchmarkRoute(b *testing.B) {
	primary, replica := testenv.DatabaseURL(b), testenv.ReplicaDatabaseURL(b)
	r, err := New(context.Background(), primary, WithReplicas(replica, replica), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.route(ctx, &r.View.o, 0); err != nil {
			b.Fatal(err)
		}
	}
}
