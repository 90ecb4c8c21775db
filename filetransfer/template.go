package filetransfer

import (
	"fmt"
	"strings"
)

// checkTemplate reports why tmpl is not one plain query, or returns nil. It
// reads tmpl with PostgreSQL's lexical rules (comments, nested block
// comments, strings, E'...' strings, quoted identifiers, dollar quotes), so a
// keyword or semicolon inside any of those is ignored. It accepts a
// statement that starts (after comments, whitespace and opening
// parentheses) with SELECT, WITH, VALUES or TABLE, followed by nothing but
// semicolons, comments and whitespace; in a WITH query no INSERT, UPDATE,
// DELETE or MERGE may appear. It is an early, clear refusal: the real guard
// is the READ ONLY transaction every export runs in.
func checkTemplate(tmpl string) error {
	toks, err := lexSQL(tmpl)
	if err != nil {
		return err
	}
	first := ""
	for i, t := range toks {
		switch {
		case t.kind == tokOther && t.text == "(" && first == "":
			continue
		case t.kind == tokSemicolon:
			for _, u := range toks[i+1:] {
				if u.kind != tokSemicolon {
					return fmt.Errorf("more than one statement (%q after a semicolon)", u.text)
				}
			}
			return nil
		}
		if first == "" {
			if t.kind != tokWord {
				return fmt.Errorf("starts with %q; want SELECT, WITH, VALUES or TABLE", t.text)
			}
			first = strings.ToLower(t.text)
			switch first {
			case "select", "with", "values", "table":
			default:
				return fmt.Errorf("starts with %s; want SELECT, WITH, VALUES or TABLE", strings.ToUpper(first))
			}
			continue
		}
		if first == "with" && t.kind == tokWord {
			switch w := strings.ToLower(t.text); w {
			case "insert", "update", "delete", "merge":
				return fmt.Errorf("WITH query contains %s (a data-modifying statement)", strings.ToUpper(w))
			}
		}
	}
	if first == "" {
		return fmt.Errorf("no statement")
	}
	return nil
}

type tokKind int

const (
	tokWord      tokKind = iota // an unquoted identifier or keyword
	tokQuoted                   // a string, quoted identifier or dollar-quoted string
	tokSemicolon                // ;
	tokOther                    // any other character (operators, digits, parentheses)
)

type token struct {
	kind tokKind
	text string
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 0x80 || (c|0x20 >= 'a' && c|0x20 <= 'z')
}

func isIdentCont(c byte) bool { return isIdentStart(c) || c == '$' || (c >= '0' && c <= '9') }

// lexSQL splits s into tokens, dropping whitespace and comments.
func lexSQL(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case strings.HasPrefix(s[i:], "--"):
			n := strings.IndexByte(s[i:], '\n')
			if n < 0 {
				return toks, nil
			}
			i += n + 1
		case strings.HasPrefix(s[i:], "/*"):
			depth := 0
			j := i
			for ; j < len(s); j++ {
				if strings.HasPrefix(s[j:], "/*") {
					depth++
					j++
				} else if strings.HasPrefix(s[j:], "*/") {
					depth--
					j++
					if depth == 0 {
						break
					}
				}
			}
			if depth != 0 {
				return nil, fmt.Errorf("unterminated /* comment")
			}
			i = j + 1
		case c == '\'':
			// E'...' (escape string): the previous token is a bare E.
			escapes := len(toks) > 0 && i > 0 && (s[i-1] == 'e' || s[i-1] == 'E') &&
				toks[len(toks)-1].kind == tokWord && strings.EqualFold(toks[len(toks)-1].text, "e")
			j := i + 1
			for ; j < len(s); j++ {
				if escapes && s[j] == '\\' {
					j++
					continue
				}
				if s[j] == '\'' {
					if j+1 < len(s) && s[j+1] == '\'' {
						j++
						continue
					}
					break
				}
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string")
			}
			toks = append(toks, token{tokQuoted, s[i : j+1]})
			i = j + 1
		case c == '"':
			j := i + 1
			for ; j < len(s); j++ {
				if s[j] == '"' {
					if j+1 < len(s) && s[j+1] == '"' {
						j++
						continue
					}
					break
				}
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated quoted identifier")
			}
			toks = append(toks, token{tokQuoted, s[i : j+1]})
			i = j + 1
		case c == '$' && dollarTag(s[i:]) != "":
			tag := dollarTag(s[i:])
			end := strings.Index(s[i+len(tag):], tag)
			if end < 0 {
				return nil, fmt.Errorf("unterminated dollar-quoted string %s", tag)
			}
			n := len(tag) + end + len(tag)
			toks = append(toks, token{tokQuoted, s[i : i+n]})
			i += n
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentCont(s[j]) {
				j++
			}
			toks = append(toks, token{tokWord, s[i:j]})
			i = j
		case c >= '0' && c <= '9':
			// A number, including forms like 1e5 that must not read as a word.
			j := i + 1
			for j < len(s) && (isIdentCont(s[j]) || s[j] == '.') {
				j++
			}
			toks = append(toks, token{tokOther, s[i:j]})
			i = j
		case c == ';':
			toks = append(toks, token{tokSemicolon, ";"})
			i++
		default:
			toks = append(toks, token{tokOther, s[i : i+1]})
			i++
		}
	}
	return toks, nil
}

// dollarTag returns the opening $tag$ (or $$) at the start of s, or "".
func dollarTag(s string) string {
	if len(s) < 2 || s[0] != '$' {
		return ""
	}
	if s[1] == '$' {
		return "$$"
	}
	if !isIdentStart(s[1]) {
		return "" // $1 is a parameter
	}
	for j := 2; j < len(s); j++ {
		switch {
		case s[j] == '$':
			return s[:j+1]
		case !isIdentCont(s[j]):
			return ""
		}
	}
	return ""
}
