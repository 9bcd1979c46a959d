package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/account"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	"github.com/tollgate-dev/tollgate/pkg/limit"
	"github.com/tollgate-dev/tollgate/pkg/meter"
	"github.com/tollgate-dev/tollgate/pkg/provider/anthropic"
	"github.com/tollgate-dev/tollgate/pkg/provider/gemini"
	"github.com/tollgate-dev/tollgate/pkg/provider/openai"
	"github.com/tollgate-dev/tollgate/pkg/proxy"
	"github.com/tollgate-dev/tollgate/pkg/telemetry"
	"github.com/tollgate-dev/tollgate/pkg/tokenize"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// providerNames in the order the CLI shows them.
var providerNames = []string{"openai", "anthropic", "gemini"}

// keyEnv is where real provider keys are read from. They are not the SDK
// variables (OPENAI_API_KEY…): those are what the gateway sets for the code
// it serves, so reading them too would hand a user's key to every tenant.
func keyEnv(provider string) string { return "TOLLGATE_" + strings.ToUpper(provider) + "_API_KEY" }

// stack is one running data plane: gateway, proxy and ledger.
type stack struct {
	gw *gateway.Gateway
	// handler is the proxy, counting its requests in flight (inflight)
	// so that stopHTTP can wait until each has settled.
	handler  http.Handler
	inflight *atomic.Int64
	// draining is set when shutdown begins: /readyz then answers 503 while
	// the listener still takes requests, so that Kubernetes stops routing
	// here before connections are refused.
	draining *atomic.Bool
	store    *ledger.DB
	writer   *ledger.Writer
	// keys sign new tokens and verify presented ones; with
	// signing_keys_dir they follow the directory (see watchKeys).
	keys *auth.KeySet
	// revoked is what the verifiers refuse: the ledger's list, polled
	// (revocations), and the data dir's revocation file.
	revoked     auth.Revocations
	revocations *ledger.RevocationWatch
	catalog     *catalog.Catalog
	limiter     *limit.Limiter
	metrics     *telemetry.Telemetry
	// closeLimiter releases the limiter's Redis client, if any.
	closeLimiter func() error
}

type stackOptions struct {
	dataDir string
	// signingKeysDir holds the signing keys shared by every replica (a
	// mounted Secret, read only); empty: keys in dataDir/keys, created on
	// first use.
	signingKeysDir string
	// signingKeysPoll is how often signingKeysDir is read again;
	// signingKeysGrace how long a key added there verifies before it signs.
	signingKeysPoll, signingKeysGrace time.Duration
	catalogFile                       string
	upstreams                         map[string]string // provider → URL overrides
	keys                              map[string]string // provider → real key
	allowHeaders                      map[string][]string
	versions                          []string // accepted anthropic-version values
	maxBody                           int64
	// streamIdle and readTimeout are the proxy's (0: its defaults).
	streamIdle, readTimeout time.Duration
	logger                  *slog.Logger
	limits                  limitOptions
	// ledgerURL is the ledger database; empty: SQLite in dataDir.
	ledgerURL  string
	creditRate meter.Rate // default meter.DefaultRate
	// devAccount creates the local dev account and project (tollgate dev).
	devAccount bool
	telemetry  telemetry.Config
}

func loadCatalog(file string) (*catalog.Catalog, error) {
	if file == "" {
		return catalog.Default()
	}
	return catalog.LoadFile(file)
}

func newStack(ctx context.Context, o stackOptions) (_ *stack, err error) {
	// What is open so far, closed in reverse when a later step fails.
	var undo []func()
	defer func() {
		if err != nil {
			for _, f := range slices.Backward(undo) {
				f()
			}
		}
	}()
	for _, name := range providerNames {
		for _, h := range o.allowHeaders[name] {
			if err := gateway.CheckAllowHeader(h); err != nil {
				return nil, fmt.Errorf("allowed headers for %s: %w", name, err)
			}
		}
	}
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	cat, err := loadCatalog(o.catalogFile)
	if err != nil {
		return nil, err
	}
	signer, pubs, err := loadKeys(o.dataDir, o.signingKeysDir)
	if err != nil {
		return nil, err
	}
	keys := auth.NewKeySet(signer, pubs)
	if o.signingKeysDir != "" {
		// A rotated Secret reaches its mount within a minute or two; the
		// keys follow it here without a restart.
		go auth.KeyDirWatch{
			Interval:  o.signingKeysPoll,
			SignAfter: o.signingKeysGrace,
			OnChange: func(signer string, kids []string) {
				o.logger.Info("signing keys changed", "signer", signer, "keys", kids)
			},
			OnError: func(err error) {
				o.logger.Error("signing keys: keeping the keys in force", "error", err)
			},
		}.Run(ctx, o.signingKeysDir, keys)
	}
	cacheSecret, err := promptCacheSecret(o.dataDir)
	if err != nil {
		return nil, err
	}
	counter, err := tokenize.NewCounter()
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	store, err := ledger.Open(ctx, ledgerURL(o.dataDir, o.ledgerURL))
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { store.Close() })
	if o.devAccount {
		if err := ensureDevAccount(ctx, store); err != nil {
			return nil, err
		}
	}
	lim, closeLimiter, err := newLimiter(o.limits, o.logger)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { closeLimiter() })
	policy, err := account.New(account.Config{Directory: store, Catalog: cat, Limiter: lim, Rate: o.creditRate, Logger: o.logger})
	if err != nil {
		return nil, err
	}
	o.telemetry.Served = func(p, m string) bool { _, ok := cat.Lookup(catalog.Provider(p), m); return ok }
	o.telemetry.LimiterFallbacks = func() int64 { return int64(lim.Stats().Fallbacks) }
	metrics, err := telemetry.New(ctx, o.telemetry)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	log := o.logger
	// The spool holds settled usage until the ledger has it; records a
	// previous run left there are written first.
	writer, err := ledger.NewWriter(store, spoolDir(o.dataDir), ledger.WriterOptions{
		OnError:  func(err error) { log.Error("usage ledger", "error", err) },
		OnStored: policy.Stored,
	})
	if err != nil {
		if errors.Is(err, ledger.ErrSpoolInUse) {
			return nil, fmt.Errorf("another gateway is running on data dir %s (tollgate env --data-dir %s shows a dev one); stop it or give this one another --data-dir: %w", o.dataDir, o.dataDir, err)
		}
		return nil, err
	}
	ups, err := proxy.ParseUpstreams(o.upstreams)
	if err != nil {
		return nil, err
	}
	upstreams := make(map[string]gateway.Upstream, len(providerNames))
	for _, name := range providerNames {
		upstreams[name] = gateway.Upstream{Key: o.keys[name], AllowHeaders: lower(o.allowHeaders[name])}
	}
	// Revocations made through any replica, the admin API or the CLI reach
	// the ledger; every replica polls it each second, so a revoked token
	// is refused everywhere within about a second.
	watch, err := store.WatchRevocations(ctx, ledger.RevocationWatchOptions{
		OnError: func(err error) { log.Error("revocation list: keeping the last one read", "error", err) },
	})
	if err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	undo = append(undo, watch.Close)
	file, err := auth.NewFileRevocations(filepath.Join(o.dataDir, "revoked"))
	if err != nil {
		return nil, err
	}
	revoked := auth.AnyRevocations{watch, file}
	gw := gateway.New(gateway.Config{
		Providers:      []gateway.Provider{openai.New(), anthropic.New(o.versions...), gemini.New()},
		Upstreams:      upstreams,
		Catalog:        cat,
		Verifier:       auth.NewKeySetVerifier(keys, revoked),
		Policy:         policy,
		Recorder:       recordUsage(writer, metrics, log),
		Counter:        counter,
		MaxRequestBody: o.maxBody,
		CacheKeySecret: cacheSecret,
		Logger:         o.logger,
	})
	px, err := proxy.New(proxy.Config{Gateway: gw, Upstreams: ups, Logger: o.logger, StreamIdleTimeout: o.streamIdle})
	if err != nil {
		return nil, err
	}
	inflight, draining := new(atomic.Int64), new(atomic.Bool)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && draining.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		inflight.Add(1)
		defer inflight.Add(-1) // also when the proxy aborts a cut body
		px.ServeHTTP(w, r)
	})
	return &stack{gw: gw, handler: handler, inflight: inflight, draining: draining, store: store, writer: writer, keys: keys,
		revoked: revoked, revocations: watch, catalog: cat,
		limiter: lim, metrics: metrics, closeLimiter: closeLimiter}, nil
}

// recordUsage is the gateway's recorder: each settled request's record
// goes to the spool (and the ledger from there) and to the metrics. A
// record the spool refuses (a full or read-only disk, a writer already
// closed) is lost: that is logged with what identifies the request, never
// its content, so that it is not lost silently.
func recordUsage(w *ledger.Writer, m *telemetry.Telemetry, log *slog.Logger) gateway.Recorder {
	return gateway.RecorderFunc(func(r usage.Record) {
		if err := w.Write(r); err != nil {
			log.Error("usage record lost: the spool did not take it", "request_id", r.RequestID,
				"account", r.Account, "project", r.Project, "model", r.Model, "status", string(r.Status),
				"credits", r.Credits, "error", err)
		}
		m.Record(r)
	})
}

// stopHTTP stops srv, which serves s.handler: it takes no new requests,
// gives those in flight until ctx ends (the grace) to finish, then cuts the
// rest (closing their connections cancels them, and each settles as cut,
// its usage so far recorded) and waits until every one has settled, so
// that Close finds their records. It reports how many requests it cut.
func (s *stack) stopHTTP(ctx context.Context, srv *http.Server) (cut int64) {
	if srv.Shutdown(ctx) == nil {
		return 0
	}
	cut = s.inflight.Load()
	_ = srv.Close()
	// A cut request settles at once (its upstream call is canceled with
	// it); the bound only keeps a wedged handler from holding the exit.
	for deadline := time.Now().Add(10 * time.Second); s.inflight.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	return cut
}

// loadKeys returns the signer and the keys tokens are verified with: every
// key in signingKeysDir when set (shared by the replicas, never written),
// else every key in dataDir/keys, where one is created on first use.
func loadKeys(dataDir, signingKeysDir string) (*auth.Signer, map[string]ed25519.PublicKey, error) {
	if signingKeysDir != "" {
		signer, keys, err := auth.LoadKeyDir(signingKeysDir)
		if err != nil {
			return nil, nil, fmt.Errorf("signing_keys_dir: %w", err)
		}
		return signer, keys, nil
	}
	signer, err := auth.LoadOrCreateSigner(dataDir)
	if err != nil {
		return nil, nil, fmt.Errorf("signing key: %w", err)
	}
	keys, err := auth.LoadKeyring(dataDir)
	if err != nil {
		return nil, nil, fmt.Errorf("signing key: %w", err)
	}
	return signer, keys, nil
}

// ledgerURL is the ledger a command works on: url when set, else SQLite
// in the data dir.
func ledgerURL(dataDir, url string) string {
	if url == "" {
		return "sqlite://" + filepath.Join(dataDir, "usage.db")
	}
	return url
}

// closeTimeout bounds the ledger flush on the way out: records it could
// not store stay in the spool, for the next start.
const closeTimeout = 10 * time.Second

// closeAndLog flushes every pending usage record and closes the ledger, on
// the way out of a command. What it could not do (records left in the
// spool, for the next start, when the ledger is down) is logged, since
// nothing else would say so. The flush is not cut short by a second signal:
// with the ledger up it takes milliseconds, and closeTimeout bounds it
// otherwise (a third signal kills the process).
func (s *stack) closeAndLog(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	s.revocations.Close()
	err := errors.Join(s.writer.Close(ctx), s.store.Close(), s.closeLimiter(), s.metrics.Shutdown(ctx))
	if err != nil {
		log.Error("shutdown", "error", err)
	}
}

func lower(in []string) []string {
	out := make([]string, 0, len(in))
	for _, h := range in {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			out = append(out, h)
		}
	}
	return out
}

// parsePairs parses NAME=VALUE flags.
func parsePairs(pairs []string, what string) (map[string]string, error) {
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("%s %q: want provider=VALUE, e.g. openai=http://127.0.0.1:9000", what, p)
		}
		out[strings.ToLower(k)] = v
	}
	return out, nil
}

// spoolDir is where the gateway on dataDir keeps settled usage records
// until its ledger has them.
func spoolDir(dataDir string) string { return filepath.Join(dataDir, "spool") }

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func baseURLFor(addr string) string {
	u := url.URL{Scheme: "http", Host: addr}
	return u.String()
}

// promptCacheKeyEnv holds the prompt cache secret when replicas must share
// it (the chart sets it from a Secret); otherwise each data dir keeps one.
const promptCacheKeyEnv = "TOLLGATE_PROMPT_CACHE_KEY"

// promptCacheSecret is the secret per-account prompt cache keys are an
// HMAC under: from $TOLLGATE_PROMPT_CACHE_KEY (at least 32 characters,
// hashed to 32 bytes) so that every replica computes the same keys, else
// kept in the data dir.
func promptCacheSecret(dataDir string) ([]byte, error) {
	if v := os.Getenv(promptCacheKeyEnv); v != "" {
		if len(v) < 32 {
			return nil, fmt.Errorf("%s: want at least 32 random characters", promptCacheKeyEnv)
		}
		sum := sha256.Sum256([]byte(v))
		return sum[:], nil
	}
	return loadOrCreateSecret(filepath.Join(dataDir, "prompt-cache.key"))
}

// loadOrCreateSecret keeps a random 32-byte secret in path, so values keyed
// by it (prompt cache keys) stay stable across restarts.
func loadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(b) == 32 {
		return b, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("secret %s: %w", path, err)
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("secret %s: %w", path, err)
	}
	return b, nil
}
