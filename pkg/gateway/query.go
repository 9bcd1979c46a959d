package gateway

import (
	"encoding/json"
	"iter"
	"net/url"
	"slices"
	"strings"
)

// QueryParam is one parameter of a raw query string, as written: the whole
// pair and its key and value, still escaped.
type QueryParam struct{ Pair, Key, Value string }

// QueryParams yields the non-empty parameters of a raw query string in
// order.
func QueryParams(rawQuery string) iter.Seq[QueryParam] {
	return func(yield func(QueryParam) bool) {
		for rawQuery != "" {
			var pair string
			pair, rawQuery, _ = strings.Cut(rawQuery, "&")
			if pair == "" {
				continue
			}
			k, v, _ := strings.Cut(pair, "=")
			if !yield(QueryParam{Pair: pair, Key: k, Value: v}) {
				return
			}
		}
	}
}

// Unescaped is s query-unescaped, or s as written when it is not validly
// escaped.
func Unescaped(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// QueryValue returns the first value of key in a raw query string ("" when
// that value is not validly escaped).
func QueryValue(rawQuery, key string) string {
	for p := range QueryParams(rawQuery) {
		if Unescaped(p.Key) == key {
			v, _ := url.QueryUnescape(p.Value)
			return v
		}
	}
	return ""
}

// QueryWithout returns rawQuery without the parameters named in drop,
// keeping the others byte for byte and in order.
func QueryWithout(rawQuery string, drop ...string) string {
	var b strings.Builder
	for p := range QueryParams(rawQuery) {
		if slices.Contains(drop, Unescaped(p.Key)) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.Pair)
	}
	return b.String()
}

// JSONString returns s as a JSON string literal, for providers rendering
// error bodies by hand.
func JSONString(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

// PathSegment decodes one escaped path segment (a model name); ok is false
// when it is not validly escaped or holds a slash once decoded.
func PathSegment(escaped string) (string, bool) {
	s, err := url.PathUnescape(escaped)
	if err != nil || s == "" || strings.Contains(s, "/") {
		return "", false
	}
	return s, true
}
