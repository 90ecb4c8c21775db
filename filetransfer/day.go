package filetransfer

import (
	"fmt"
	"time"
)

// Day is a calendar date, the unit of partitioning. The zero Day is invalid
// and stands for "unbounded" in a range, which the Exporter rejects.
type Day struct {
	t time.Time // midnight UTC of the date; zero for the zero Day
}

// NewDay returns the Day year-month-day (normalised like time.Date).
func NewDay(year int, month time.Month, day int) Day {
	return Day{t: time.Date(year, month, day, 0, 0, 0, 0, time.UTC)}
}

// DayOf returns the calendar date of t in t's location.
func DayOf(t time.Time) Day {
	y, m, d := t.Date()
	return NewDay(y, m, d)
}

// ParseDay parses a strict YYYY-MM-DD date. Anything else, including path
// fragments such as "../2024-01-01", returns an error wrapping ErrInvalidDay.
func ParseDay(s string) (Day, error) {
	if len(s) != len("2006-01-02") {
		return Day{}, fmt.Errorf("%w: %q is not YYYY-MM-DD", ErrInvalidDay, s)
	}
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return Day{}, fmt.Errorf("%w: %q is not YYYY-MM-DD", ErrInvalidDay, s)
	}
	if t.Year() < 1 || t.Year() > 9999 {
		return Day{}, fmt.Errorf("%w: %q is out of range", ErrInvalidDay, s)
	}
	return Day{t: t}, nil
}

// IsZero reports whether d is the zero (unbounded) Day.
func (d Day) IsZero() bool { return d.t.IsZero() }

// String returns d as YYYY-MM-DD, or "" for the zero Day.
func (d Day) String() string {
	if d.IsZero() {
		return ""
	}
	return d.t.Format("2006-01-02")
}

// AddDays returns d moved by n days.
func (d Day) AddDays(n int) Day { return Day{t: d.t.AddDate(0, 0, n)} }

// Before reports whether d is earlier than o.
func (d Day) Before(o Day) bool { return d.t.Before(o.t) }

// Start returns midnight at the start of d in loc (UTC when loc is nil).
func (d Day) Start(loc *time.Location) time.Time {
	if loc == nil {
		loc = time.UTC
	}
	y, m, dd := d.t.Date()
	return time.Date(y, m, dd, 0, 0, 0, 0, loc)
}

// MarshalText implements encoding.TextMarshaler (YYYY-MM-DD).
func (d Day) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (YYYY-MM-DD).
func (d *Day) UnmarshalText(b []byte) error {
	v, err := ParseDay(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Days returns every day from from to to, both included. It returns an error
// wrapping ErrInvalidRange when either end is zero (unbounded), when to is
// before from, or when the range holds more than maxDays days (maxDays <= 0
// means no limit).
func Days(from, to Day, maxDays int) ([]Day, error) {
	if from.IsZero() || to.IsZero() {
		return nil, fmt.Errorf("%w: both ends are required (from=%q to=%q)", ErrInvalidRange, from, to)
	}
	if to.Before(from) {
		return nil, fmt.Errorf("%w: to %s is before from %s", ErrInvalidRange, to, from)
	}
	n := int(to.t.Sub(from.t).Hours()/24) + 1
	if maxDays > 0 && n > maxDays {
		return nil, fmt.Errorf("%w: %s..%s is %d days, more than the limit of %d", ErrInvalidRange, from, to, n, maxDays)
	}
	days := make([]Day, 0, n)
	for d := from; !to.Before(d); d = d.AddDays(1) {
		days = append(days, d)
	}
	return days, nil
}
