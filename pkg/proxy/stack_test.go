package proxy_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
	"github.com/tollgate-dev/tollgate/pkg/provider/anthropic"
	"github.com/tollgate-dev/tollgate/pkg/provider/gemini"
	"github.com/tollgate-dev/tollgate/pkg/provider/openai"
	"github.com/tollgate-dev/tollgate/pkg/proxy"
	"github.com/tollgate-dev/tollgate/pkg/tokenize"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// The real in-process stack: gateway with the three providers, the default
// catalog (or an overlay), an ed25519 verifier, the o200k counter, an
// in-memory recorder, and the HTTP proxy in front of mockprovider upstreams.

// counter is built once: the tokenizer table takes tens of milliseconds.
var counter = sync.OnceValues(tokenize.NewCounter)

type stackOptions struct {
	maxBody int64
	keys    map[string]string   // provider → real key
	allow   map[string][]string // provider → allow-listed client headers
	overlay string              // catalog overlay YAML
	mock    mockprovider.Options
	// upstream, when set, replaces the mock as every provider's upstream
	// root (the provider name is appended as a path prefix).
	upstream string
	// idle is the proxy's stream idle timeout (default: the proxy's).
	idle time.Duration
	// readTimeout is the proxy server's request read timeout (default:
	// proxy.NewServer's).
	readTimeout time.Duration
}

type stack struct {
	t       *testing.T
	mock    *mockprovider.Servers
	mockURL string
	gwURL   string
	signer  *auth.Signer
	revoked *auth.RevocationSet
	rec     *recorder
	token   string // valid token for account "acct-1", project "proj-1"
	seq     atomic.Int64
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	cnt, err := counter()
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	if o.overlay != "" {
		if cat, err = catalog.Load(cat, []byte(o.overlay)); err != nil {
			t.Fatal(err)
		}
	}
	signer, err := auth.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	mock := mockprovider.NewServers(o.mock)
	mockSrv := httptest.NewServer(mock)
	t.Cleanup(mockSrv.Close)

	ups := make(map[string]gateway.Upstream, 3)
	for _, p := range []string{"openai", "anthropic", "gemini"} {
		ups[p] = gateway.Upstream{Key: o.keys[p], AllowHeaders: o.allow[p]}
	}
	rec := newRecorder()
	revoked := auth.NewRevocationSet()
	gw := gateway.New(gateway.Config{
		Providers:      []gateway.Provider{openai.New(), anthropic.New(), gemini.New()},
		Upstreams:      ups,
		Catalog:        cat,
		Verifier:       auth.NewVerifier(map[string]ed25519.PublicKey{signer.KeyID(): signer.PublicKey()}, revoked),
		Recorder:       rec,
		Counter:        cnt,
		MaxRequestBody: o.maxBody,
	})
	upBase := mockSrv.URL
	if o.upstream != "" {
		upBase = o.upstream
	}
	upURLs := make(map[string]*url.URL, 3)
	for _, p := range []string{"openai", "anthropic", "gemini"} {
		u, err := url.Parse(upBase + "/" + p)
		if err != nil {
			t.Fatal(err)
		}
		upURLs[p] = u
	}
	px, err := proxy.New(proxy.Config{Gateway: gw, Upstreams: upURLs, StreamIdleTimeout: o.idle})
	if err != nil {
		t.Fatal(err)
	}
	gwSrv := httptest.NewUnstartedServer(nil)
	gwSrv.Config = proxy.NewServer(px, o.readTimeout)
	gwSrv.Start()
	t.Cleanup(gwSrv.Close)

	s := &stack{t: t, mock: mock, mockURL: mockSrv.URL, gwURL: gwSrv.URL, signer: signer, revoked: revoked, rec: rec}
	s.token = s.mint(auth.Claims{Account: "acct-1", Project: "proj-1"})
	return s
}

// mint signs a token; a zero ExpiresAt means one hour from now.
func (s *stack) mint(c auth.Claims) string {
	s.t.Helper()
	if c.ExpiresAt.IsZero() {
		c.ExpiresAt = time.Now().Add(time.Hour)
	}
	tok, err := s.signer.Mint(c)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// served returns the log of the mock behind provider.
func (s *stack) served(provider string) []mockprovider.Served {
	switch provider {
	case "openai":
		return s.mock.OpenAI.Served()
	case "anthropic":
		return s.mock.Anthropic.Served()
	case "gemini":
		return s.mock.Gemini.Served()
	}
	s.t.Fatalf("no provider %q", provider)
	return nil
}

func (s *stack) servedAll() int {
	return len(s.mock.OpenAI.Served()) + len(s.mock.Anthropic.Served()) + len(s.mock.Gemini.Served())
}

// lastServed returns the one request provider's mock has seen since the
// log was reset.
func (s *stack) onlyServed(provider string) mockprovider.Served {
	s.t.Helper()
	log := s.served(provider)
	if len(log) != 1 {
		s.t.Fatalf("%s mock served %d requests, want 1", provider, len(log))
	}
	return log[0]
}

type response struct {
	status int
	header http.Header
	body   []byte
	// id is the gateway's request id (x-tollgate-request-id), which keys
	// the usage record.
	id string
}

// request is one client call through the gateway.
type request struct {
	method string
	path   string // with provider prefix and query
	body   []byte
	header http.Header
	// chunked sends the body without a Content-Length.
	chunked bool
	// requestID, when set, is sent as x-request-id instead of a fresh one.
	requestID string
}

// do sends r with a fresh x-request-id and reads the whole response.
func (s *stack) do(r request) response {
	s.t.Helper()
	return s.doCtx(context.Background(), r)
}

func (s *stack) doCtx(ctx context.Context, r request) response {
	s.t.Helper()
	req := s.newRequest(ctx, r)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, b, res.Header.Get("x-tollgate-request-id")}
}

func (s *stack) newRequest(ctx context.Context, r request) *http.Request {
	s.t.Helper()
	method := r.method
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
		if r.chunked {
			body = io.MultiReader(body) // unknown length: sent chunked
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, s.gwURL+r.path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	for k, vs := range r.header {
		req.Header[k] = append([]string(nil), vs...)
	}
	if r.body != nil && req.Header.Get("content-type") == "" {
		req.Header.Set("content-type", "application/json")
	}
	id := r.requestID
	if id == "" {
		id = fmt.Sprintf("%s-%d", strings.ReplaceAll(s.t.Name(), "/", "-"), s.seq.Add(1))
	}
	req.Header.Set("x-request-id", id)
	return req
}

// recorder keeps every usage record, by request id (a repeated id keeps
// every record, so tests can see the collision).
type recorder struct {
	mu   sync.Mutex
	recs map[string][]usage.Record
	ch   chan struct{}
}

func newRecorder() *recorder {
	return &recorder{recs: map[string][]usage.Record{}, ch: make(chan struct{})}
}

func (r *recorder) Record(rec usage.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs[rec.RequestID] = append(r.recs[rec.RequestID], rec)
	close(r.ch)
	r.ch = make(chan struct{})
}

// wait returns the record of request id. The proxy settles after the
// response is written, so the record may trail the client's read.
func (r *recorder) wait(t testing.TB, id string) usage.Record {
	t.Helper()
	return r.waitN(t, id, 1)[0]
}

// waitN waits for n records under id and returns them.
func (r *recorder) waitN(t testing.TB, id string, n int) []usage.Record {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		recs := slices.Clone(r.recs[id])
		ch := r.ch
		r.mu.Unlock()
		if len(recs) >= n {
			if len(recs) > n {
				t.Errorf("%d usage records for request %s, want %d", len(recs), id, n)
			}
			return recs
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d usage records for request %s after 10s, want %d", len(recs), id, n)
		}
	}
}

// only waits for the stack's first record and returns it: for a request
// whose response never carried the gateway's request id.
func (r *recorder) only(t testing.TB) usage.Record {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ch := r.ch
		for id := range r.recs {
			r.mu.Unlock()
			return r.wait(t, id)
		}
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatal("no usage record after 10s")
		}
	}
}

// ids returns every request id recorded so far and how many records each has.
func (r *recorder) ids() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.recs))
	for id, recs := range r.recs {
		out[id] = len(recs)
	}
	return out
}

// Provider fixtures: where a plain request goes, a valid body, and the
// gateway token in the provider's usual form.

type providerFixture struct {
	name  string
	path  string // non-streaming generation path, prefix included
	model string
	// body returns a valid request body for model with text as the prompt.
	body func(model, text string) []byte
	// auth adds token the way the provider's SDK sends it.
	auth func(h http.Header, token string)
}

const promptMarker = "PROMPT-SECRET-2f9c"

var fixtures = []providerFixture{
	{
		name: "openai", path: "/openai/v1/chat/completions", model: "gpt-4o-mini",
		body: func(model, text string) []byte {
			return fmt.Appendf(nil, `{"model":%q,"messages":[{"role":"user","content":%q}]}`, model, text)
		},
		auth: func(h http.Header, tok string) { h.Set("Authorization", "Bearer "+tok) },
	},
	{
		name: "anthropic", path: "/anthropic/v1/messages", model: "claude-sonnet-4-5",
		body: func(model, text string) []byte {
			return fmt.Appendf(nil, `{"model":%q,"max_tokens":64,"messages":[{"role":"user","content":%q}]}`, model, text)
		},
		auth: func(h http.Header, tok string) {
			h.Set("x-api-key", tok)
			h.Set("anthropic-version", "2023-06-01")
		},
	},
	{
		name: "gemini", path: "/gemini/v1beta/models/gemini-2.5-flash:generateContent", model: "gemini-2.5-flash",
		body: func(_, text string) []byte {
			return fmt.Appendf(nil, `{"contents":[{"role":"user","parts":[{"text":%q}]}]}`, text)
		},
		auth: func(h http.Header, tok string) { h.Set("x-goog-api-key", tok) },
	},
}

func fixture(name string) providerFixture {
	for _, f := range fixtures {
		if f.name == name {
			return f
		}
	}
	panic("no fixture " + name)
}

func (f providerFixture) header(tok string) http.Header {
	h := http.Header{}
	f.auth(h, tok)
	return h
}
