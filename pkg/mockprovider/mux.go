package mockprovider

import (
	"net/http"
	"strings"
)

// Servers bundles one mock of each provider. It is an http.Handler that
// serves them under /openai, /anthropic and /gemini (the prefix is stripped
// before the provider sees the request, so e.g. OPENAI_BASE_URL=
// http://host/openai/v1 and ANTHROPIC_BASE_URL=http://host/anthropic work).
type Servers struct {
	OpenAI, Anthropic, Gemini *Server
}

// NewServers returns the three mocks, sharing opts.
func NewServers(opts Options) *Servers {
	return &Servers{OpenAI: NewOpenAI(opts), Anthropic: NewAnthropic(opts), Gemini: NewGemini(opts)}
}

// NewMux serves all three mocks on one handler under /openai, /anthropic
// and /gemini. It returns a *Servers.
func NewMux(opts Options) http.Handler { return NewServers(opts) }

// Reset clears every log.
func (s *Servers) Reset() {
	s.OpenAI.Reset()
	s.Anthropic.Reset()
	s.Gemini.Reset()
}

// ServeHTTP dispatches on the first path segment.
func (s *Servers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, p := range []struct {
		prefix string
		srv    *Server
	}{{"/openai", s.OpenAI}, {"/anthropic", s.Anthropic}, {"/gemini", s.Gemini}} {
		if r.URL.Path == p.prefix || strings.HasPrefix(r.URL.Path, p.prefix+"/") {
			http.StripPrefix(p.prefix, p.srv).ServeHTTP(w, r)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte(`{"error":{"message":"unknown provider prefix: use /openai, /anthropic or /gemini","type":"invalid_request_error","param":null,"code":null}}` + "\n"))
}
