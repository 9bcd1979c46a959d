// Package errtext holds what error messages share when they repeat a
// value a caller sent.
package errtext

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxQuoted bounds how much of a refused value an error repeats: valid ids
// and names are far shorter, and an error line must stay readable when the
// value was a megabyte of something else.
const MaxQuoted = 100

// Quote is s quoted as %q does, cut to MaxQuoted bytes (on a rune
// boundary) with its full length after it when it was longer.
func Quote(s string) string {
	if len(s) <= MaxQuoted {
		return strconv.Quote(s)
	}
	cut := MaxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + fmt.Sprintf("… (%d bytes)", len(s))
}
