package gateway

import "strings"

// Header is one HTTP header field. Names are compared case-insensitively;
// adapters may pass them in any case and the gateway emits lower case, as
// HTTP/2 and Envoy require.
type Header struct {
	Name, Value string
}

// Headers is an ordered header list. A slice rather than a map keeps the
// per-request cost down and preserves what the adapter saw.
type Headers []Header

// Get returns the first value of name, or "".
func (h Headers) Get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Add appends a field.
func (h *Headers) Add(name, value string) { *h = append(*h, Header{Name: name, Value: value}) }

// AppendAllowed appends to dst the client headers named in allow (lower
// case). It is how an operator's allow-list reaches upstream; nothing else
// the client sent does.
func AppendAllowed(dst, client Headers, allow []string) Headers {
	for _, name := range allow {
		for _, f := range client {
			if strings.EqualFold(f.Name, name) {
				dst = append(dst, Header{Name: name, Value: f.Value})
			}
		}
	}
	return dst
}
