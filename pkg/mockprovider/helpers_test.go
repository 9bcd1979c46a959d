package mockprovider

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// env is a running mock (all three providers behind the mux).
type env struct {
	t   *testing.T
	srv *httptest.Server
	all *Servers
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	all := NewServers(opts)
	srv := httptest.NewServer(all)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, all: all}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(method, path, body string, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if strings.HasPrefix(path, "/anthropic/") {
		req.Header.Set("Anthropic-Version", "2023-06-01")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{res.StatusCode, res.Header, b}
}

func (e *env) post(path, body string, hdr ...string) resp {
	e.t.Helper()
	return e.do(http.MethodPost, path, body, hdr...)
}

// last returns the newest record of the server that owns path.
func (e *env) last(path string) Served {
	e.t.Helper()
	var s *Server
	switch {
	case strings.HasPrefix(path, "/openai"):
		s = e.all.OpenAI
	case strings.HasPrefix(path, "/anthropic"):
		s = e.all.Anthropic
	default:
		s = e.all.Gemini
	}
	r, ok := s.Last()
	if !ok {
		e.t.Fatal("nothing served")
	}
	return r
}

// sseEv is one parsed SSE event.
type sseEv struct {
	event string
	data  string
	lines []string
}

// parseSSE splits an SSE body on blank lines (sep is "\n\n" or "\r\n\r\n").
func parseSSE(t *testing.T, body []byte, sep string) []sseEv {
	t.Helper()
	s := string(body)
	if !strings.HasSuffix(s, sep) {
		t.Fatalf("stream does not end with %q: %q", sep, tail(s))
	}
	lineSep := strings.TrimSuffix(sep, sep[:len(sep)/2])
	var out []sseEv
	for _, block := range strings.Split(strings.TrimSuffix(s, sep), sep) {
		var ev sseEv
		for _, line := range strings.Split(block, lineSep) {
			ev.lines = append(ev.lines, line)
			name, val, _ := strings.Cut(line, ":")
			val = strings.TrimPrefix(val, " ")
			switch name {
			case "event":
				ev.event = val
			case "data":
				if ev.data != "" {
					t.Fatalf("multi-line data in %q", block)
				}
				ev.data = val
			default:
				t.Fatalf("unexpected SSE line %q", line)
			}
		}
		out = append(out, ev)
	}
	return out
}

func tail(s string) string {
	if len(s) > 200 {
		return s[len(s)-200:]
	}
	return s
}

func mustJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatalf("bad JSON %q: %v", s, err)
	}
	return m
}

// get walks a decoded JSON value: keys for objects, ints for arrays.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func num(v any) int64 {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return i
	case float64:
		return int64(n)
	}
	return -1
}

func has(v any, key string) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	_, ok = m[key]
	return ok
}

func wantUsage(t *testing.T, got, want usage.Tokens) {
	t.Helper()
	if got != want {
		t.Fatalf("ground truth usage = %+v, want %+v", got, want)
	}
}
