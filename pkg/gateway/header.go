package gateway

import (
	"fmt"
	"slices"
	"strings"
)

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

// CheckAllowHeader refuses a header an operator must not allow-list: a
// credential (the client's would carry its gateway token to the provider),
// one the gateway writes itself, or one that only means something between
// two hops.
func CheckAllowHeader(name string) error {
	lower := strings.ToLower(name)
	switch {
	case lower == "" || strings.ContainsAny(lower, ": \t\r\n"):
		return fmt.Errorf("header %q: not a header name", name)
	case slices.Contains(credentialHeaders, lower):
		return fmt.Errorf("header %q carries the client's credential, which is the gateway token: it never goes upstream", name)
	case slices.Contains(gatewayHeaders, lower):
		return fmt.Errorf("header %q is set by the gateway itself", name)
	case slices.Contains(hopHeaders[:], lower):
		return fmt.Errorf("header %q is hop-by-hop and cannot be forwarded", name)
	case strings.HasPrefix(lower, "x-envoy-"):
		return fmt.Errorf("header %q is in Envoy's own namespace, which the sidecar reserves for itself", name)
	}
	return nil
}

var (
	credentialHeaders = []string{"authorization", "x-api-key", "x-goog-api-key", "proxy-authorization", "cookie"}
	gatewayHeaders    = []string{"content-type", "content-length", "host", "user-agent", "anthropic-version", "accept-encoding"}
	// hopHeaders mean something between two hops only: never passed on,
	// in either direction.
	hopHeaders = [...]string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
)

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
