// Command bench measures the patterns adapters against the raw clients they
// wrap and against peer libraries (Watermill, the Standard Webhooks reference
// library), in one run on one machine, and prints a Markdown table.
//
//	cd bench && go run .
//
// It lives in its own module so that the peer libraries never enter the
// library's go.mod. Every scenario runs a fixed number of messages per round
// (five rounds by default, sides in rotating order; the table shows the
// median and how far the middle rounds spread) under a deadline per run. A
// service that is not reachable gives a "skipped: reason" row instead of
// failing the run. docs/benchmarks.md says what each row measures.
//
// Services: RabbitMQ from AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/)
// in a private vhost made with rabbitmqctl and deleted at the end; Kafka from
// an in-process kfake cluster.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

type config struct {
	rounds int
	scale  float64
	perRun time.Duration
	only   map[string]bool
}

// scaled returns n times the -scale flag, at least 16.
func (c config) scaled(n int) int {
	return max(16, int(math.Round(float64(n)*c.scale)))
}

var scenarios = []struct {
	name string
	run  func(context.Context, config) []*row
}{
	{"memory", memoryScenario},
	{"rabbitmq", rabbitScenario},
	{"rabbitmq-cluster", rabbitClusterScenario},
	{"kafka", kafkaScenario},
	{"webhook", webhookScenario},
}

func main() {
	var (
		cfg        config
		only       string
		cpuprofile string
	)
	flag.IntVar(&cfg.rounds, "rounds", 5, "rounds per scenario; the table shows the median")
	flag.Float64Var(&cfg.scale, "scale", 1, "multiply every scenario's message count by this")
	flag.DurationVar(&cfg.perRun, "timeout", 45*time.Second, "deadline for one side's run of one round")
	flag.StringVar(&only, "only", "", "comma-separated scenarios to run (memory,rabbitmq,rabbitmq-cluster,kafka,webhook); empty runs all")
	flag.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if cfg.rounds < 1 || cfg.scale <= 0 {
		fmt.Fprintln(os.Stderr, "bench: -rounds must be ≥ 1 and -scale > 0")
		os.Exit(2)
	}
	if only != "" {
		cfg.only = map[string]bool{}
		for _, s := range strings.Split(only, ",") {
			cfg.only[strings.TrimSpace(s)] = true
		}
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -cpuprofile:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	started := time.Now()
	machine := machineLine(started)
	var rows []*row
	for _, s := range scenarios {
		if cfg.only != nil && !cfg.only[s.name] {
			continue
		}
		t := time.Now()
		rows = append(rows, s.run(ctx, cfg)...)
		fmt.Fprintf(os.Stderr, "bench: %s done in %s\n", s.name, time.Since(t).Round(time.Millisecond))
	}
	printTable(os.Stdout, machine, rows, cfg, time.Since(started))
	if ctx.Err() != nil {
		pprof.StopCPUProfile() // os.Exit skips the deferred call
		os.Exit(130)
	}
}

// machineLine names the machine: CPU model, cores, Go version, load and date.
func machineLine(now time.Time) string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("Machine: %s, %d cores (GOMAXPROCS %d), %s %s/%s%s, %s",
		cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		loadAverage(", load average at the start "), now.UTC().Format("2006-01-02 15:04 MST"))
}

// loadAverage returns prefix and the 1, 5 and 15 minute load averages, or ""
// where /proc/loadavg is missing.
func loadAverage(prefix string) string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return prefix + strings.Join(f[:3], " ")
}

func printTable(w io.Writer, machine string, rows []*row, cfg config, took time.Duration) {
	fmt.Fprintln(w, machine)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| # | scenario | ours | raw client | Watermill / peer lib | ours/raw | ours/peer |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for i, r := range rows {
		if r.skip != nil {
			fmt.Fprintf(w, "| %d | %s | %s | | | | |\n", i+1, r.scenario, errorCell(r.skip))
			continue
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s |\n", i+1, r.title(),
			r.ours.cell(r.unit), r.raw.cell(r.unit), r.peer.cell(r.unit),
			ratio(r.unit, &r.ours, &r.raw), ratio(r.unit, &r.ours, &r.peer))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Median of %d rounds (webhook rows: %d shorter ones), sides in rotating order; ± is half the range of the middle rounds"+
		" (the fastest and slowest fifth left out); whole run %s%s.\n", cfg.rounds, 3*cfg.rounds, took.Round(time.Second), loadAverage(", load average at the end "))
	fmt.Fprintln(w, "Ratios are ours divided by the other side in the row's unit: above 1 is faster for msg/s, slower for ns/op.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Sides:")
	for i, r := range rows {
		if r.skip != nil {
			fmt.Fprintf(w, "%d. %s.\n", i+1, errorCell(r.skip))
			continue
		}
		labels := []string{"ours: " + r.ours.label, "raw: " + r.raw.label, "peer: " + r.peer.label}
		labels = slices.DeleteFunc(labels, func(s string) bool { return strings.HasSuffix(s, ": ") })
		fmt.Fprintf(w, "%d. %s.\n", i+1, strings.Join(labels, "; "))
	}
}

func (r *row) title() string {
	if r.n > 0 {
		what := "msgs"
		if r.unit == nsPerOp {
			what = "ops"
		}
		return fmt.Sprintf("%s (%s %s/round)", r.scenario, group(float64(r.n)), what)
	}
	return r.scenario
}
