package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/meter"
	"github.com/tollgate-dev/tollgate/pkg/proxy"
	"github.com/tollgate-dev/tollgate/pkg/strictyaml"
	"github.com/tollgate-dev/tollgate/pkg/telemetry"
)

// serveConfig is the `tollgate serve` config file. Flags override it.
type serveConfig struct {
	Listen         string                    `yaml:"listen"`
	GRPCListen     string                    `yaml:"grpc_listen"`
	GRPCSocket     string                    `yaml:"grpc_socket"`
	DataDir        string                    `yaml:"data_dir"`
	Catalog        string                    `yaml:"catalog"`
	MaxRequestBody int64                     `yaml:"max_request_body"`
	LogLevel       string                    `yaml:"log_level"`
	Providers      map[string]providerConfig `yaml:"providers"`
	// SigningKeysDir holds the token signing keys every replica shares
	// (<kid>.pem, PKCS#8 ed25519; a mounted Secret): the kid that sorts
	// last signs, all verify. Read only; empty: a key in data_dir/keys,
	// created on first use (one replica).
	SigningKeysDir string `yaml:"signing_keys_dir"`
	// SigningKeysPoll is how often signing_keys_dir is read again, so keys
	// rotate without a restart (default 10s).
	SigningKeysPoll string `yaml:"signing_keys_poll"`
	// SigningKeysGrace is how long a key added to signing_keys_dir is
	// trusted before it signs, so every replica has read it first
	// (default 2m).
	SigningKeysGrace string `yaml:"signing_keys_grace"`
	// LedgerURL picks the ledger database: postgres://… for PostgreSQL;
	// empty keeps SQLite (usage.db) in the data dir. $TOLLGATE_LEDGER_URL
	// wins, so a password need not sit in the file.
	LedgerURL string `yaml:"ledger_url"`
	// CreditsPerUSD converts list prices to credits (default 180).
	CreditsPerUSD string       `yaml:"credits_per_usd"`
	Limits        limitsConfig `yaml:"limits"`
	// MetricsListen serves Prometheus metrics at /metrics; empty: off.
	MetricsListen string          `yaml:"metrics_listen"`
	Telemetry     telemetryConfig `yaml:"telemetry"`
	// AdminListen serves the admin API (docs/admin.md); empty: off.
	AdminListen string `yaml:"admin_listen"`
	// ShutdownGrace is how long requests in flight may take to finish on
	// SIGTERM before they are cut (default 30s; 0 cuts them at once). Keep
	// it below the pod's terminationGracePeriodSeconds, less the second of
	// health drain, or the kubelet's SIGKILL comes first.
	ShutdownGrace string `yaml:"shutdown_grace"`
	// StreamIdleTimeout ends a proxied response that makes no progress for
	// this long: no bytes from upstream (headers included), or a client
	// that takes none (default 10m, as the sidecar's Envoy).
	StreamIdleTimeout string `yaml:"stream_idle_timeout"`
	// RequestReadTimeout bounds reading a request's head and body on the
	// proxy listener (default 2m).
	RequestReadTimeout string `yaml:"request_read_timeout"`
}

type limitsConfig struct {
	// RedisURL shares the TPM counters between replicas; empty keeps them
	// in memory (one replica). $TOLLGATE_REDIS_URL wins.
	RedisURL string `yaml:"redis_url"`
	// RedisFailureMode is what happens while Redis is unreachable: local
	// (default: decide in memory, counted and logged) or closed (503).
	RedisFailureMode string `yaml:"redis_failure_mode"`
	// MaxKeys bounds the in-memory counters (default 100,000).
	MaxKeys int `yaml:"max_keys"`
}

type telemetryConfig struct {
	// OTLPEndpoint is an OTLP/gRPC collector (host:port or URL); empty:
	// OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT if set, else no OTLP export.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	OTLPInsecure bool   `yaml:"otlp_insecure"`
	ServiceName  string `yaml:"service_name"`
}

type providerConfig struct {
	// Upstream overrides the provider's API root.
	Upstream string `yaml:"upstream"`
	// KeyFile holds the real key (a mounted Secret); it wins over the
	// TOLLGATE_<PROVIDER>_API_KEY variable.
	KeyFile string `yaml:"key_file"`
	// AllowHeaders are client headers passed upstream (none by default).
	AllowHeaders []string `yaml:"allow_headers"`
	// Versions are accepted anthropic-version values (Anthropic only).
	Versions []string `yaml:"versions"`
}

func loadServeConfig(path string) (serveConfig, error) {
	var c serveConfig
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	if err := strictyaml.Decode(b, &c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	for name := range c.Providers {
		if !isProvider(name) {
			return c, fmt.Errorf("config %s: unknown provider %q (want openai, anthropic or gemini)", path, name)
		}
	}
	return c, nil
}

func isProvider(name string) bool {
	for _, p := range providerNames {
		if p == name {
			return true
		}
	}
	return false
}

func newServeCmd() *cobra.Command {
	var (
		configFile, listen, dataDir, catalogFile, logLevel string
		grpcListen, grpcSocket                             string
		upstreamFlags, allowFlags                          []string
		debugListen                                        string
		maxBody                                            int64
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the production gateway (HTTP proxy, Envoy ext_proc/ext_authz over gRPC) from a config file and flags",
		Long: `Runs the gateway as a long-lived process: the HTTP proxy listener and, when
grpc_listen or grpc_socket is set, the Envoy ext_proc and ext_authz services with gRPC
health checking, all over one gateway. Real provider keys come from each
provider's key_file in the config (a mounted Secret) or from TOLLGATE_OPENAI_API_KEY,
TOLLGATE_ANTHROPIC_API_KEY and TOLLGATE_GEMINI_API_KEY. Gateway tokens are verified
with the signing keys in signing_keys_dir (shared by replicas) or else the data dir
(mint them with ` + "`tollgate token mint`" + ` or the admin API); revocations are read
from the ledger every second and from the data dir's revoked file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadServeConfig(configFile)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			// A flag given on the command line wins over the file, which wins
			// over the default.
			pick := func(flag, fromFile, def string) string {
				if f.Changed(flag) {
					v, _ := f.GetString(flag)
					return v
				}
				if fromFile != "" {
					return fromFile
				}
				return def
			}
			listen = pick("listen", cfg.Listen, "127.0.0.1:8080")
			grpcListen = pick("grpc-listen", cfg.GRPCListen, "")
			grpcSocket = pick("grpc-socket", cfg.GRPCSocket, "")
			dataDir = pick("data-dir", cfg.DataDir, defaultDataDir())
			catalogFile = pick("catalog", cfg.Catalog, "")
			logLevel = pick("log-level", cfg.LogLevel, "info")
			if !f.Changed("max-request-body") && cfg.MaxRequestBody != 0 {
				maxBody = cfg.MaxRequestBody
			}
			if maxBody <= 0 {
				return fmt.Errorf("max request body %d: want a positive number of bytes", maxBody)
			}
			logger, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			if cfg.Limits.MaxKeys < 0 {
				return fmt.Errorf("config: limits.max_keys %d: want 0 (the default) or more", cfg.Limits.MaxKeys)
			}
			overrides, err := parsePairs(upstreamFlags, "--upstream")
			if err != nil {
				return err
			}
			allowPairs, err := parseMulti(allowFlags, "--allow-header")
			if err != nil {
				return err
			}
			keys := map[string]string{}
			allow := map[string][]string{}
			var versions []string
			for _, p := range providerNames {
				pc := cfg.Providers[p]
				if _, ok := overrides[p]; !ok && pc.Upstream != "" {
					overrides[p] = pc.Upstream
				}
				key, err := providerKey(p, pc.KeyFile)
				if err != nil {
					return err
				}
				keys[p] = key
				allow[p] = append(pc.AllowHeaders, allowPairs[p]...)
				if p == "anthropic" {
					versions = pc.Versions
				}
			}
			if debugListen != "" {
				addr, err := serveDebug(debugListen)
				if err != nil {
					return err
				}
				logger.Info("serving profiling", "addr", addr)
			}
			keysPoll, err := configDuration("signing_keys_poll", cfg.SigningKeysPoll, 10*time.Second, false)
			if err != nil {
				return err
			}
			keysGrace, err := configDuration("signing_keys_grace", cfg.SigningKeysGrace, 2*time.Minute, true)
			if err != nil {
				return err
			}
			grace, err := configDuration("shutdown_grace", pick("shutdown-grace", cfg.ShutdownGrace, ""), defaultShutdownGrace, true)
			if err != nil {
				return err
			}
			streamIdle, err := configDuration("stream_idle_timeout", cfg.StreamIdleTimeout, proxy.DefaultStreamIdleTimeout, false)
			if err != nil {
				return err
			}
			readTimeout, err := configDuration("request_read_timeout", cfg.RequestReadTimeout, proxy.DefaultReadTimeout, false)
			if err != nil {
				return err
			}
			rate := meter.DefaultRate
			if cfg.CreditsPerUSD != "" {
				if rate, err = meter.ParseRate(cfg.CreditsPerUSD); err != nil {
					return fmt.Errorf("config: credits_per_usd: %w", err)
				}
			}
			return runServe(cmd.Context(), listeners{http: listen, grpc: grpcListen, socket: grpcSocket,
				metrics: pick("metrics-listen", cfg.MetricsListen, ""), admin: pick("admin-listen", cfg.AdminListen, "")}, stackOptions{
				dataDir: dataDir, signingKeysDir: pick("signing-keys-dir", cfg.SigningKeysDir, ""), signingKeysPoll: keysPoll, signingKeysGrace: keysGrace, catalogFile: catalogFile, upstreams: overrides, keys: keys,
				allowHeaders: allow, versions: versions, maxBody: maxBody, logger: logger,
				streamIdle: streamIdle, readTimeout: readTimeout,
				ledgerURL: cmp.Or(os.Getenv("TOLLGATE_LEDGER_URL"), cfg.LedgerURL),
				limits: limitOptions{
					redisURL:    cmp.Or(os.Getenv("TOLLGATE_REDIS_URL"), cfg.Limits.RedisURL),
					failureMode: cfg.Limits.RedisFailureMode,
					maxKeys:     cfg.Limits.MaxKeys,
				},
				creditRate: rate,
				telemetry: telemetry.Config{
					OTLPEndpoint: cfg.Telemetry.OTLPEndpoint, OTLPInsecure: cfg.Telemetry.OTLPInsecure,
					ServiceName: cfg.Telemetry.ServiceName,
				},
			}, grace)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML config file")
	f.StringVar(&listen, "listen", "", "proxy listen address (default 127.0.0.1:8080)")
	f.StringVar(&grpcListen, "grpc-listen", "", "serve Envoy ext_proc/ext_authz and gRPC health on this TCP address (e.g. 127.0.0.1:9002)")
	f.StringVar(&grpcSocket, "grpc-socket", "", "serve Envoy ext_proc/ext_authz and gRPC health on this unix socket (e.g. /run/tollgate/ext.sock)")
	f.StringVar(&dataDir, "data-dir", "", "keys and usage ledger ($TOLLGATE_DATA_DIR, default ~/.tollgate)")
	f.String("signing-keys-dir", "", "directory of shared token signing keys, <kid>.pem (e.g. a mounted Secret); the last kid signs, all verify; default: a key in the data dir")
	f.StringVar(&catalogFile, "catalog", "", "YAML file that overrides or extends the model catalog")
	f.StringArrayVar(&upstreamFlags, "upstream", nil, "provider=URL: override a provider's API root")
	f.StringArrayVar(&allowFlags, "allow-header", nil, "provider=header: pass this client header upstream (e.g. anthropic=anthropic-beta)")
	f.Int64Var(&maxBody, "max-request-body", 32<<20, "largest request body accepted, in bytes (larger: 413)")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (default info)")
	f.String("metrics-listen", "", "serve Prometheus metrics at /metrics on this address (default off)")
	f.String("admin-listen", "", adminListenUsage)
	f.String("shutdown-grace", "", "how long requests in flight may take to finish on SIGTERM before they are cut (default 30s)")
	f.StringVar(&debugListen, "debug-listen", "", "serve Go profiling endpoints (/debug/pprof) on this address; keep it on loopback")
	return cmd
}

// configDuration parses the config key's value, def when empty; zero is
// allowed only when zeroOK.
func configDuration(key, value string, def time.Duration, zeroOK bool) (time.Duration, error) {
	if value == "" {
		return def, nil
	}
	d, err := time.ParseDuration(value)
	if err != nil || d < 0 || d == 0 && !zeroOK {
		want := "a positive duration such as 10s"
		if zeroOK {
			want = "a duration such as 2m, or 0"
		}
		return 0, fmt.Errorf("config: %s %q: want %s", key, value, want)
	}
	return d, nil
}

func providerKey(provider, file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			if looksLikeKey(file) {
				// The key itself written where its file's path goes: the
				// error reaches the log, so it says so without showing it.
				return "", fmt.Errorf("providers.%s.key_file looks like a key itself, not the path of a file holding one (it is not shown here): put the key in a file and give that file's path", provider)
			}
			return "", fmt.Errorf("%s key file: %w", provider, err)
		}
		key := strings.TrimSpace(string(b))
		if key == "" {
			// An unfilled Secret would otherwise call the provider keyless.
			return "", fmt.Errorf("%s key file %s is empty", provider, file)
		}
		return key, nil
	}
	return strings.TrimSpace(os.Getenv(keyEnv(provider))), nil
}

// looksLikeKey reports whether s, given as a file's path, is rather a
// provider key: 20 or more of the characters keys are made of (sk-proj-…,
// sk-ant-…, AIza…), with no path separator and no '.'.
func looksLikeKey(s string) bool { return len(s) >= 20 && auth.URLSafe(s) }

func parseMulti(pairs []string, what string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || !isProvider(strings.ToLower(k)) || v == "" {
			return nil, fmt.Errorf("%s %q: want provider=VALUE with provider openai, anthropic or gemini", what, p)
		}
		out[strings.ToLower(k)] = append(out[strings.ToLower(k)], v)
	}
	return out, nil
}

// listeners are where `tollgate serve` serves: the HTTP proxy, and the
// Envoy gRPC services on TCP and/or a unix socket (each optional).
type listeners struct {
	http, grpc, socket string
	metrics            string // Prometheus /metrics; empty: off
	admin              string // the admin API; empty: off
}

// defaultShutdownGrace is how long requests in flight may take to finish
// on SIGTERM before they are cut (and settled as cut), unless
// shutdown_grace says otherwise.
const defaultShutdownGrace = 30 * time.Second

func runServe(ctx context.Context, l listeners, o stackOptions, grace time.Duration) error {
	st, err := newStack(ctx, o)
	if err != nil {
		return err
	}
	defer st.closeAndLog(o.logger)
	ln, err := net.Listen("tcp", l.http)
	if err != nil {
		return fmt.Errorf("listen %s: %w", l.http, err)
	}
	var envoy *envoyServer
	if l.grpc != "" || l.socket != "" {
		if envoy, err = newEnvoyServer(st.gw, l.grpc, l.socket, o.maxBody, o.logger); err != nil {
			_ = ln.Close()
			return err
		}
	}
	if l.metrics != "" {
		addr, err := serveMetrics(l.metrics, st.metrics.Handler())
		if err != nil {
			_ = ln.Close()
			return err
		}
		o.logger.Info("serving metrics", "addr", addr)
	}
	stopAdmin, err := startAdmin(ctx, l.admin, st, o.dataDir, o.logger)
	if err != nil {
		_ = ln.Close()
		return err
	}
	defer stopAdmin()
	srv := proxy.NewServer(st.handler, o.readTimeout)
	o.logger.Info("serving", "addr", ln.Addr().String(), "data_dir", o.dataDir)
	errc := make(chan error, 4)
	go func() { errc <- srv.Serve(ln) }()
	if envoy != nil {
		envoy.serve(errc)
	}
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
	}
	drain(hurry(ctx), st, srv, envoy, grace, o.logger)
	return serveErr
}

// drain stops both front doors at once; the ledger closes after them. First
// readiness turns false on both (/readyz 503, gRPC health NOT_SERVING) for
// healthDrain while the listeners still take requests, so that health
// checkers stop routing here before connections are refused; then the
// listeners close and requests in flight get grace to finish. hurry ending
// (a second signal) cuts both waits short.
func drain(hurry context.Context, st *stack, srv *http.Server, envoy *envoyServer, grace time.Duration, log *slog.Logger) {
	log.Info("shutting down", "grace", grace)
	st.draining.Store(true)
	if envoy != nil {
		envoy.health.Shutdown()
	}
	pause(hurry, healthDrain)
	ctx, cancel := context.WithTimeout(hurry, grace)
	defer cancel()
	done := make(chan struct{})
	if envoy != nil {
		go func() {
			envoy.stop(ctx)
			close(done)
		}()
	} else {
		close(done)
	}
	if n := st.stopHTTP(ctx, srv); n > 0 {
		log.Warn("cut requests still in flight after the shutdown grace; their usage so far is recorded", "requests", n, "grace", grace)
	}
	<-done
}

// serveMetrics serves Prometheus metrics at /metrics on their own
// listener, so scraping needs no access to the proxy's.
// It returns the address it listens on (port 0 picks one).
func serveMetrics(addr string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), nil
}

// serveDebug exposes net/http/pprof on its own listener, never on the
// proxy's, so profiling stays an operator's loopback affair.
func serveDebug(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("debug listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { _ = http.Serve(ln, mux) }()
	return ln.Addr().String(), nil
}
