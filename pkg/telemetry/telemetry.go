// Package telemetry exports the gateway's metrics with OpenTelemetry: the
// GenAI semantic conventions' client token usage, operation duration and
// time to first chunk (the gateway is the provider's client), plus the
// gateway's own counters for tokens by billing kind, credits, rejections
// and limiter fallbacks. Metrics go to an OTLP collector over gRPC when an
// endpoint is configured (in Config or the standard OTEL_EXPORTER_OTLP_*
// variables) and are always available for a Prometheus scrape through
// Handler.
//
// Attributes carry only the provider, the model (when the catalog serves
// it), the operation, the token kind, the request status and a reason code.
// Accounts, projects, request ids, keys and any request or response text
// are never attributes: they are private and, as label values, unbounded.
// docs/telemetry.md lists every metric.
package telemetry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Config configures the exporters.
type Config struct {
	// OTLPEndpoint is the OTLP/gRPC collector: host:port (TLS unless
	// OTLPInsecure) or a URL, http:// for plaintext. Empty: the endpoint
	// in OTEL_EXPORTER_OTLP_METRICS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT,
	// and no OTLP export when neither is set; the Prometheus handler works
	// either way.
	OTLPEndpoint string
	// OTLPInsecure sends OTLP without TLS to a host:port endpoint.
	OTLPInsecure bool
	// OTLPHeaders are sent with every export (a collector's auth token).
	OTLPHeaders map[string]string
	// ExportInterval is how often OTLP exports; zero means 30 s.
	ExportInterval time.Duration
	// ServiceName is the service.name resource attribute; default "tollgate".
	ServiceName string
	// ServiceVersion, when set, is the service.version resource attribute.
	ServiceVersion string
	// Served reports whether the catalog serves a model. Only served
	// names become gen_ai.request.model values, because a refused request
	// may name any string a client sent. Nil uses the embedded catalog;
	// pass the live catalog's lookup so that overlay models are named.
	Served func(provider, model string) bool
	// LimiterFallbacks, when set, is read at each collection as the
	// cumulative number of limiter decisions taken by the local store
	// because the shared one was unreachable.
	LimiterFallbacks func() int64
}

// Telemetry records settled requests into the metrics. It is safe for
// concurrent use.
type Telemetry struct {
	provider *sdkmetric.MeterProvider
	registry *prometheus.Registry
	served   func(provider, model string) bool

	tokenUsage metric.Int64Histogram
	duration   metric.Float64Histogram
	ttfc       metric.Float64Histogram

	// sets holds every attribute combination seen, so that Record builds
	// no attribute set on the hot path and the counters' callback finds
	// every counter. A map under a lock rather than a sync.Map, whose
	// interface keys would allocate on every lookup.
	mu       sync.RWMutex
	sets     map[setKey]*attrSets
	overflow *attrSets // shared by combinations past maxCachedSets
}

// maxCachedSets bounds the attribute combinations. Attribute values are
// bounded (served models, route operations, reason codes), so real traffic
// stays far below it.
const maxCachedSets = 1000

// cardinalityLimit lifts the SDK's own per-instrument series limit above
// what maxCachedSets allows (tollgate.tokens has a series per token kind),
// so that only one limit applies and overflow is always _OTHER.
const cardinalityLimit = len(tokenKinds) * (maxCachedSets + 1)

// Bucket boundaries the GenAI conventions recommend. Time to first chunk
// uses the operation-duration boundaries, as the conventions say.
var (
	tokenBuckets    = []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}
	durationBuckets = []float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92}
)

// New builds the meter provider, its Prometheus registry and, when an
// endpoint is set, the OTLP exporter. It sets no global state. Call
// Shutdown to flush and stop.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	t := &Telemetry{registry: prometheus.NewRegistry(), served: cfg.Served, sets: make(map[setKey]*attrSets)}
	t.overflow = setKey{provider: other, model: other, operation: other, status: other, errorType: other}.build()
	if t.served == nil {
		cat, err := catalog.Default()
		if err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
		t.served = func(p, m string) bool {
			_, ok := cat.Lookup(catalog.Provider(p), m)
			return ok
		}
	}
	prom, err := otelprom.New(
		otelprom.WithRegisterer(t.registry),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cmp.Or(cfg.ServiceName, "tollgate"))}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	opts := []sdkmetric.Option{
		sdkmetric.WithResource(resource.NewSchemaless(attrs...)),
		sdkmetric.WithReader(prom),
		// Exemplars would carry trace ids; the gateway records none.
		sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter),
		sdkmetric.WithCardinalityLimit(cardinalityLimit),
	}
	if cfg.OTLPEndpoint != "" || otlpFromEnv() {
		exp, err := otlpmetricgrpc.New(ctx, otlpOptions(cfg)...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP exporter for %s: %w", cmp.Or(cfg.OTLPEndpoint, "OTEL_EXPORTER_OTLP_ENDPOINT"), err)
		}
		interval := cfg.ExportInterval
		if interval <= 0 {
			interval = 30 * time.Second
		}
		opts = append(opts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(interval))))
	}
	t.provider = sdkmetric.NewMeterProvider(opts...)
	if err := t.instruments(cfg.LimiterFallbacks); err != nil {
		return nil, errors.Join(err, t.provider.Shutdown(ctx))
	}
	return t, nil
}

// otlpFromEnv reports whether the standard variables name an OTLP
// endpoint; the exporter then reads them itself.
func otlpFromEnv() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

func otlpOptions(cfg Config) []otlpmetricgrpc.Option {
	var opts []otlpmetricgrpc.Option
	switch {
	case cfg.OTLPEndpoint == "":
		// The exporter reads OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT itself.
	case strings.Contains(cfg.OTLPEndpoint, "://"):
		opts = append(opts, otlpmetricgrpc.WithEndpointURL(cfg.OTLPEndpoint))
	default:
		opts = append(opts, otlpmetricgrpc.WithEndpoint(cfg.OTLPEndpoint))
		if cfg.OTLPInsecure {
			opts = append(opts, otlpmetricgrpc.WithInsecure())
		}
	}
	if len(cfg.OTLPHeaders) > 0 {
		opts = append(opts, otlpmetricgrpc.WithHeaders(cfg.OTLPHeaders))
	}
	return opts
}

func (t *Telemetry) instruments(fallbacks func() int64) error {
	m := t.provider.Meter("github.com/tollgate-dev/tollgate/pkg/telemetry")
	var errs [8]error
	t.tokenUsage, errs[0] = m.Int64Histogram("gen_ai.client.token.usage",
		metric.WithUnit("{token}"),
		metric.WithDescription("Number of input and output tokens used."),
		metric.WithExplicitBucketBoundaries(tokenBuckets...))
	t.duration, errs[1] = m.Float64Histogram("gen_ai.client.operation.duration",
		metric.WithUnit("s"),
		metric.WithDescription("GenAI operation duration."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	// The client-side metric: gen_ai.server.* describe a model server,
	// and the gateway is the provider's client.
	t.ttfc, errs[2] = m.Float64Histogram("gen_ai.client.operation.time_to_first_chunk",
		metric.WithUnit("s"),
		metric.WithDescription("Time to receive the first chunk, measured from when the client issues the generation request to when the first chunk is received in the response stream."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	// Counters are kept as atomics per attribute set (attrSets) and
	// observed here at each collection: an atomic add is far cheaper on
	// the request path than a synchronous instrument's attribute lookup.
	tokens, err := m.Int64ObservableCounter("tollgate.tokens",
		metric.WithUnit("{token}"),
		metric.WithDescription("Billed tokens by kind: uncached input, cache reads, cache writes, output (reasoning included). The kinds are disjoint."))
	errs[3] = err
	credits, err := m.Int64ObservableCounter("tollgate.credits",
		metric.WithUnit("{microcredit}"),
		metric.WithDescription("Credits billed, in micro-credits."))
	errs[4] = err
	rejections, err := m.Int64ObservableCounter("tollgate.rejections",
		metric.WithUnit("{request}"),
		metric.WithDescription("Requests the gateway refused before any upstream call, by reason."))
	errs[5] = err
	if err := errors.Join(errs[:]...); err != nil {
		return fmt.Errorf("telemetry: instruments: %w", err)
	}
	observe := func(o metric.Observer, s *attrSets) {
		for i := range s.tokens {
			if n := s.tokens[i].Load(); n > 0 {
				o.ObserveInt64(tokens, n, s.tokensObs[i]...)
			}
		}
		if n := s.credits.Load(); n > 0 {
			o.ObserveInt64(credits, n, s.creditsObs...)
		}
		if n := s.rejections.Load(); n > 0 {
			o.ObserveInt64(rejections, n, s.rejectionObs...)
		}
	}
	_, errs[6] = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		t.mu.RLock()
		defer t.mu.RUnlock()
		for _, s := range t.sets {
			observe(o, s)
		}
		observe(o, t.overflow)
		return nil
	}, tokens, credits, rejections)
	if fallbacks != nil {
		_, errs[7] = m.Int64ObservableCounter("tollgate.limiter.fallbacks",
			metric.WithUnit("{decision}"),
			metric.WithDescription("Rate-limit decisions taken by the local store because the shared store was unreachable."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(fallbacks())
				return nil
			}))
	}
	if err := errors.Join(errs[:]...); err != nil {
		return fmt.Errorf("telemetry: instruments: %w", err)
	}
	return nil
}

// Handler serves the metrics in the Prometheus text format.
func (t *Telemetry) Handler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Shutdown flushes the OTLP exporter and stops the meter provider. Record
// after Shutdown is a no-op.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}

// Record adds one settled request to the metrics. It is called once per
// request on the settle path: it never blocks on I/O (exports happen on
// their own schedule) and, once a combination of attributes has been
// seen, allocates nothing.
func (t *Telemetry) Record(rec usage.Record) {
	ctx := context.Background()
	s := t.attrs(rec)
	if rec.Status == usage.StatusRejected {
		s.rejections.Add(1)
	}
	t.duration.Record(ctx, rec.Latency.Seconds(), s.duration...)
	// Streams only: a whole response's first byte is no first chunk.
	if rec.Stream && rec.Status == usage.StatusOK && rec.TTFT > 0 {
		t.ttfc.Record(ctx, rec.TTFT.Seconds(), s.base...)
	}
	if !rec.Tokens.IsZero() {
		kinds := [...]int64{
			usage.Clamp(rec.Tokens.Input), usage.Clamp(rec.Tokens.CachedInput),
			usage.Clamp(rec.Tokens.CacheWrite), usage.Clamp(rec.Tokens.Output),
		}
		// The conventions' input is every prompt token, cached or not;
		// the billing kinds are split in tollgate.tokens instead, so this
		// histogram keeps one input and one output point per request.
		// Estimated counts are billed but are no provider count, which
		// the conventions require of this metric.
		if !rec.Estimated {
			t.tokenUsage.Record(ctx, kinds[0]+kinds[1]+kinds[2], s.input...)
			t.tokenUsage.Record(ctx, kinds[3], s.output...)
		}
		for i, n := range kinds {
			s.tokens[i].Add(n)
		}
	}
	if rec.Credits > 0 {
		s.credits.Add(rec.Credits)
	}
}
