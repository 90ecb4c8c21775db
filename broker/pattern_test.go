package broker

import (
	"errors"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, key string
		want         bool
	}{
		{"rentals.france.*", "rentals.france.nevache", true},
		{"rentals.france.*", "rentals.france", false},
		{"rentals.france.*", "rentals.france.nevache.chalet", false},
		{"rentals.#", "rentals.france.nevache", true},
		{"rentals.#", "rentals", true}, // "a.#" matches "a"
		{"rentals.#", "rental", false},
		{"#", "", true},
		{"#", "a.b.c", true},
		{"*", "", false},
		{"*", "a", true},
		{"*", "a.b", false},
		{"", "", true},
		{"", "a", false},
		{"#.a", "a", true},
		{"#.a", "b.a", true},
		{"#.a", "a.b", false},
		{"a.*.#", "a", false},
		{"a.*.#", "a.b", true},
		{"a.*.#", "a.b.c.d", true},
		{"a.#.b", "a.b", true},
		{"a.#.b", "a.x.y.b", true},
		{"a.#.b", "a.x.y.c", false},
		{"#.#", "", true},
		{"*.*", "a.", true}, // empty words are words
		{"a..b", "a..b", true},
		{"a.*.b", "a..b", true},
		{"a", "a", true},
		{"a", "A", false},
		{"#.*", "", false},
		{"#.*", "x", true},
		{"café.*", "café.crème", true},
	}
	for _, tt := range tests {
		p, err := CompilePattern(tt.pattern)
		if err != nil {
			t.Fatalf("CompilePattern(%q): %v", tt.pattern, err)
		}
		if got := p.Match(tt.key); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.key, got, tt.want)
		}
		if got := matchReference(splitWords(tt.pattern), splitWords(tt.key)); got != tt.want {
			t.Errorf("reference(%q, %q) = %v, want %v", tt.pattern, tt.key, got, tt.want)
		}
	}
}

func TestInvalidPatterns(t *testing.T) {
	for _, p := range []string{"a*", "a.b#", "#a.b", "a.*b", strings.Repeat("a", 256), "a.\xff"} {
		err := ValidatePattern(p)
		if !errors.Is(err, ErrInvalidPattern) {
			t.Errorf("ValidatePattern(%q) = %v, want ErrInvalidPattern", p, err)
		}
	}
	if Match("a*", "a*") {
		t.Error("an invalid pattern matched")
	}
}

func TestPatternsSet(t *testing.T) {
	ps, err := CompilePatterns([]string{"a.*", "b.#"})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{"a.x": true, "b": true, "b.c.d": true, "c": false, "a": false} {
		if got := ps.Match(key); got != want {
			t.Errorf("Patterns.Match(%q) = %v, want %v", key, got, want)
		}
	}
	if !Patterns(nil).Match("anything") {
		t.Error("empty set must match every key")
	}
	if _, err := CompilePatterns([]string{"ok", "bad*"}); !errors.Is(err, ErrInvalidPattern) {
		t.Errorf("CompilePatterns with a bad pattern = %v", err)
	}
}

// matchReference is the obvious recursive definition of topic matching.
func matchReference(pat, key []string) bool {
	if len(pat) == 0 {
		return len(key) == 0
	}
	switch pat[0] {
	case "#":
		for i := 0; i <= len(key); i++ {
			if matchReference(pat[1:], key[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(key) > 0 && matchReference(pat[1:], key[1:])
	default:
		return len(key) > 0 && key[0] == pat[0] && matchReference(pat[1:], key[1:])
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("a.#.b", "a.x.b")
	f.Add("#.*", "")
	f.Add("*.*", "a.")
	f.Add("#.#.a", "a.a.a")
	f.Fuzz(func(t *testing.T, pattern, key string) {
		if len(pattern) > 64 || len(key) > 64 {
			return // keep the exponential reference fast
		}
		p, err := CompilePattern(pattern)
		if err != nil {
			if !errors.Is(err, ErrInvalidPattern) {
				t.Fatalf("error %v does not wrap ErrInvalidPattern", err)
			}
			return
		}
		want := matchReference(splitWords(pattern), splitWords(key))
		if got := p.Match(key); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", pattern, key, got, want)
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	p := MustCompilePattern("rentals.#.nevache")
	b.ReportAllocs()
	for b.Loop() {
		if !p.Match("rentals.france.alps.nevache") {
			b.Fatal("no match")
		}
	}
}
