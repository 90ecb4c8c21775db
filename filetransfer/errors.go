package filetransfer

import (
	"errors"

	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
)

// Errors shared by the Exporter, the links handler and every Store; test them
// with errors.Is. Stores wrap their client's errors into these so callers never
// need to import an SDK to tell a missing object from refused credentials.
var (
	// ErrNotFound is returned by Store.Open for an object that does not exist.
	ErrNotFound = storeutil.ErrNotFound
	// ErrStoreNotFound is returned when the store itself is missing: an S3
	// bucket that does not exist, a folder that was removed.
	ErrStoreNotFound = errors.New("filetransfer: store does not exist")
	// ErrAccessDenied is returned when the store refused the credentials or
	// the operation (S3 AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch).
	ErrAccessDenied = errors.New("filetransfer: access denied")
	// ErrUnavailable is returned when the store cannot be reached.
	ErrUnavailable = errors.New("filetransfer: store unavailable")
	// ErrInvalidKey is returned for an object key that could escape the store
	// (".." segments, empty segments, a leading "/", backslashes, control
	// characters), is empty or is longer than 1024 bytes.
	ErrInvalidKey = storeutil.ErrInvalidKey
	// ErrInvalidName is returned for a dataset name that is not a plain
	// identifier ([A-Za-z0-9_-], starting with a letter or digit, at most 128 bytes).
	ErrInvalidName = errors.New("filetransfer: invalid dataset name")
	// ErrInvalidDay is returned for a day that is not a valid YYYY-MM-DD date.
	ErrInvalidDay = errors.New("filetransfer: invalid day")
	// ErrInvalidRange is returned for a reversed, unbounded or too long range of days.
	ErrInvalidRange = errors.New("filetransfer: invalid date range")
	// ErrInvalidDataset is returned for a Dataset that cannot be exported as
	// written (no query, both Query and Template, a template without bounds).
	ErrInvalidDataset = errors.New("filetransfer: invalid dataset")
	// ErrInvalidTemplate is returned, wrapped together with
	// ErrInvalidDataset, for a Dataset.Template that is not one plain query:
	// it must start with SELECT, WITH, VALUES or TABLE (after comments and
	// opening parentheses), hold one statement, and a WITH must not contain
	// INSERT, UPDATE, DELETE or MERGE.
	ErrInvalidTemplate = errors.New("filetransfer: template is not a single plain query")
	// ErrNoDayColumn is returned when a dataset's query has no column named
	// DayColumn, or that column is not a date, timestamp or timestamptz.
	ErrNoDayColumn = errors.New("filetransfer: query has no usable day column")
	// ErrInvalidTTL is returned for a link lifetime that is not positive or is
	// longer than MaxLinkTTL.
	ErrInvalidTTL = storeutil.ErrInvalidTTL
	// ErrInvalidOption is returned by NewExporter and NewLinksHandler (and
	// wrapped by the stores' constructors) for an option or argument they
	// cannot use; the error names it.
	ErrInvalidOption = errors.New("filetransfer: invalid option")
	// ErrAborted is returned by Writer.Write and Writer.Commit after Abort,
	// and by Commit after a failed Write.
	ErrAborted = errors.New("filetransfer: write aborted")
)
