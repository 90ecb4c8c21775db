package cdc

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

func TestConverters(t *testing.T) {
	for _, c := range []struct {
		oid    uint32
		typmod int32
		in     string
		want   string
	}{
		{pgtype.BoolOID, -1, "t", "true"},
		{pgtype.BoolOID, -1, "f", "false"},
		{pgtype.Int8OID, -1, "-9223372036854775808", "-9223372036854775808"},
		{pgtype.Float8OID, -1, "Infinity", `"Infinity"`},
		{pgtype.Float8OID, -1, "-1.5e-10", "-1.5e-10"},
		{pgtype.NumericOID, -1, "1.50", `"1.50"`},
		{pgtype.DateOID, -1, "1970-01-01", "0"},
		{pgtype.DateOID, -1, "1969-12-31", "-1"},
		{pgtype.DateOID, -1, "0001-01-01 BC", "-719528"},
		{pgtype.DateOID, -1, "infinity", `"infinity"`},
		{pgtype.TimestampOID, -1, "1970-01-01 00:00:01.5", "1500000"},
		{pgtype.TimestampOID, 3, "1970-01-01 00:00:01.5", "1500"},
		{pgtype.TimestamptzOID, -1, "2024-05-01 10:00:00+00", `"2024-05-01T10:00:00Z"`},
		{pgtype.TimestamptzOID, -1, "2024-05-01 10:00:00.120+05:30", `"2024-05-01T04:30:00.12Z"`},
		{pgtype.TimeOID, -1, "24:00:00", "86400000000"},
		{pgtype.TimeOID, 0, "00:00:01", "1000"},
		{pgtype.ByteaOID, -1, `\x`, `""`},
		{pgtype.TextArrayOID, -1, `{{"a,b",NULL},{"\\",""}}`, `[["a,b",null],["\\",""]]`},
		{pgtype.Int4ArrayOID, -1, `[0:1]={1,2}`, `[1,2]`},
		{pgtype.Int4ArrayOID, -1, `{}`, `[]`},
		{pgtype.TextOID, -1, "tab\there \"q\" \u2028 \x01", `"tab\there \"q\" \u2028 \u0001"`},
		{pgtype.TextOID, -1, "bad \xff utf8", `"bad \ufffd utf8"`},
	} {
		got := string(converter(c.oid, c.typmod, DecimalString)(nil, []byte(c.in)))
		if got != c.want {
			t.Errorf("oid %d %q: got %s, want %s", c.oid, c.in, got, c.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("oid %d %q: %s is not JSON", c.oid, c.in, got)
		}
	}
}

func TestKeys(t *testing.T) {
	r := &relation{keyPrefix: "public.t", key: []int{0, 1}}
	row := func(vals ...string) []tupleCol {
		out := make([]tupleCol, len(vals))
		for i, v := range vals {
			if v == "NULL" {
				out[i].kind = 'n'
				continue
			}
			out[i] = tupleCol{kind: 't', data: []byte(v)}
		}
		return out
	}
	for _, c := range []struct {
		vals []string
		want string
	}{
		{[]string{"1", "a"}, "public.t.1.a"},
		{[]string{"a.b", "*#%~ z"}, "public.t.a%2Eb.%2A%23%25%7E%20z"},
		{[]string{"1", "NULL"}, "public.t.1.~null"},
		{[]string{"é", "\xff"}, "public.t.é.%EF%BF%BD"},
	} {
		if got := r.keyOf(row(c.vals...)); got != c.want {
			t.Errorf("%q: key %q, want %q", c.vals, got, c.want)
		}
	}
	long := r.keyOf(row(strings.Repeat("x", 300), "1"))
	if len(long) > maxKeyLen || !strings.HasPrefix(long, "public.t.~") || !utf8.ValidString(long) {
		t.Errorf("long key %q", long)
	}
	if long != r.keyOf(row(strings.Repeat("x", 300), "1")) || long == r.keyOf(row(strings.Repeat("x", 300), "2")) {
		t.Error("hashed keys are not stable per row")
	}
}
