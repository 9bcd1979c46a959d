package gateway

import (
	"encoding/json"
	"net/url"
	"strings"
)

// QueryValue returns the first value of key in a raw query string.
func QueryValue(rawQuery, key string) string {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(pair, "=")
		if uk, err := url.QueryUnescape(k); err == nil && uk == key {
			if uv, err := url.QueryUnescape(v); err == nil {
				return uv
			}
			return ""
		}
	}
	return ""
}

// QueryWithout returns rawQuery without the parameters named in drop,
// keeping the others byte for byte and in order.
func QueryWithout(rawQuery string, drop ...string) string {
	if rawQuery == "" {
		return ""
	}
	var b strings.Builder
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		if pair == "" {
			continue
		}
		k, _, _ := strings.Cut(pair, "=")
		uk, err := url.QueryUnescape(k)
		if err != nil {
			uk = k
		}
		skip := false
		for _, d := range drop {
			if uk == d {
				skip = true
				break
			}
		}
		if skip {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(pair)
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
