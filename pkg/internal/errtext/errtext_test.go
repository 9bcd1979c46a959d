package errtext

import (
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	long := strings.Repeat("é", 80) // 160 bytes, two per rune
	for _, tc := range []struct{ name, in, want string }{
		{"short", "acme", `"acme"`},
		{"control characters escaped", "a\nb\x1b", `"a\nb\x1b"`},
		{"at the bound", strings.Repeat("x", MaxQuoted), `"` + strings.Repeat("x", MaxQuoted) + `"`},
		{"over the bound", strings.Repeat("x", MaxQuoted+1), `"` + strings.Repeat("x", MaxQuoted) + `"… (101 bytes)`},
		{"cut on a rune boundary", long, `"` + strings.Repeat("é", MaxQuoted/2) + `"… (160 bytes)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Quote(tc.in); got != tc.want {
				t.Errorf("Quote = %s, want %s", got, tc.want)
			}
		})
	}
}
