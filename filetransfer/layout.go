package filetransfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
)

// File and folder names of the layout:
//
//	<prefix>/<dataset>/dt=YYYY-MM-DD/<dataset>-YYYY-MM-DD.csv[.gz]   the day's data
//	<prefix>/<dataset>/dt=YYYY-MM-DD/_SUCCESS                          the day's DayFile (JSON), written last
//	<prefix>/<dataset>/_exports/<run>/manifest.json                    one Manifest per export
//	<prefix>/<dataset>/_exports/<run>/_SUCCESS                         written after the manifest
//
// Names starting with "_" or "." are skipped by Hive, Athena and Spark, so a
// table whose location is <prefix>/<dataset>/ partitioned by dt reads only the
// CSV files.
const (
	SuccessName  = "_SUCCESS"
	ManifestName = "manifest.json"
	ExportsDir   = "_exports"
)

// Layout builds the keys of a dataset's files under a prefix.
type Layout struct {
	// Prefix is prepended to every key ("" for the store's root). It must be
	// a valid key itself (see Store), or ReadDay fails with ErrInvalidKey.
	Prefix string
}

func (l Layout) join(elem ...string) string {
	if l.Prefix != "" {
		elem = append([]string{l.Prefix}, elem...)
	}
	return path.Join(elem...)
}

// check validates the prefix and the dataset name.
func (l Layout) check(dataset string) error {
	if l.Prefix != "" {
		if err := storeutil.ValidateKey(l.Prefix); err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
	}
	return validateName(dataset)
}

// DayDir returns <prefix>/<dataset>/dt=YYYY-MM-DD.
func (l Layout) DayDir(dataset string, day Day) string {
	return l.join(dataset, "dt="+day.String())
}

// DataKey returns the key of a day's CSV file.
func (l Layout) DataKey(dataset string, day Day, gzip bool) string {
	name := dataset + "-" + day.String() + ".csv"
	if gzip {
		name += ".gz"
	}
	return path.Join(l.DayDir(dataset, day), name)
}

// DayMarkerKey returns the key of a day's _SUCCESS marker (a DayFile in JSON).
func (l Layout) DayMarkerKey(dataset string, day Day) string {
	return path.Join(l.DayDir(dataset, day), SuccessName)
}

// ExportDir returns the folder of one export's manifest.
func (l Layout) ExportDir(dataset, run string) string {
	return l.join(dataset, ExportsDir, run)
}

// Column is one column of an exported file and its PostgreSQL type, as
// format_type prints it (e.g. "numeric(12,2)", "timestamp with time zone").
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// SourceState records what the source held for a day when it was exported:
// the row count and the greatest value of the dataset's UpdatedColumn (as
// PostgreSQL printed it). Incremental exports re-export a day when it differs.
type SourceState struct {
	Rows       int64  `json:"rows"`
	MaxUpdated string `json:"max_updated,omitempty"`
}

// DayFile describes one exported day. It is stored as the day's _SUCCESS
// marker and listed in the export's manifest.
type DayFile struct {
	Dataset     string       `json:"dataset"`
	Day         Day          `json:"day"`
	Key         string       `json:"key"`
	Rows        int64        `json:"rows"`
	Bytes       int64        `json:"bytes"`     // stored size (compressed when gzip)
	CSVBytes    int64        `json:"csv_bytes"` // size of the CSV before compression
	SHA256      string       `json:"sha256"`    // hex SHA-256 of the stored bytes
	Gzip        bool         `json:"gzip"`
	Columns     []Column     `json:"columns"`
	GeneratedAt time.Time    `json:"generated_at"`
	Source      *SourceState `json:"source,omitempty"`
}

// Manifest describes one export: the days it wrote and the days it found up
// to date. It is stored at <prefix>/<dataset>/_exports/<run>/manifest.json.
type Manifest struct {
	Dataset     string    `json:"dataset"`
	From        Day       `json:"from"`
	To          Day       `json:"to"`
	GeneratedAt time.Time `json:"generated_at"`
	Files       []DayFile `json:"files"`
	Unchanged   []Day     `json:"unchanged,omitempty"`
	// Key is where the manifest was stored ("" when nothing was written).
	Key string `json:"-"`
}

// ReadDay returns the DayFile recorded in a day's _SUCCESS marker, or an error
// wrapping ErrNotFound when the day has not been exported completely.
func ReadDay(ctx context.Context, s Store, l Layout, dataset string, day Day) (DayFile, error) {
	if err := l.check(dataset); err != nil {
		return DayFile{}, err
	}
	if day.IsZero() {
		return DayFile{}, fmt.Errorf("%w: zero day", ErrInvalidDay)
	}
	b, err := storeutil.ReadAll(ctx, s, l.DayMarkerKey(dataset, day))
	if err != nil {
		return DayFile{}, err
	}
	var f DayFile
	if err := json.Unmarshal(b, &f); err != nil {
		return DayFile{}, fmt.Errorf("filetransfer: corrupt marker %s: %w", l.DayMarkerKey(dataset, day), err)
	}
	return f, nil
}

// isNotFound reports whether err means "absent".
func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
