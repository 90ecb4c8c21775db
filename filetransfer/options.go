package filetransfer

import (
	"compress/gzip"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
	"github.com/go-integration/patterns/internal/hooks"
)

// Defaults of the options.
const (
	// DefaultParallelism is how many days an Exporter exports at once, and
	// so the most database connections it holds (WithParallelism).
	DefaultParallelism = 2
	// DefaultMaxDays is the longest range of days one Export call or links
	// request accepts (WithMaxDays).
	DefaultMaxDays = 366
	// DefaultProgressEvery is the number of CSV bytes between two
	// TraceExportProgress events of one day (WithProgressEvery).
	DefaultProgressEvery = 8 << 20
	// DefaultLinkTTL is how long the links handler's links stay valid
	// (WithLinkTTL).
	DefaultLinkTTL = time.Hour
	// DefaultReadConcurrency is how many day markers the links handler reads
	// from the store at once (WithReadConcurrency).
	DefaultReadConcurrency = 16
)

// Options are typed by what they configure: NewExporter takes
// ExporterOptions, NewLinksHandler LinksOptions, so an option the other
// would ignore does not compile. An Option (WithPrefix, WithMaxDays,
// WithLogger) is both. Every option checks its value; a bad one makes the
// constructor fail with an error wrapping ErrInvalidOption that names it.

// ExporterOption configures an Exporter.
type ExporterOption interface{ applyExporter(*exporterConfig) error }

// LinksOption configures the links handler.
type LinksOption interface{ applyLinks(*linksConfig) error }

// Option configures an Exporter and the links handler alike.
type Option interface {
	ExporterOption
	LinksOption
}

// common holds what both the Exporter and the links handler use.
type common struct {
	prefix  string
	maxDays int
	logger  *slog.Logger
}

type exporterConfig struct {
	common
	gzip          bool
	gzipLevel     int
	parallelism   int
	location      *time.Location
	progressEvery int64
	tracers       []any
}

type linksConfig struct {
	common
	ttl         time.Duration
	datasets    []string
	concurrency int
}

type sharedOpt func(*common) error

func (f sharedOpt) applyExporter(c *exporterConfig) error { return f(&c.common) }
func (f sharedOpt) applyLinks(c *linksConfig) error       { return f(&c.common) }

type exporterOpt func(*exporterConfig) error

func (f exporterOpt) applyExporter(c *exporterConfig) error { return f(c) }

type linksOpt func(*linksConfig) error

func (f linksOpt) applyLinks(c *linksConfig) error { return f(c) }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...)
}

func defaultCommon() common {
	return common{maxDays: DefaultMaxDays, logger: slog.Default()}
}

func newExporterConfig(opts []ExporterOption) (exporterConfig, error) {
	c := exporterConfig{
		common:        defaultCommon(),
		gzipLevel:     gzip.DefaultCompression,
		parallelism:   DefaultParallelism,
		location:      time.UTC,
		progressEvery: DefaultProgressEvery,
	}
	for i, o := range opts {
		if o == nil {
			return c, invalid("option %d is nil", i)
		}
		if err := o.applyExporter(&c); err != nil {
			return c, err
		}
	}
	return c, nil
}

func newLinksConfig(opts []LinksOption) (linksConfig, error) {
	c := linksConfig{common: defaultCommon(), ttl: DefaultLinkTTL, concurrency: DefaultReadConcurrency}
	for i, o := range opts {
		if o == nil {
			return c, invalid("option %d is nil", i)
		}
		if err := o.applyLinks(&c); err != nil {
			return c, err
		}
	}
	return c, nil
}

// WithPrefix puts every key under prefix (see Layout): give the links
// handler the prefix the Exporter writes with. prefix must be a valid key
// (see Store); the error then also wraps ErrInvalidKey. Default "" (the
// store's root).
func WithPrefix(prefix string) Option {
	return sharedOpt(func(c *common) error {
		if prefix != "" {
			if err := storeutil.ValidateKey(prefix); err != nil {
				return invalid("WithPrefix(%q): %w", prefix, err)
			}
		}
		c.prefix = prefix
		return nil
	})
}

// WithMaxDays sets the longest range of days one Export, ExportChanged or
// Catchup call (Exporter) or one request (links handler) accepts; longer
// ranges fail with ErrInvalidRange (the links handler answers 400).
// n must be at least 1. Default DefaultMaxDays (366).
func WithMaxDays(n int) Option {
	return sharedOpt(func(c *common) error {
		if n < 1 {
			return invalid("WithMaxDays(%d): must be at least 1", n)
		}
		c.maxDays = n
		return nil
	})
}

// WithLogger logs what the caller would not otherwise see to l: the
// Exporter a failed file whose Abort failed too (S3: parts may be left
// behind; the export returns the first error), the links handler the store
// failures it answers with 502. Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return sharedOpt(func(c *common) error {
		if l == nil {
			return invalid("WithLogger(nil)")
		}
		c.logger = l
		return nil
	})
}

// WithGzip compresses the files (".csv.gz") at a compress/gzip level:
// gzip.DefaultCompression for most uses, gzip.BestSpeed (roughly three times
// the throughput for files about 20% larger), up to gzip.BestCompression;
// gzip.HuffmanOnly and gzip.NoCompression are accepted too. Default: plain
// CSV.
func WithGzip(level int) ExporterOption {
	return exporterOpt(func(c *exporterConfig) error {
		if level < gzip.HuffmanOnly || level > gzip.BestCompression {
			return invalid("WithGzip(%d): not a compress/gzip level (%d to %d)", level, gzip.HuffmanOnly, gzip.BestCompression)
		}
		c.gzip, c.gzipLevel = true, level
		return nil
	})
}

// WithParallelism sets how many days are exported at once, and so the most
// database connections the Exporter holds. n must be at least 1. Default
// DefaultParallelism (2).
func WithParallelism(n int) ExporterOption {
	return exporterOpt(func(c *exporterConfig) error {
		if n < 1 {
			return invalid("WithParallelism(%d): must be at least 1", n)
		}
		c.parallelism = n
		return nil
	})
}

// WithLocation defines where a day starts and ends for timestamptz day
// columns and the {from}/{to} placeholders, and which day is "yesterday" for
// Catchup. Default time.UTC.
func WithLocation(loc *time.Location) ExporterOption {
	return exporterOpt(func(c *exporterConfig) error {
		if loc == nil {
			return invalid("WithLocation(nil)")
		}
		c.location = loc
		return nil
	})
}

// WithProgressEvery sets how many CSV bytes of a day pass between two
// TraceExportProgress events (see ExportProgressTracer). bytes must be
// positive. Default DefaultProgressEvery (8 MiB).
func WithProgressEvery(bytes int64) ExporterOption {
	return exporterOpt(func(c *exporterConfig) error {
		if bytes <= 0 {
			return invalid("WithProgressEvery(%d): must be positive", bytes)
		}
		c.progressEvery = bytes
		return nil
	})
}

// WithTracer installs t, which must implement at least one of ExportTracer,
// ExportDayTracer and ExportProgressTracer (otherwise the error wraps
// ErrInvalidOption, so a misspelt method is not a silent no-op). It may be
// given several times; tracers are called in the order given.
func WithTracer(t any) ExporterOption {
	return exporterOpt(func(c *exporterConfig) error {
		if err := hooks.Check(t, "filetransfer.ExportTracer, ExportDayTracer, ExportProgressTracer",
			hooks.Is[ExportTracer](), hooks.Is[ExportDayTracer](), hooks.Is[ExportProgressTracer]()); err != nil {
			return invalid("WithTracer: %v", err)
		}
		c.tracers = append(c.tracers, t)
		return nil
	})
}

// WithLinkTTL sets how long each link the handler hands out stays valid:
// more than zero and at most MaxLinkTTL (7 days). Default DefaultLinkTTL
// (1 hour).
func WithLinkTTL(ttl time.Duration) LinksOption {
	return linksOpt(func(c *linksConfig) error {
		if err := storeutil.CheckTTL(ttl); err != nil {
			return invalid("WithLinkTTL(%v): %w", ttl, err)
		}
		c.ttl = ttl
		return nil
	})
}

// WithDatasets restricts the links handler to the named datasets; others
// get 404. Each name must be a valid dataset name (see Dataset.Name); the
// error then also wraps ErrInvalidName. Given several times, the lists add
// up. Default: every dataset.
func WithDatasets(names ...string) LinksOption {
	return linksOpt(func(c *linksConfig) error {
		if len(names) == 0 {
			return invalid("WithDatasets(): no dataset named (leave the option out to serve every dataset)")
		}
		for _, n := range names {
			if err := validateName(n); err != nil {
				return invalid("WithDatasets: %w", err)
			}
		}
		c.datasets = append(c.datasets, names...)
		return nil
	})
}

// WithReadConcurrency sets how many day markers the links handler reads
// from the store at once for one request. n must be at least 1. Default
// DefaultReadConcurrency (16).
func WithReadConcurrency(n int) LinksOption {
	return linksOpt(func(c *linksConfig) error {
		if n < 1 {
			return invalid("WithReadConcurrency(%d): must be at least 1", n)
		}
		c.concurrency = n
		return nil
	})
}
