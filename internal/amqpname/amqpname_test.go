package amqpname

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheck(t *testing.T) {
	long := strings.Repeat("a", 300)
	for _, c := range []struct {
		name     string
		declared bool
		want     string // substring of the error, "" for none
	}{
		{"orders", true, ""},
		{"", true, ""},
		{strings.Repeat("a", 255), true, ""},
		{strings.Repeat("é", 127), true, ""}, // 254 bytes
		{"amq.x", false, ""},                 // a routing key may start with amq.
		{"amq", true, ""},
		{"AMQ.x", true, ""}, // RabbitMQ's check is case-sensitive
		{long, true, `queue name "` + strings.Repeat("a", 40) + `"… is 300 bytes, AMQP allows 255`},
		{strings.Repeat("é", 128), false, "is 256 bytes, AMQP allows 255"},
		{"bad\xff", true, `queue name "bad\xff" is not valid UTF-8`},
		{"amq.x", true, `queue name "amq.x" starts with "amq.", which RabbitMQ reserves`},
	} {
		err := Check("queue name", c.name, c.declared)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("Check(%.20q, %v) = %v, want nil", c.name, c.declared, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("Check(%.20q, %v) = %v, want an error containing %q", c.name, c.declared, err, c.want)
		}
	}
}

func TestQuote(t *testing.T) {
	if got := Quote("abc"); got != `"abc"` {
		t.Errorf("Quote(abc) = %s", got)
	}
	// cut on a rune, not inside one
	got := Quote(strings.Repeat("é", 50))
	if want := `"` + strings.Repeat("é", 40) + `"…`; got != want {
		t.Errorf("Quote(50×é) = %s, want %s", got, want)
	}
}

// reference is the rule written the obvious way.
func reference(name string, declared bool) bool {
	if len(name) > 255 || !utf8.ValidString(name) {
		return false
	}
	return !declared || len(name) < 4 || name[:4] != "amq."
}

func FuzzCheck(f *testing.F) {
	for _, s := range []string{"", "a", "amq.", "amq.x", "amq", strings.Repeat("x", 256), "\xff", "é"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, name string, declared bool) {
		err := Check("name", name, declared)
		if (err == nil) != reference(name, declared) {
			t.Fatalf("Check(%q, %v) = %v, reference says valid=%v", name, declared, err, reference(name, declared))
		}
		if err != nil && !strings.HasPrefix(err.Error(), "name ") {
			t.Fatalf("error %q does not start with what", err)
		}
	})
}
