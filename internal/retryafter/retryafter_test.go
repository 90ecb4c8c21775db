package retryafter

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	now := time.Date(2015, 10, 21, 7, 28, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"120", 120 * time.Second, true},
		{" 7 ", 7 * time.Second, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"99999999999999999999999", Limit, true},
		{"9999999999", Limit, true},
		{"Wed, 21 Oct 2015 07:30:00 GMT", 2 * time.Minute, true},
		{"Wed, 21 Oct 2015 07:00:00 GMT", 0, true},
		{"Wed, 21 Oct 2099 07:00:00 GMT", Limit, true},
		{"tomorrow", 0, false},
	}
	for _, c := range cases {
		got, ok := Parse(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("Parse(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
