// Package gwtest builds the real gateway for adapter tests: the three
// providers, the default catalog, an ed25519 verifier, the o200k counter
// and a recorder that keeps every usage record by request id.
package gwtest

import (
	"crypto/ed25519"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/provider/anthropic"
	"github.com/tollgate-dev/tollgate/pkg/provider/gemini"
	"github.com/tollgate-dev/tollgate/pkg/provider/openai"
	"github.com/tollgate-dev/tollgate/pkg/tokenize"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// counter is built once: the tokenizer table takes tens of milliseconds.
var counter = sync.OnceValues(tokenize.NewCounter)

// Key is the real provider key the test gateway sends upstream, to every
// provider (mockprovider.Options.APIKey takes one key).
const Key = "sk-real-upstream-key"

// Providers are the providers served, in the order tests run them.
var Providers = []string{"openai", "anthropic", "gemini"}

// Stack is a gateway with what tests need around it.
type Stack struct {
	Gateway  *gateway.Gateway
	Recorder *Recorder
	Signer   *auth.Signer
	// Revoked is the verifier's revocation list.
	Revoked *auth.RevocationSet
	// Token is valid for account "acct-1", project "proj-1".
	Token string
}

// Options tune New.
type Options struct {
	MaxRequestBody int64
	// Recorder replaces the Stack's own (whose Recorder field then stays
	// empty), e.g. to discard records in benchmarks.
	Recorder gateway.Recorder
}

// New builds a Stack.
func New(t testing.TB, o Options) *Stack {
	t.Helper()
	s, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Build builds a Stack outside a test (a benchmark's server process).
func Build(o Options) (*Stack, error) {
	cnt, err := counter()
	if err != nil {
		return nil, err
	}
	cat, err := catalog.Default()
	if err != nil {
		return nil, err
	}
	signer, err := auth.GenerateKey("")
	if err != nil {
		return nil, err
	}
	ups := make(map[string]gateway.Upstream, len(Providers))
	for _, p := range Providers {
		ups[p] = gateway.Upstream{Key: Key}
	}
	var rec *Recorder
	var recorder gateway.Recorder = o.Recorder
	if recorder == nil {
		rec = NewRecorder()
		recorder = rec
	}
	revoked := auth.NewRevocationSet()
	gw := gateway.New(gateway.Config{
		Providers:      []gateway.Provider{openai.New(), anthropic.New(), gemini.New()},
		Upstreams:      ups,
		Catalog:        cat,
		Verifier:       auth.NewVerifier(map[string]ed25519.PublicKey{signer.KeyID(): signer.PublicKey()}, revoked),
		Recorder:       recorder,
		Counter:        cnt,
		MaxRequestBody: o.MaxRequestBody,
	})
	tok, err := signer.Mint(auth.Claims{Account: "acct-1", Project: "proj-1", ExpiresAt: time.Now().Add(24 * time.Hour)})
	if err != nil {
		return nil, err
	}
	return &Stack{Gateway: gw, Recorder: rec, Signer: signer, Revoked: revoked, Token: tok}, nil
}

// Mint signs a token; a zero ExpiresAt means one hour from now.
func (s *Stack) Mint(t testing.TB, c auth.Claims) string {
	t.Helper()
	if c.ExpiresAt.IsZero() {
		c.ExpiresAt = time.Now().Add(time.Hour)
	}
	tok, err := s.Signer.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Recorder keeps every usage record by request id, so tests can count them.
type Recorder struct {
	mu   sync.Mutex
	recs map[string][]usage.Record
	all  []usage.Record // in the order recorded
	ch   chan struct{}
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{recs: map[string][]usage.Record{}, ch: make(chan struct{})}
}

// Record implements gateway.Recorder.
func (r *Recorder) Record(rec usage.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs[rec.RequestID] = append(r.recs[rec.RequestID], rec)
	r.all = append(r.all, rec)
	close(r.ch)
	r.ch = make(chan struct{})
}

// Wait returns the record of request id once it is there.
func (r *Recorder) Wait(t testing.TB, id string) usage.Record {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		recs := slices.Clone(r.recs[id])
		ch := r.ch
		r.mu.Unlock()
		if len(recs) > 0 {
			return recs[0]
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no usage record for request %q after 10s", id)
		}
	}
}

// Counts returns how many records each request id has.
func (r *Recorder) Counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.recs))
	for id, recs := range r.recs {
		out[id] = len(recs)
	}
	return out
}

// All returns every record in the order recorded.
func (r *Recorder) All() []usage.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.all)
}

// Credentials are the values a client sent where SDKs put keys
// (authorization, with and without its scheme, x-api-key, x-goog-api-key)
// and the key and $key parameters of its :path; short ones are left out
// (they would match anything). The Envoy adapters' fuzz tests check that
// none of them goes upstream.
func Credentials(h []*corev3.HeaderValue) []string {
	var out []string
	add := func(v string) {
		if len(v) >= 8 {
			out = append(out, v)
		}
	}
	for _, hv := range h {
		v := string(hv.GetRawValue())
		switch strings.ToLower(hv.GetKey()) {
		case "authorization":
			add(v)
			if len(v) > 7 {
				add(strings.TrimSpace(v[7:]))
			}
		case "x-api-key", "x-goog-api-key":
			add(strings.TrimSpace(v))
		case ":path":
			_, q, _ := strings.Cut(v, "?")
			add(gateway.QueryValue(q, "key"))
			add(gateway.QueryValue(q, "$key")) // Google's other spelling
		}
	}
	return out
}
