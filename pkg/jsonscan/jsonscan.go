// Package jsonscan reads single values out of JSON documents without
// decoding them.
//
// The gateway looks at a handful of fields (usage counters, an event type)
// in every event of every stream it forwards. Decoding each event with
// encoding/json would allocate for everything the gateway ignores; Field
// instead scans the document, validating it but materialising nothing, and
// returns the raw bytes of the one value asked for. Int, Bool and String
// convert such raw values. ArraySplitter cuts a streamed JSON array (the
// Gemini API's streaming format without alt=sse) into its elements.
package jsonscan

import (
	"encoding/json"
	"unicode/utf8"
)

// maxDepth is the nesting depth beyond which Field gives up, the same limit
// encoding/json applies, so both agree on which documents are valid and
// the recursive scanner's stack stays bounded.
const maxDepth = 10000

// Field returns the raw bytes of the value found by following path, a
// sequence of object keys, from the top of doc. Field(doc) with no path
// returns the whole value without surrounding whitespace.
//
// ok is false when doc is not valid JSON or the path does not lead to a
// value. The entire document is validated, with the rules of
// encoding/json.Valid (which accepts invalid UTF-8 inside strings), so a
// truncated or corrupted event is never mistaken for one that lacks the
// field. Keys are matched after unescaping, as encoding/json does, and when
// an object repeats a key the last occurrence wins, as with encoding/json.
// Paths do not index into arrays.
//
// raw aliases doc. Field does not allocate.
func Field(doc []byte, path ...string) (raw []byte, ok bool) {
	s := scanner{data: doc, found: -1}
	if !s.document(path) || s.found < 0 {
		return nil, false
	}
	return doc[s.found:s.foundEnd], true
}

// Members is Field for several top-level keys at once, in one pass over
// doc: vals[i] gets the raw value of keys[i], or nil when doc has no such
// member (vals must be as long as keys). It reports whether doc is valid
// JSON, with Field's rules; when it is not, vals are all nil. It takes at
// most 8 keys. A provider's event is read once for all the members the
// gateway looks at, not once for each.
func Members(doc []byte, keys []string, vals [][]byte) bool {
	if len(keys) > maxMembers {
		panic("jsonscan: Members takes at most 8 keys")
	}
	clear(vals)
	s := scanner{data: doc, found: -1, members: keys}
	if !s.document(nil) {
		return false
	}
	for i := range keys {
		if at := s.memberAt[i]; at[1] > 0 {
			vals[i] = doc[at[0]:at[1]]
		}
	}
	return true
}

// Int returns the value of raw, a JSON number, if it is an integer that fits
// in an int64. Fractions and exponents are rejected even when the value is
// integral: providers write token counts as plain integers. null is not a
// number: Int(null) returns 0, false.
func Int(raw []byte) (int64, bool) {
	b := raw
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 1 && b[0] == '0' {
		return 0, false
	}
	// Accumulate negatively so that math.MinInt64 parses too.
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n < (-1<<63+d)/10 {
			return 0, false // overflow
		}
		n = n*10 - d
	}
	if !neg {
		if n == -1<<63 {
			return 0, false
		}
		n = -n
	}
	return n, true
}

// Bool returns the value of raw if it is the JSON literal true or false.
func Bool(raw []byte) (v, ok bool) {
	switch string(raw) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// String returns the value of raw, a JSON string, unescaped exactly as
// encoding/json would. Strings without escapes cost one allocation.
func String(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	plain := utf8.Valid(body)
	for _, c := range body {
		if c < ' ' || c == '"' || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return string(body), true
	}
	// Escapes and invalid UTF-8 (which encoding/json replaces) are rare
	// enough to leave to encoding/json.
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// Elements calls fn with the raw bytes of each element of the JSON array
// raw, in order, until fn returns false. It reports whether raw is one valid
// JSON array (whitespace around it allowed); elements before an invalid one
// have been passed to fn by then. Elements does not allocate.
func Elements(raw []byte, fn func(elem []byte) bool) bool {
	s := scanner{data: raw, found: -1}
	s.skipSpace()
	if s.pos >= len(raw) || raw[s.pos] != '[' {
		return false
	}
	s.pos++
	s.skipSpace()
	if s.pos < len(raw) && raw[s.pos] == ']' {
		s.pos++
		s.skipSpace()
		return s.pos == len(raw)
	}
	for {
		start := s.pos
		if !s.value(nil, 1) {
			return false
		}
		if !fn(raw[start:s.pos]) {
			return true
		}
		s.skipSpace()
		if s.pos >= len(raw) {
			return false
		}
		switch raw[s.pos] {
		case ',':
			s.pos++
			s.skipSpace()
		case ']':
			s.pos++
			s.skipSpace()
			return s.pos == len(raw)
		default:
			return false
		}
	}
}

// ValueEnd returns the index just past the JSON value that starts at
// doc[i] (no leading whitespace), validating it on the way. It lets an
// editor walk a document's members with this package's one scanner.
func ValueEnd(doc []byte, i int) (end int, ok bool) {
	if i < 0 || i >= len(doc) {
		return 0, false
	}
	s := scanner{data: doc, pos: i, found: -1}
	if !s.value(nil, 0) {
		return 0, false
	}
	return s.pos, true
}
