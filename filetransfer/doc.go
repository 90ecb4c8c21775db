// Package filetransfer is the file-transfer integration pattern: daily
// partitioned CSV exports from PostgreSQL to object storage, handed to
// clients as expiring links.
//
// An Exporter runs COPY (query) TO STDOUT WITH (FORMAT csv, HEADER) once per
// day of a range and streams the output straight into a Store, optionally
// gzipped, with a few days in parallel and at most WithParallelism
// database connections. Memory stays flat whatever the file size: no file is
// held in memory or spooled to a temporary file (the folder store writes to
// a temporary name in place and renames it). The bytes are exactly what psql's
// \copy prints for the same query.
//
// Files follow a Hive-style layout that Athena and Spark read as a table
// partitioned by dt:
//
//	<prefix>/<dataset>/dt=YYYY-MM-DD/<dataset>-YYYY-MM-DD.csv[.gz]
//	<prefix>/<dataset>/dt=YYYY-MM-DD/_SUCCESS        the day's DayFile (rows, bytes, sha256, columns), written last
//	<prefix>/<dataset>/_exports/<run>/manifest.json  one Manifest per export, then its _SUCCESS
//
// Re-exporting a day replaces it atomically. ExportChanged re-exports only the
// days that are missing or whose data changed (row count or greatest
// UpdatedColumn, compared with what the day's marker recorded), and Catchup is
// the idempotent hook a scheduled job calls to export yesterday and any gap.
// Every day is read in a READ ONLY transaction under a per-day advisory lock,
// so a Template cannot write (one that is not a plain query fails early with
// ErrInvalidTemplate) and two exporters of one day take turns.
//
// The Exporter takes its connections from anything with
// Acquire(ctx) (*pgxpool.Conn, error): a *pgxpool.Pool, or a replica-aware
// reader such as the one in the shareddb package, so exports can run on a
// streaming replica.
//
// NewExporter and NewLinksHandler take their settings as options (WithPrefix,
// WithGzip, WithParallelism, WithLinkTTL, ...), checked at construction: a
// bad one fails with an error wrapping ErrInvalidOption. The Exporter is
// observed through tracers in the style of pgx's (ExportTracer around each
// call, ExportDayTracer around each day, ExportProgressTracer while a day's
// file is written), installed with WithTracer.
//
// NewLinksHandler serves GET /exports/{dataset}?from=...&to=..., answering
// with one download link per day (URL, rows, bytes, sha256, expiry) so a
// client fetches hundreds of files instead of paginating millions of rows.
//
// Stores live in sub-packages: filetransfer/s3 (S3 and compatible stores;
// presigned links), filetransfer/fs (a local folder; HMAC-signed links served
// by its Handler) and filetransfer/memory (for tests). All three pass the
// conformance suite in filetransfer/storetest. Store errors wrap ErrNotFound,
// ErrStoreNotFound, ErrAccessDenied and ErrUnavailable. Store, Writer,
// Checker, MaxLinkTTL and the key and TTL errors are the contract for
// whoever writes a store; the helpers the bundled stores share are internal.
package filetransfer
