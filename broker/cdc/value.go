package cdc

import (
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

// Unavailable is what a TOASTed column that an update did not change holds
// in "after" (and in "before" when PostgreSQL did not send it): pgoutput
// does not send such values, and writing null would claim the column was
// emptied. It is Debezium's default placeholder
// (unavailable.value.placeholder), so consumers written for Debezium
// already know it.
const Unavailable = "__debezium_unavailable_value"

// conv appends the JSON form of one column's text value to dst.
type conv func(dst, src []byte) []byte

// types knows PostgreSQL's built-in types, to find array element types.
var types = pgtype.NewMap()

// converter returns the conv of a column of type oid with modifier typmod
// (-1 when none): Debezium's default mapping with time.precision.mode =
// adaptive, decimal.handling.mode per dm, binary.handling.mode = bytes
// (base64 in JSON). Types it does not know are written as strings, their
// PostgreSQL text form.
func converter(oid uint32, typmod int32, dm DecimalMode) conv {
	switch oid {
	case pgtype.BoolOID:
		return convBool
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID, pgtype.XIDOID:
		return convNumber
	case pgtype.Float4OID, pgtype.Float8OID:
		return convFloat
	case pgtype.NumericOID:
		if dm == DecimalDouble {
			return convFloat
		}
		return convString
	case pgtype.ByteaOID:
		return convBytea
	case pgtype.DateOID:
		return convDate
	case pgtype.TimestampOID:
		if typmod >= 0 && typmod <= 3 {
			return convTimestampMillis
		}
		return convTimestampMicros
	case pgtype.TimestamptzOID:
		return convTimestamptz
	case pgtype.TimeOID:
		if typmod >= 0 && typmod <= 3 {
			return convTimeMillis
		}
		return convTimeMicros
	}
	if t, ok := types.TypeForOID(oid); ok {
		if ac, ok := t.Codec.(*pgtype.ArrayCodec); ok && ac.ElementType != nil {
			elem := converter(ac.ElementType.OID, typmod, dm)
			return func(dst, src []byte) []byte { return convArray(dst, src, elem) }
		}
	}
	// text, varchar, char, name, json, jsonb, uuid, enums, intervals, ...:
	// Debezium writes them as strings.
	return convString
}

func convBool(dst, src []byte) []byte {
	if len(src) == 1 && src[0] == 't' {
		return append(dst, "true"...)
	}
	return append(dst, "false"...)
}

// convNumber writes an integer's text form as it is: it is a JSON number.
func convNumber(dst, src []byte) []byte { return append(dst, src...) }

// convFloat writes a float or numeric as a JSON number, and the values
// JSON has no number for as strings.
func convFloat(dst, src []byte) []byte {
	switch string(src) {
	case "NaN", "Infinity", "-Infinity":
		return appendString(dst, src)
	}
	return append(dst, src...)
}

func convString(dst, src []byte) []byte { return appendString(dst, src) }

// convBytea decodes the hex form (bytea_output = hex, which the source sets
// on its connections) and writes base64, as Kafka Connect's JSON converter
// writes bytes.
func convBytea(dst, src []byte) []byte {
	if len(src) < 2 || src[0] != '\\' || src[1] != 'x' {
		return appendString(dst, src)
	}
	raw := make([]byte, hex.DecodedLen(len(src)-2))
	if _, err := hex.Decode(raw, src[2:]); err != nil {
		return appendString(dst, src)
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, raw)
	return append(dst, '"')
}

// Text layouts of the source's sessions (DateStyle ISO, TimeZone UTC).
const (
	layoutDate               = "2006-01-02"
	layoutTimestamp          = "2006-01-02 15:04:05.999999999"
	layoutTimestamptz        = "2006-01-02 15:04:05.999999999-07"
	layoutTimestamptzSeconds = "2006-01-02 15:04:05.999999999-07:00"
)

// parseTime parses an ISO timestamp or date; BC dates carry a " BC" suffix.
func parseTime(layout string, s string) (time.Time, bool) {
	bc := strings.HasSuffix(s, " BC")
	if bc {
		s = strings.TrimSuffix(s, " BC")
	}
	t, err := time.Parse(layout, s)
	if err != nil && layout == layoutTimestamptz {
		t, err = time.Parse(layoutTimestamptzSeconds, s)
	}
	if err != nil {
		return time.Time{}, false
	}
	if bc {
		// Year 1 BC is year 0 in the proleptic Gregorian calendar Go uses.
		t = t.AddDate(1-2*t.Year(), 0, 0)
	}
	return t, true
}

// convDate writes the days since 1970-01-01 (io.debezium.time.Date).
func convDate(dst, src []byte) []byte {
	t, ok := parseTime(layoutDate, string(src))
	if !ok { // infinity, -infinity
		return appendString(dst, src)
	}
	days := t.Unix() / 86400
	if t.Unix() < 0 && t.Unix()%86400 != 0 {
		days--
	}
	return strconv.AppendInt(dst, days, 10)
}

// convTimestampMicros writes microseconds since the epoch
// (io.debezium.time.MicroTimestamp), convTimestampMillis milliseconds
// (io.debezium.time.Timestamp, for timestamp(0) to timestamp(3)).
func convTimestampMicros(dst, src []byte) []byte {
	t, ok := parseTime(layoutTimestamp, string(src))
	if !ok {
		return appendString(dst, src)
	}
	return strconv.AppendInt(dst, t.UnixMicro(), 10)
}

func convTimestampMillis(dst, src []byte) []byte {
	t, ok := parseTime(layoutTimestamp, string(src))
	if !ok {
		return appendString(dst, src)
	}
	return strconv.AppendInt(dst, t.UnixMilli(), 10)
}

// convTimestamptz writes an ISO-8601 string in UTC
// (io.debezium.time.ZonedTimestamp), fractional seconds without trailing
// zeros.
func convTimestamptz(dst, src []byte) []byte {
	t, ok := parseTime(layoutTimestamptz, string(src))
	if !ok {
		return appendString(dst, src)
	}
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, "2006-01-02T15:04:05.999999999Z")
	return append(dst, '"')
}

// timeMicros parses hh:mm:ss[.ffffff] (24:00:00 included).
func timeMicros(s string) (int64, bool) {
	if len(s) < 8 || s[2] != ':' || s[5] != ':' {
		return 0, false
	}
	h, err1 := strconv.Atoi(s[0:2])
	m, err2 := strconv.Atoi(s[3:5])
	sec, err3 := strconv.Atoi(s[6:8])
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, false
	}
	us := int64(h*3600+m*60+sec) * 1e6
	if len(s) > 8 {
		if s[8] != '.' {
			return 0, false
		}
		frac := s[9:]
		if len(frac) == 0 || len(frac) > 6 {
			return 0, false
		}
		f, err := strconv.Atoi(frac)
		if err != nil {
			return 0, false
		}
		for range 6 - len(frac) {
			f *= 10
		}
		us += int64(f)
	}
	return us, true
}

// convTimeMicros writes microseconds since midnight (io.debezium.time.MicroTime),
// convTimeMillis milliseconds (io.debezium.time.Time, for time(0) to time(3)).
func convTimeMicros(dst, src []byte) []byte {
	us, ok := timeMicros(string(src))
	if !ok {
		return appendString(dst, src)
	}
	return strconv.AppendInt(dst, us, 10)
}

func convTimeMillis(dst, src []byte) []byte {
	us, ok := timeMicros(string(src))
	if !ok {
		return appendString(dst, src)
	}
	return strconv.AppendInt(dst, us/1000, 10)
}

// convArray writes a PostgreSQL array literal ({1,2}, {"a b",NULL},
// {{1,2},{3,4}}) as a JSON array, nested for several dimensions, each
// element through elem. Bounds decorations ([0:1]={...}) are dropped.
func convArray(dst, src []byte, elem conv) []byte {
	if i := strings.IndexByte(string(src), '='); i >= 0 && len(src) > 0 && src[0] == '[' {
		src = src[i+1:]
	}
	out, rest, ok := appendArray(dst, src, elem)
	if !ok || len(rest) != 0 {
		return appendString(dst, src)
	}
	return out
}

func appendArray(dst, src []byte, elem conv) ([]byte, []byte, bool) {
	if len(src) == 0 || src[0] != '{' {
		return dst, src, false
	}
	src = src[1:]
	dst = append(dst, '[')
	if len(src) > 0 && src[0] == '}' {
		return append(dst, ']'), src[1:], true
	}
	var buf []byte
	for first := true; ; first = false {
		if !first {
			dst = append(dst, ',')
		}
		if len(src) == 0 {
			return dst, src, false
		}
		switch {
		case src[0] == '{':
			var ok bool
			dst, src, ok = appendArray(dst, src, elem)
			if !ok {
				return dst, src, false
			}
		case src[0] == '"':
			buf = buf[:0]
			i := 1
			for ; i < len(src) && src[i] != '"'; i++ {
				if src[i] == '\\' && i+1 < len(src) {
					i++
				}
				buf = append(buf, src[i])
			}
			if i >= len(src) {
				return dst, src, false
			}
			dst = elem(dst, buf)
			src = src[i+1:]
		default:
			i := 0
			for i < len(src) && src[i] != ',' && src[i] != '}' {
				i++
			}
			if string(src[:i]) == "NULL" {
				dst = append(dst, "null"...)
			} else {
				dst = elem(dst, src[:i])
			}
			src = src[i:]
		}
		if len(src) == 0 {
			return dst, src, false
		}
		if src[0] == '}' {
			return append(dst, ']'), src[1:], true
		}
		if src[0] != ',' {
			return dst, src, false
		}
		src = src[1:]
	}
}

// appendString appends s as a JSON string: control characters, quotes
// and backslashes escaped, invalid UTF-8 replaced by U+FFFD, and U+2028
// and U+2029 escaped (as encoding/json does, for JavaScript consumers).
func appendString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"
