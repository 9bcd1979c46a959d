package jsonscan

import (
	"encoding/binary"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner validates a JSON document by recursive descent and records where
// the value at a key path lies. It never decodes anything.
type scanner struct {
	data []byte
	pos  int

	// found and foundEnd delimit the value at the path; found is -1 while
	// there is none.
	found, foundEnd int

	// members, when set, are top-level keys whose values' bounds are
	// recorded in the same places of memberAt (see Members); positions,
	// not slices of data, so that data does not escape through them.
	members  []string
	memberAt [maxMembers][2]int
}

// maxMembers is the most keys one Members call takes.
const maxMembers = 8

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ':
			s.pos++
			// Anthropic pads events with runs of spaces.
			for s.pos+8 <= len(s.data) && binary.LittleEndian.Uint64(s.data[s.pos:]) == ' '*0x0101010101010101 {
				s.pos += 8
			}
		case '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// document scans all of s.data as one JSON value between optional
// whitespace, recording in s.found the value at path (the whole value when
// path is empty).
func (s *scanner) document(path []string) bool {
	s.skipSpace()
	start := s.pos
	if !s.value(path, 0) {
		return false
	}
	if len(path) == 0 {
		s.found, s.foundEnd = start, s.pos
	}
	s.skipSpace()
	return s.pos == len(s.data)
}

// value scans the value starting at s.pos. depth is the number of enclosing
// arrays and objects. If path is not empty, value records in s.found the
// position of the value path leads to inside this one.
func (s *scanner) value(path []string, depth int) bool {
	if s.pos >= len(s.data) {
		return false
	}
	switch s.data[s.pos] {
	case '{':
		return s.object(path, depth+1)
	case '[':
		return s.array(depth + 1)
	case '"':
		_, ok := s.str()
		return ok
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	}
	return s.number()
}

func (s *scanner) object(path []string, depth int) bool {
	if depth > maxDepth {
		return false
	}
	s.pos++ // '{'
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return true
	}
	for {
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return false
		}
		keyStart := s.pos + 1
		special, ok := s.str()
		if !ok {
			return false
		}
		key := s.data[keyStart : s.pos-1]
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return false
		}
		s.pos++
		s.skipSpace()

		var rest []string
		match := len(path) > 0 && keyEqual(key, special, path[0])
		if match {
			rest = path[1:]
			if len(rest) > 0 {
				// This occurrence of the key supersedes whatever an
				// earlier one led to.
				s.found = -1
			}
		}
		start := s.pos
		if !s.value(rest, depth) {
			return false
		}
		if match && len(rest) == 0 {
			s.found, s.foundEnd = start, s.pos
		}
		if depth == 1 && s.members != nil {
			for i, k := range s.members {
				if keyEqual(key, special, k) {
					s.memberAt[i] = [2]int{start, s.pos}
				}
			}
		}

		s.skipSpace()
		if s.pos >= len(s.data) {
			return false
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.skipSpace()
		case '}':
			s.pos++
			return true
		default:
			return false
		}
	}
}

func (s *scanner) array(depth int) bool {
	if depth > maxDepth {
		return false
	}
	s.pos++ // '['
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return true
	}
	for {
		if !s.value(nil, depth) {
			return false
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			return false
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.skipSpace()
		case ']':
			s.pos++
			return true
		default:
			return false
		}
	}
}

// str scans the string starting at s.pos. It is false for special only if
// the string is plain ASCII without escapes, that is if its bytes are its
// value. Non-ASCII bytes are not checked: encoding/json accepts invalid
// UTF-8 (and replaces it when decoding).
func (s *scanner) str() (special, ok bool) {
	b := s.data
	i := s.pos + 1
	for {
		var nonASCII bool
		i, nonASCII = skipPlain(b, i)
		special = special || nonASCII
		if i >= len(b) {
			return false, false
		}
		switch c := b[i]; {
		case c == '"':
			s.pos = i + 1
			return special, true
		case c == '\\':
			special = true
			if i+1 >= len(b) {
				return false, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if _, ok := hex4(b[i+2:]); !ok {
					return false, false
				}
				i += 6
			default:
				return false, false
			}
		default: // a control character
			return false, false
		}
	}
}

// skipPlain returns the index of the first control character, quote or
// backslash in b at or after i, or len(b), and whether it passed non-ASCII
// bytes (possibly a few beyond the index).
//
// It looks at eight bytes at a time with the SWAR tests of "Bit Twiddling
// Hacks" (haszero, hasless). Their results can be wrong for a byte above
// one that matches, never below, so the lowest flagged byte is exact.
func skipPlain(b []byte, i int) (int, bool) {
	const (
		lo         = 0x0101010101010101
		hi         = 0x8080808080808080
		quotes     = '"' * lo
		backslashs = '\\' * lo
	)
	var nonASCII bool
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q, bs := x^quotes, x^backslashs
		m := ((x - ' '*lo) &^ x) | ((q - lo) &^ q) | ((bs - lo) &^ bs)
		nonASCII = nonASCII || x&hi != 0
		if m &= hi; m != 0 {
			return i + bits.TrailingZeros64(m)/8, nonASCII
		}
	}
	for ; i < len(b); i++ {
		c := b[i]
		if c < ' ' || c == '"' || c == '\\' {
			break
		}
		nonASCII = nonASCII || c >= utf8.RuneSelf
	}
	return i, nonASCII
}

func (s *scanner) literal(lit string) bool {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		return false
	}
	s.pos += len(lit)
	return true
}

// number scans a number. What follows it is checked by the caller.
func (s *scanner) number() bool {
	b, i := s.data, s.pos
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return false
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return false
		}
		i = j
	}
	s.pos = i
	return true
}

// digits returns the index of the first non-digit in b at or after i.
func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// hex4 decodes the four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// keyEqual reports whether the body of a valid JSON string (without its
// quotes) decodes to want. special is what str reported for it.
func keyEqual(key []byte, special bool, want string) bool {
	if !special {
		return string(key) == want
	}
	// Decode as encoding/json does (including its replacement of invalid
	// UTF-8 and unpaired surrogates by U+FFFD), comparing as we go.
	var buf [utf8.UTFMax]byte
	for len(key) > 0 {
		var r rune
		switch c := key[0]; {
		case c == '\\':
			r, key = unescape(key)
		case c < utf8.RuneSelf:
			if len(want) == 0 || want[0] != c {
				return false
			}
			key, want = key[1:], want[1:]
			continue
		default:
			var n int
			r, n = utf8.DecodeRune(key)
			key = key[n:]
		}
		n := utf8.EncodeRune(buf[:], r)
		if len(want) < n || want[:n] != string(buf[:n]) {
			return false
		}
		want = want[n:]
	}
	return len(want) == 0
}

// unescape decodes the escape sequence at the start of b, which str has
// validated, and returns the rest of b.
func unescape(b []byte) (rune, []byte) {
	switch b[1] {
	case 'b':
		return '\b', b[2:]
	case 'f':
		return '\f', b[2:]
	case 'n':
		return '\n', b[2:]
	case 'r':
		return '\r', b[2:]
	case 't':
		return '\t', b[2:]
	case 'u':
		r, _ := hex4(b[2:])
		b = b[6:]
		if !utf16.IsSurrogate(r) {
			return r, b
		}
		if len(b) >= 6 && b[0] == '\\' && b[1] == 'u' {
			if r2, ok := hex4(b[2:]); ok {
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					return dec, b[6:]
				}
			}
		}
		return utf8.RuneError, b
	}
	return rune(b[1]), b[2:] // '"', '\\', '/'
}
