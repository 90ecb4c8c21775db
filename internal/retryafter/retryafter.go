// Package retryafter parses the HTTP Retry-After header (RFC 9110 10.2.3) for
// every client in this module that honours it (rpc.Transport, webhook.Sender).
package retryafter

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Limit is the longest delay Parse returns; callers cap further with their
// own option. It keeps a huge delay-seconds value from overflowing.
const Limit = 365 * 24 * time.Hour

// Parse reads a Retry-After value, delay-seconds ("120") or an HTTP date
// ("Wed, 21 Oct 2015 07:28:00 GMT"), relative to now. A date in the past
// gives 0; ok is false when the value is empty or invalid.
func Parse(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if ne, isNum := err.(*strconv.NumError); isNum && ne.Err == strconv.ErrRange {
				return Limit, true
			}
			return 0, false
		}
		if secs > uint64(Limit/time.Second) {
			return Limit, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), Limit), true
}
