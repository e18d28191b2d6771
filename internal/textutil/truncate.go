// Package textutil holds the one text helper several packages need.
package textutil

import (
	"strings"
	"unicode/utf8"
)

// Truncate returns s as valid UTF-8 of at most n bytes: whole, or cut at a
// character boundary and ending in "..." (invalid bytes become U+FFFD).
// Error texts written to status, logs and API answers go through it.
func Truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	if n < 3 {
		return strings.Repeat(".", max(n, 0))
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
