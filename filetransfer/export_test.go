package filetransfer

import "context"

// ExportDayUnchecked exports one day of ds the way Export does, but without
// Dataset validation (and so without the Template check), so tests can show
// that the READ ONLY transaction refuses a writing statement on its own.
func ExportDayUnchecked(ctx context.Context, e *Exporter, ds Dataset, day Day) (DayFile, error) {
	f, _, err := e.exportDay(ctx, ds, day, false)
	return f, err
}
