package broker

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxKeyLength is the longest routing key or pattern in bytes: AMQP carries
// them as short strings.
const MaxKeyLength = 255

// Pattern is a compiled routing-key pattern with RabbitMQ topic-exchange
// semantics: keys and patterns are words separated by "."; "*" matches exactly
// one word, "#" matches zero or more words; "a.#" matches "a"; words may be
// empty ("a..b" has three words), and the empty key has no words.
type Pattern struct {
	src   string
	words []string
	exact bool // no wildcard: compare strings
	all   bool // only "#" words: matches every key
}

// CompilePattern parses p. A word that mixes "*" or "#" with other characters
// ("a*", "#b") is rejected: RabbitMQ would treat it as a literal word, which is
// almost never what was meant. Invalid UTF-8 and patterns longer than
// MaxKeyLength are rejected too. Errors wrap ErrInvalidPattern.
func CompilePattern(p string) (Pattern, error) {
	if len(p) > MaxKeyLength {
		return Pattern{}, fmt.Errorf("%w: %q is %d bytes, longer than %d", ErrInvalidPattern, shorten(p), len(p), MaxKeyLength)
	}
	if !utf8.ValidString(p) {
		return Pattern{}, fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidPattern, p)
	}
	words := splitWords(p)
	exact, all := true, true
	for i, w := range words {
		if w != "#" {
			all = false
		}
		if w == "*" || w == "#" {
			exact = false
			continue
		}
		if strings.ContainsAny(w, "*#") {
			return Pattern{}, fmt.Errorf("%w: %q: word %d %q mixes a wildcard with other characters; use a whole word \"*\" or \"#\"", ErrInvalidPattern, p, i+1, w)
		}
	}
	if len(words) == 0 {
		all = false
	}
	return Pattern{src: p, words: words, exact: exact, all: all}, nil
}

// MustCompilePattern is CompilePattern that panics on error, for patterns in source code.
func MustCompilePattern(p string) Pattern {
	c, err := CompilePattern(p)
	if err != nil {
		panic(err)
	}
	return c
}

// ValidatePattern returns the error CompilePattern would, or nil.
func ValidatePattern(p string) error {
	_, err := CompilePattern(p)
	return err
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.src }

// Match reports whether key matches p.
func (p Pattern) Match(key string) bool {
	if p.exact {
		return key == p.src
	}
	if p.all {
		return true
	}
	return matchWords(p.words, splitWords(key))
}

// Match reports whether key matches pattern; an invalid pattern matches nothing.
func Match(pattern, key string) bool {
	p, err := CompilePattern(pattern)
	if err != nil {
		return false
	}
	return p.Match(key)
}

// Patterns is a set of patterns; a key matches the set when any pattern
// matches. The empty set matches every key.
type Patterns []Pattern

// CompilePatterns compiles each pattern, returning the first error.
func CompilePatterns(ps []string) (Patterns, error) {
	out := make(Patterns, 0, len(ps))
	for _, p := range ps {
		c, err := CompilePattern(p)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Match reports whether key matches any pattern of ps, or ps is empty.
func (ps Patterns) Match(key string) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if p.Match(key) {
			return true
		}
	}
	return false
}

func splitWords(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

// matchWords matches with "#" backtracking bounded by dynamic programming:
// reach[j] says whether the pattern prefix handled so far can consume key[:j].
func matchWords(pat, key []string) bool {
	n := len(key)
	var buf [16]bool
	var reach []bool
	if n+1 <= len(buf) {
		reach = buf[:n+1]
	} else {
		reach = make([]bool, n+1)
	}
	reach[0] = true
	for _, w := range pat {
		switch w {
		case "#":
			// zero or more words: once reachable, every later position is.
			for j := 1; j <= n; j++ {
				reach[j] = reach[j] || reach[j-1]
			}
		default:
			for j := n; j >= 1; j-- {
				reach[j] = reach[j-1] && (w == "*" || w == key[j-1])
			}
			reach[0] = false
		}
	}
	return reach[n]
}

func shorten(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
