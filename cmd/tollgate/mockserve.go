package main

import (
	"encoding/json"
	"net/http"

	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
)

// servedPath exposes the mock providers' ground truth (what they received
// and the usage they billed) so end-to-end tests, and users checking their
// own CI, can compare it with what the gateway metered.
const servedPath = "/_mock/served"

type servedEntry struct {
	Provider string `json:"provider"`
	mockprovider.Served
}

// mockHandler serves the three mocks plus their ground-truth log.
func mockHandler(s *mockprovider.Servers) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", s)
	mux.HandleFunc("GET "+servedPath, func(w http.ResponseWriter, r *http.Request) {
		var out []servedEntry
		for _, m := range []*mockprovider.Server{s.OpenAI, s.Anthropic, s.Gemini} {
			for _, sv := range m.Served() {
				out = append(out, servedEntry{Provider: m.Provider(), Served: sv})
			}
		}
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("DELETE "+servedPath, func(w http.ResponseWriter, r *http.Request) {
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}
