package textutil

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTruncate(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a longer text", 10, "a longe..."},
		{"ééééé", 8, "éé..."}, // 10 bytes; a cut inside the third é moves back
		{"日本語のテキスト", 10, "日本..."},
		{"bad \xff byte", 40, "bad \uFFFD byte"},
		{"abcdef", 2, ".."},
		{"", 0, ""},
	} {
		got := Truncate(c.in, c.n)
		if got != c.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
		if len(got) > max(c.n, len(c.want)) || !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q: %d bytes, valid %v", c.in, c.n, got, len(got), utf8.ValidString(got))
		}
	}
	long := strings.Repeat("é", 800)
	if got := Truncate(long, 1024); len(got) > 1024 || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
		t.Errorf("Truncate of 1,600 bytes to 1,024: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}
