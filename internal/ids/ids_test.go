package ids

import (
	"regexp"
	"testing"
)

func TestFormsAndUniqueness(t *testing.T) {
	cases := []struct {
		name string
		gen  func() string
		re   *regexp.Regexp
	}{
		{"Hex", Hex, regexp.MustCompile(`^[0-9a-f]{32}$`)},
		{"UUID", UUID, regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)},
		{"Base32", func() string { return Base32("msg_") }, regexp.MustCompile(`^msg_[a-z2-7]{26}$`)},
	}
	for _, c := range cases {
		seen := map[string]bool{}
		for range 1000 {
			id := c.gen()
			if !c.re.MatchString(id) {
				t.Fatalf("%s: %q does not match %s", c.name, id, c.re)
			}
			if seen[id] {
				t.Fatalf("%s: %q repeated", c.name, id)
			}
			seen[id] = true
		}
	}
}
