// Package gateway sequences one request through Tollgate: request headers,
// request body, response headers, response body chunks, settlement. It is
// the only place where those steps are ordered. Adapters (the standalone
// HTTP proxy, the Envoy ext_proc server) drive an Exchange; the gateway knows
// nothing of net/http or Envoy.
package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// TokenVerifier checks gateway tokens.
type TokenVerifier interface {
	Verify(token string, now time.Time) (auth.Claims, error)
}

// Recorder receives the one usage record of every request. It must not
// block: the hot path hands records over and moves on.
type Recorder interface {
	Record(rec usage.Record)
}

// InputCounter counts and estimates input tokens of request bodies.
type InputCounter interface {
	// InputTokens counts input tokens, stopping early once over limit.
	InputTokens(body []byte, limit int64) (int64, error)
	// Estimate is a cheap input estimate for a request whose response
	// carried no usage.
	Estimate(body []byte) int64
	// CountText counts the tokens of plain text.
	CountText(s string) int64
}

// ModelLister is the catalog as seen by one provider's listing routes.
type ModelLister interface {
	List() []catalog.Model
	Get(name string) (catalog.Model, bool)
}

// Upstream is how one provider is reached.
type Upstream struct {
	// Key is the real provider key; empty calls upstream without one (local
	// fakes and replay servers).
	Key string
	// AllowHeaders are client headers (lower case) an operator lets through.
	AllowHeaders []string
}

// Config assembles a Gateway.
type Config struct {
	Providers []Provider
	Upstreams map[string]Upstream // by provider name
	Catalog   *catalog.Catalog
	Verifier  TokenVerifier
	// Policy, when set, admits accounts and requests and prices settled
	// ones; without it every verified token may call without limit.
	Policy   Policy
	Recorder Recorder
	Counter  InputCounter
	// MaxRequestBody caps request bodies (default 32 MiB); larger ones get a
	// provider-shaped 413.
	MaxRequestBody int64
	// MaxResponseDoc caps how much of a non-streamed JSON response, or of
	// one SSE event, is kept to read its usage (default 64 MiB); usage
	// past it is not read (a whole response's is then estimated).
	MaxResponseDoc int64
	// CacheKeySecret keys the per-account prompt cache keys. Keep it stable
	// across restarts and replicas so cache hits survive them; when empty a
	// random one is made (keys then change on restart).
	CacheKeySecret []byte
	Logger         *slog.Logger
	Now            func() time.Time
}

// cacheKeyEntries bounds the per-account prompt cache key memo.
const cacheKeyEntries = 16384

// Defaults applied by New.
const (
	DefaultMaxRequestBody = 32 << 20
	DefaultMaxResponseDoc = 64 << 20
)

// Gateway holds what every exchange shares. It is safe for concurrent use.
type Gateway struct {
	cfg       Config
	auth      map[string]Headers // provider → the real key's headers, rendered once
	cacheKeys *lru.Cache[string, []byte]
	providers map[string]Provider
	listers   map[string]ModelLister
	log       *slog.Logger
	now       func() time.Time
}

// New builds a Gateway from cfg.
func New(cfg Config) *Gateway {
	if cfg.MaxRequestBody <= 0 {
		cfg.MaxRequestBody = DefaultMaxRequestBody
	}
	if cfg.MaxResponseDoc <= 0 {
		cfg.MaxResponseDoc = DefaultMaxResponseDoc
	}
	g := &Gateway{
		cfg:       cfg,
		providers: make(map[string]Provider, len(cfg.Providers)),
		listers:   make(map[string]ModelLister, len(cfg.Providers)),
		auth:      make(map[string]Headers, len(cfg.Providers)),
		log:       cfg.Logger,
		now:       cfg.Now,
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if len(g.cfg.CacheKeySecret) == 0 {
		g.cfg.CacheKeySecret = make([]byte, 32)
		_, _ = rand.Read(g.cfg.CacheKeySecret)
	}
	g.cacheKeys, _ = lru.New[string, []byte](cacheKeyEntries)
	for _, p := range cfg.Providers {
		g.providers[p.Name()] = p
		g.listers[p.Name()] = catalogLister{cfg.Catalog, catalog.Provider(p.Name())}
		if key := cfg.Upstreams[p.Name()].Key; key != "" {
			g.auth[p.Name()] = p.AuthHeaders(key)
		}
	}
	return g
}

// Providers lists the provider names served, for adapters that route by them.
func (g *Gateway) Providers() []string {
	names := make([]string, 0, len(g.cfg.Providers))
	for _, p := range g.cfg.Providers {
		names = append(names, p.Name())
	}
	return names
}

// NewExchange starts one request. requestID must be unique per request: it
// keys the usage record, so a retried write never bills twice.
func (g *Gateway) NewExchange(ctx context.Context, requestID string) *Exchange {
	return &Exchange{g: g, ctx: ctx, id: requestID, start: g.now()}
}

// cacheKey returns the account's OpenAI prompt_cache_key as a JSON string:
// an HMAC of the account under the operator's secret, so it is stable for
// an account and cannot be computed — and an account's cache joined — by
// anyone who merely knows the account id.
func (g *Gateway) cacheKey(account string) []byte {
	if k, ok := g.cacheKeys.Get(account); ok {
		return k
	}
	mac := hmac.New(sha256.New, g.cfg.CacheKeySecret)
	mac.Write([]byte(account))
	sum := mac.Sum(nil)
	k := make([]byte, 0, 2+3+24)
	k = append(k, `"tg-`...)
	k = hex.AppendEncode(k, sum[:12])
	k = append(k, '"')
	g.cacheKeys.Add(account, k)
	return k
}

type catalogLister struct {
	c *catalog.Catalog
	p catalog.Provider
}

func (l catalogLister) List() []catalog.Model { return l.c.Models(l.p) }
func (l catalogLister) Get(name string) (catalog.Model, bool) {
	return l.c.Lookup(l.p, name)
}

// splitPrefix splits "/openai/v1/chat?x" into "openai", "/v1/chat", "x",
// slicing target without copying it.
func splitPrefix(target string) (prefix, path, rawQuery string) {
	path, rawQuery, _ = strings.Cut(target, "?")
	rp := RoutePrefix(path)
	if path = path[len(rp):]; path == "" {
		path = "/"
	}
	return strings.TrimPrefix(rp, "/"), path, rawQuery
}

// RoutePrefix is the first segment of target's path with its leading slash
// ("/gemini" of "/gemini/v1beta/models/x?alt=sse"): the segment that names
// the provider, here and in the sidecar's routes.
func RoutePrefix(target string) string {
	p, _, _ := strings.Cut(target, "?")
	rest := strings.TrimPrefix(p, "/")
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return p[:len(p)-len(rest)+i]
	}
	return p
}

// RecorderFunc adapts a function to Recorder.
type RecorderFunc func(usage.Record)

// Record implements Recorder.
func (f RecorderFunc) Record(rec usage.Record) { f(rec) }
