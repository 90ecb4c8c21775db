package filetransfer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/fs"
	"github.com/go-integration/patterns/internal/testenv"
)

// rssQuery generates realistic rows (~110 CSV bytes each) on the server.
const rssQuery = `select g as id, 'BK' || lpad(g::text, 10, '0') as ref, {day} as day,
	timestamptz '2024-01-01 00:00:00+00' + (g %% 86400) * interval '1 second' as created_at,
	(g %% 100000)::numeric(12,2) / 100 as amount, md5(g::text) as note
	from generate_series(1, %d) g`

type rssResult struct {
	Rows     int64
	CSVBytes int64
	MaxRSSKB int64
}

// runRSSChild exports rows rows to a folder in a child process (this test
// binary, running only TestRSSChild) and returns the child's peak RSS.
func runRSSChild(t *testing.T, rows int) rssResult {
	t.Helper()
	out := t.TempDir()
	cmd := exec.CommandContext(tctx(t), os.Args[0], "-test.run=^TestRSSChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "FT_RSS_CHILD_ROWS="+strconv.Itoa(rows), "FT_RSS_CHILD_DIR="+out)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, b)
	}
	var r rssResult
	for _, line := range strings.Split(string(b), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "RSS_RESULT "); ok {
			if err := json.Unmarshal([]byte(s), &r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if r.Rows != int64(rows) {
		t.Fatalf("child exported %d rows, want %d:\n%s", r.Rows, rows, b)
	}
	r.MaxRSSKB = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
	return r
}

// Peak memory does not grow with the size of the export. The default
// compares 50,000 and 500,000 rows; EXPORT_RSS_ROWS=5000000 runs the large
// side with five million rows.
func TestPeakRSSIsFlat(t *testing.T) {
	testenv.DatabaseURL(t)
	small, large := 50_000, 500_000
	if v := os.Getenv("EXPORT_RSS_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= small {
			t.Fatalf("EXPORT_RSS_ROWS=%q: want a row count above %d", v, small)
		}
		large = n
	}
	rs, rl := runRSSChild(t, small), runRSSChild(t, large)
	t.Logf("%d rows (%.1f MB CSV): peak RSS %.1f MiB", rs.Rows, float64(rs.CSVBytes)/1e6, float64(rs.MaxRSSKB)/1024)
	t.Logf("%d rows (%.1f MB CSV): peak RSS %.1f MiB", rl.Rows, float64(rl.CSVBytes)/1e6, float64(rl.MaxRSSKB)/1024)
	growth := (rl.MaxRSSKB - rs.MaxRSSKB) * 1024
	dataGrowth := rl.CSVBytes - rs.CSVBytes
	if growth > 16<<20 || growth > dataGrowth/4 {
		t.Fatalf("peak RSS grew by %.1f MiB for %.1f MB more CSV: memory is not flat", float64(growth)/(1<<20), float64(dataGrowth)/1e6)
	}
}

// TestRSSChild is the child process of TestPeakRSSIsFlat.
func TestRSSChild(t *testing.T) {
	rows, _ := strconv.Atoi(os.Getenv("FT_RSS_CHILD_ROWS"))
	if rows == 0 {
		t.Skip("run by TestPeakRSSIsFlat in a child process")
	}
	pool, err := pgxpool.New(context.Background(), testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store, err := fs.New(os.Getenv("FT_RSS_CHILD_DIR"), fs.WithoutSync())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	e, err := filetransfer.NewExporter(pool, store)
	if err != nil {
		t.Fatal(err)
	}
	d := filetransfer.NewDay(2024, 1, 1)
	m, err := e.Export(context.Background(), filetransfer.Dataset{Name: "rss", Template: fmt.Sprintf(rssQuery, rows)}, d, d)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rssResult{Rows: m.Files[0].Rows, CSVBytes: m.Files[0].CSVBytes})
	fmt.Printf("RSS_RESULT %s\n", b)
}
