package cdc_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/internal/testenv"
)

func TestTypes(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table kinds (
  id int primary key, n numeric(12,3), nd numeric, tz timestamptz, ts timestamp, ts3 timestamp(3), d date, d0 date,
  tm time, j json, jb jsonb, u uuid, ia int[], ta text[], by bytea, b boolean, f float8, fnan float8,
  big text, nul text, tsa timestamptz[])`)
	e.exec(t, `alter table kinds alter column big set storage external`)
	r := newRecorder(t)
	s, _ := e.start(t, r, cdc.WithTables("kinds"))
	e.streaming(t, s)
	big := strings.Repeat("0123456789abcdef", 1000) // 16 kB, stored out of line
	e.exec(t, `insert into kinds values (1, 12345.678, 'NaN', '2024-05-01 12:34:56.789012+02', '2024-05-01 12:34:56.789012',
  '2024-05-01 12:34:56.789', '2024-05-01', '1969-12-31', '12:34:56.5', '{"a": 1}', '{"b":[1,2]}',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2,NULL}', '{"a b","c\"d",e}', '\x00ff10', true, 1.5, 'NaN', $1, null,
  '{"2024-01-02 03:04:05+00"}')`, big)
	e.exec(t, `update kinds set b = false where id = 1`)
	testenv.Eventually(t, 10*time.Second, "two changes", func() bool { return r.len() >= 2 })

	ts := time.Date(2024, 5, 1, 12, 34, 56, 789012000, time.UTC)
	day := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC).Unix() / 86400
	row := func(b, bigJSON string) string {
		return fmt.Sprintf(`{"id":1,"n":"12345.678","nd":"NaN","tz":"2024-05-01T10:34:56.789012Z","ts":%d,"ts3":%d,"d":%d,"d0":-1,`+
			`"tm":45296500000,"j":"{\"a\": 1}","jb":"{\"b\": [1, 2]}","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",`+
			`"ia":[1,2,null],"ta":["a b","c\"d","e"],"by":"AP8Q","b":%s,"f":1.5,"fnan":"NaN","big":%s,"nul":null,`+
			`"tsa":["2024-01-02T03:04:05Z"]}`,
			ts.UnixMicro(), ts.Truncate(time.Millisecond).UnixMilli(), day, b, bigJSON)
	}
	got := r.all()
	if a, want := compact(t, decode(t, got[0].m).After), row("true", `"`+big+`"`); a != want {
		t.Errorf("insert:\n got %s\nwant %s", a, want)
	}
	if a, want := compact(t, decode(t, got[1].m).After), row("false", `"`+cdc.Unavailable+`"`); a != want {
		t.Errorf("update with an unchanged TOASTed column:\n got %s\nwant %s", a, want)
	}
}

func TestDecimalDouble(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table amounts (id int primary key, n numeric(12,3))`)
	r := newRecorder(t)
	e.exec(t, `insert into amounts values (1, 12.5)`)
	_, _ = e.start(t, r, cdc.WithTables("amounts"), cdc.WithDecimal(cdc.DecimalDouble))
	testenv.Eventually(t, 10*time.Second, "the snapshot row", func() bool { return r.len() >= 1 })
	if a := compact(t, decode(t, r.all()[0].m).After); a != `{"id":1,"n":12.500}` {
		t.Errorf("after %s", a)
	}
}
