package pgschema

import "testing"

func TestParseTable(t *testing.T) {
	for name, want := range map[string][2]string{
		"outbox":    {`"outbox"`, "outbox"},
		"app.Dedup": {`"app"."Dedup"`, "Dedup"},
		`we"ird.t`:  {`"we""ird"."t"`, "t"},
	} {
		ident, raw, err := ParseTable(name)
		if err != nil || ident != want[0] || raw != want[1] {
			t.Errorf("ParseTable(%q) = %s, %s, %v; want %s, %s", name, ident, raw, err, want[0], want[1])
		}
	}
	for _, bad := range []string{"", ".", "a.", ".a", "a.b.c"} {
		if _, _, err := ParseTable(bad); err == nil {
			t.Errorf("ParseTable(%q) accepted", bad)
		}
	}
}

func TestLiteral(t *testing.T) {
	for in, want := range map[string]string{"": "''", "abc": "'abc'", "it's": "'it''s'", "''": "''''''"} {
		if got := Literal(in); got != want {
			t.Errorf("Literal(%q) = %s, want %s", in, got, want)
		}
	}
}
