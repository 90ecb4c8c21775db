package filetransfer_test

import (
	"compress/gzip"
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/fs"
	fts3 "github.com/go-integration/patterns/filetransfer/s3"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/s3env"
)

// BenchmarkExport exports one day of 1,000,000 bookings (ids, dates, money,
// text) and compares, in the same run, psql's \copy of the same query to
// /dev/null with the Exporter writing to a folder (with and without fsync,
// plain and gzip) and to the in-process S3 fake.
//
//	go test -run '^$' -bench BenchmarkExport -benchtime 3x ./filetransfer
func BenchmarkExport(b *testing.B) {
	const rows = 1_000_000
	d := newDB(b, 4)
	table := d.ident() + ".bookings"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d.exec(b, `create table `+table+` (
		id bigint primary key,
		booking_ref text not null,
		customer_name text not null,
		customer_email text not null,
		check_in date not null,
		check_out date not null,
		created_at timestamptz not null,
		amount numeric(12,2) not null,
		currency char(3) not null,
		status text not null,
		notes text)`)
	d.exec(b, `insert into `+table+` select g, 'BK-' || lpad(g::text, 9, '0'),
		'Customer ' || (g % 50000), 'user' || (g % 50000) || '@example.com',
		date '2024-06-01' + (g % 30), date '2024-06-01' + (g % 30) + 1 + (g % 7),
		timestamptz '2024-05-01 00:00:00+00' + (g % 86400) * interval '1 second',
		((g::bigint * 7919) % 100000)::numeric / 100, (array['EUR','USD','GBP'])[1 + g % 3],
		(array['confirmed','cancelled','pending'])[1 + g % 3],
		case when g % 5 = 0 then null else 'note, with "quotes" ' || g end
		from generate_series(1, $1) g`, rows)
	d.exec(b, "analyze "+table)
	query := "select * from " + table
	psqlQuery := "select * from (" + query + ") q where q.created_at >= '2024-05-01T00:00:00Z' and q.created_at < '2024-05-02T00:00:00Z'"
	ds := filetransfer.Dataset{Name: "bookings", Query: query, DayColumn: "created_at"}
	dd := day(b, "2024-05-01")
	var csvBytes int64

	report := func(b *testing.B) {
		secs := b.Elapsed().Seconds() / float64(b.N)
		b.ReportMetric(float64(rows)/secs, "rows/s")
		if csvBytes > 0 {
			b.ReportMetric(float64(csvBytes)/1e6/secs, "MB/s")
		}
		b.ReportMetric(0, "ns/op")
	}
	run := func(b *testing.B, store filetransfer.Store, opts ...filetransfer.ExporterOption) {
		e := newExporter(b, d, store, opts...)
		b.ResetTimer()
		for range b.N {
			m, err := e.Export(ctx, ds, dd, dd)
			if err != nil {
				b.Fatal(err)
			}
			if m.Files[0].Rows != rows {
				b.Fatalf("%d rows", m.Files[0].Rows)
			}
			csvBytes = m.Files[0].CSVBytes
		}
		b.StopTimer()
		report(b)
	}

	// Warm the cache and learn the CSV size once, so every sub-benchmark
	// (psql first) reports MB/s over the same bytes.
	warm, err := newExporter(b, d, newMemory(b)).Export(ctx, ds, dd, dd)
	if err != nil {
		b.Fatal(err)
	}
	csvBytes = warm.Files[0].CSVBytes

	psql, err := exec.LookPath("psql")
	if err != nil {
		testenv.Unavailable(b, "psql", err)
	}
	runPsql := func(b *testing.B) {
		cmd := exec.CommandContext(ctx, psql, d.base, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", `\copy (`+psqlQuery+`) to stdout with (format csv, header)`)
		// Stdout nil: psql writes to /dev/null.
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("psql: %v %s", err, out)
		}
	}
	b.Run("psql", func(b *testing.B) {
		for range b.N {
			runPsql(b)
		}
		report(b)
	})
	folder := func(opts ...fs.Option) filetransfer.Store {
		s, err := fs.New(b.TempDir(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	}
	// The machine is shared, so load drifts between sub-benchmarks: this one
	// alternates psql and the folder export in each iteration and reports
	// the ratio of their throughputs (target: >= 0.9).
	b.Run("folder-vs-psql", func(b *testing.B) {
		e := newExporter(b, d, folder())
		var tPsql, tFolder time.Duration
		for range b.N {
			start := time.Now()
			runPsql(b)
			mid := time.Now()
			if _, err := e.Export(ctx, ds, dd, dd); err != nil {
				b.Fatal(err)
			}
			tPsql, tFolder = tPsql+mid.Sub(start), tFolder+time.Since(mid)
		}
		b.ReportMetric(float64(csvBytes)/1e6/(tPsql.Seconds()/float64(b.N)), "psql-MB/s")
		b.ReportMetric(float64(csvBytes)/1e6/(tFolder.Seconds()/float64(b.N)), "folder-MB/s")
		b.ReportMetric(tPsql.Seconds()/tFolder.Seconds(), "folder/psql")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("folder", func(b *testing.B) { run(b, folder()) })
	b.Run("folder-nosync", func(b *testing.B) { run(b, folder(fs.WithoutSync())) })
	b.Run("folder-gzip-bestspeed", func(b *testing.B) {
		run(b, folder(), filetransfer.WithGzip(gzip.BestSpeed))
	})
	b.Run("s3fake", func(b *testing.B) {
		env := s3env.New(b)
		s, err := fts3.New(env.Client, env.Bucket)
		if err != nil {
			b.Fatal(err)
		}
		run(b, s)
	})
}
