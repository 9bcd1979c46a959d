package telemetry

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Words that must never reach a metric: the records below carry them as
// account, project, request id, an unknown model and a free-text reason.
var private = []string{"acct-secret", "proj-secret", "req-secret", "canary-7f3a", "Free text"}

const sonnet = "claude-sonnet-4-20250514"

var records = []usage.Record{
	{RequestID: "req-secret-1", Account: "acct-secret", Project: "proj-secret", Provider: "openai", Model: "gpt-4o",
		Operation: "chat.completions", Status: usage.StatusOK, HTTPStatus: 200,
		Tokens:  usage.Tokens{Input: 100, CachedInput: 50, Output: 20, Reasoning: 5},
		Credits: 1234, Latency: 1500 * time.Millisecond, TTFT: 200 * time.Millisecond},
	{Provider: "openai", Model: "gpt-4o", Operation: "responses", Status: usage.StatusOK, HTTPStatus: 200, Stream: true,
		Tokens:  usage.Tokens{Input: 3000, Output: 500},
		Credits: 5000, Latency: 300 * time.Millisecond, TTFT: 50 * time.Millisecond},
	{Provider: "anthropic", Model: sonnet, Operation: "messages", Status: usage.StatusOK, HTTPStatus: 200,
		Tokens:  usage.Tokens{Input: 10, CachedInput: 2000, CacheWrite: 1000, Output: 40},
		Credits: 777, Latency: 2 * time.Second, TTFT: 500 * time.Millisecond},
	{Provider: "openai", Model: "gpt-4o", Operation: "chat.completions", Status: usage.StatusRejected,
		HTTPStatus: 429, Reason: "rate_limited", Latency: time.Millisecond},
	{Account: "acct-secret", Provider: "openai", Model: "canary-7f3a not a model", Operation: "chat.completions",
		Status: usage.StatusRejected, HTTPStatus: 404, Reason: "model_not_found", Latency: 2 * time.Millisecond},
	{Provider: "gemini", Model: "gemini-2.5-flash", Operation: "generateContent", Status: usage.StatusError,
		HTTPStatus: 500, Reason: "upstream_status", Latency: 800 * time.Millisecond},
	{Provider: "gemini", Model: "gemini-2.5-flash", Operation: "streamGenerateContent", Status: usage.StatusAbandoned,
		HTTPStatus: 200, Stream: true, Tokens: usage.Tokens{Input: 5, Output: 3}, Estimated: true,
		Credits: 9, Latency: 4 * time.Second, TTFT: 100 * time.Millisecond},
	{Provider: "anthropic", Model: sonnet, Operation: "messages", Status: usage.StatusRejected,
		HTTPStatus: 402, Reason: "Free text, which must not become a label", Latency: time.Millisecond},
}

// point is one series of one metric, from either exporter: a histogram's
// count and sum, or a counter's value in sum.
type point struct {
	count  uint64
	sum    float64
	bounds []float64
}

// series names a point by its attributes, "k=v" sorted and joined, with
// dots in keys as underscores so both exporters' forms compare.
func series(attrs map[string]string) string {
	var kv []string
	for k, v := range attrs {
		kv = append(kv, strings.ReplaceAll(k, ".", "_")+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

// expected is what the records above must produce, metric by metric,
// written from the semantic conventions' rules rather than read off the
// implementation: prompt tokens of every kind are gen_ai input, Gemini is
// gcp.gemini, route operations map to chat / generate_content, unknown
// models and free-text reasons are _OTHER.
func expected() map[string]map[string]point {
	r := records
	sec := func(ds ...time.Duration) float64 {
		var s float64
		for _, d := range ds {
			s += d.Seconds()
		}
		return s
	}
	base := func(op, prov, model string, extra ...string) string {
		m := map[string]string{"gen_ai.operation.name": op, "gen_ai.provider.name": prov, "gen_ai.request.model": model}
		for i := 0; i < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return series(m)
	}
	const gem = "gemini-2.5-flash"
	return map[string]map[string]point{
		"gen_ai.client.token.usage": {
			base("chat", "openai", "gpt-4o", "gen_ai.token.type", "input"):   {count: 2, sum: float64(r[0].PromptTotal() + r[1].PromptTotal())},
			base("chat", "openai", "gpt-4o", "gen_ai.token.type", "output"):  {count: 2, sum: float64(r[0].Output + r[1].Output)},
			base("chat", "anthropic", sonnet, "gen_ai.token.type", "input"):  {count: 1, sum: float64(r[2].Input + r[2].CachedInput + r[2].CacheWrite)},
			base("chat", "anthropic", sonnet, "gen_ai.token.type", "output"): {count: 1, sum: float64(r[2].Output)},
			// The abandoned stream's tokens are estimates: billed
			// (tollgate.tokens) but no provider count.
		},
		"gen_ai.client.operation.duration": {
			base("chat", "openai", "gpt-4o", "tollgate.status", "ok"):                                              {count: 2, sum: sec(r[0].Latency, r[1].Latency)},
			base("chat", "anthropic", sonnet, "tollgate.status", "ok"):                                             {count: 1, sum: sec(r[2].Latency)},
			base("chat", "openai", "gpt-4o", "tollgate.status", "rejected", "error.type", "rate_limited"):          {count: 1, sum: sec(r[3].Latency)},
			base("chat", "openai", "_OTHER", "tollgate.status", "rejected", "error.type", "model_not_found"):       {count: 1, sum: sec(r[4].Latency)},
			base("generate_content", "gcp.gemini", gem, "tollgate.status", "error", "error.type", "500"):           {count: 1, sum: sec(r[5].Latency)},
			base("generate_content", "gcp.gemini", gem, "tollgate.status", "abandoned", "error.type", "abandoned"): {count: 1, sum: sec(r[6].Latency)},
			base("chat", "anthropic", sonnet, "tollgate.status", "rejected", "error.type", "_OTHER"):               {count: 1, sum: sec(r[7].Latency)},
		},
		"gen_ai.client.operation.time_to_first_chunk": {
			base("chat", "openai", "gpt-4o"): {count: 1, sum: sec(r[1].TTFT)},
			// Streams only; the abandoned stream is not a successful
			// response.
		},
		"tollgate.tokens": {
			base("chat", "openai", "gpt-4o", "tollgate.token.kind", "input"):             {sum: float64(r[0].Input + r[1].Input)},
			base("chat", "openai", "gpt-4o", "tollgate.token.kind", "cache_read"):        {sum: float64(r[0].CachedInput)},
			base("chat", "openai", "gpt-4o", "tollgate.token.kind", "output"):            {sum: float64(r[0].Output + r[1].Output)},
			base("chat", "anthropic", sonnet, "tollgate.token.kind", "input"):            {sum: float64(r[2].Input)},
			base("chat", "anthropic", sonnet, "tollgate.token.kind", "cache_read"):       {sum: float64(r[2].CachedInput)},
			base("chat", "anthropic", sonnet, "tollgate.token.kind", "cache_write"):      {sum: float64(r[2].CacheWrite)},
			base("chat", "anthropic", sonnet, "tollgate.token.kind", "output"):           {sum: float64(r[2].Output)},
			base("generate_content", "gcp.gemini", gem, "tollgate.token.kind", "input"):  {sum: float64(r[6].Input)},
			base("generate_content", "gcp.gemini", gem, "tollgate.token.kind", "output"): {sum: float64(r[6].Output)},
		},
		"tollgate.credits": {
			base("chat", "openai", "gpt-4o"):            {sum: float64(r[0].Credits + r[1].Credits)},
			base("chat", "anthropic", sonnet):           {sum: float64(r[2].Credits)},
			base("generate_content", "gcp.gemini", gem): {sum: float64(r[6].Credits)},
		},
		"tollgate.rejections": {
			base("chat", "openai", "gpt-4o", "tollgate.reason", "rate_limited"):    {sum: 1},
			base("chat", "openai", "_OTHER", "tollgate.reason", "model_not_found"): {sum: 1},
			base("chat", "anthropic", sonnet, "tollgate.reason", "_OTHER"):         {sum: 1},
		},
		"tollgate.limiter.fallbacks": {
			series(nil): {sum: 7},
		},
	}
}

// The bucket boundaries the GenAI conventions recommend, as the spec
// lists them.
var wantBounds = map[string][]float64{
	"gen_ai.client.token.usage":                   {1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864},
	"gen_ai.client.operation.duration":            {0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92},
	"gen_ai.client.operation.time_to_first_chunk": {0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92},
}

// allowed are the only attribute keys a data point may carry.
var allowed = []string{
	"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.token.type",
	"error.type", "tollgate.status", "tollgate.reason", "tollgate.token.kind",
}

// promNames is each metric's name in the Prometheus exposition
// (docs/telemetry.md).
var promNames = map[string]string{
	"gen_ai.client.token.usage":                   "gen_ai_client_token_usage",
	"gen_ai.client.operation.duration":            "gen_ai_client_operation_duration_seconds",
	"gen_ai.client.operation.time_to_first_chunk": "gen_ai_client_operation_time_to_first_chunk_seconds",
	"tollgate.tokens":                             "tollgate_tokens_total",
	"tollgate.credits":                            "tollgate_credits_total",
	"tollgate.rejections":                         "tollgate_rejections_total",
	"tollgate.limiter.fallbacks":                  "tollgate_limiter_fallbacks_total",
}

func newTelemetry(t *testing.T, cfg Config) *Telemetry {
	t.Helper()
	var fallbacks atomic.Int64
	fallbacks.Store(7)
	cfg.LimiterFallbacks = fallbacks.Load
	cfg.ServiceName = "tollgate-test"
	tel, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tel
}

// compare checks got against expected(): the same series for every metric,
// with the same values, and the conventions' buckets on histograms.
func compare(t *testing.T, got map[string]map[string]point) {
	t.Helper()
	for name, want := range expected() {
		g := got[name]
		for s, w := range want {
			p, ok := g[s]
			if !ok {
				t.Errorf("%s{%s}: missing; have %v", name, s, slices.Sorted(maps.Keys(g)))
				continue
			}
			if p.count != w.count || math.Abs(p.sum-w.sum) > 1e-9 {
				t.Errorf("%s{%s}: count %d sum %v, want count %d sum %v", name, s, p.count, p.sum, w.count, w.sum)
			}
			if b, ok := wantBounds[name]; ok && !slices.Equal(p.bounds, b) {
				t.Errorf("%s{%s}: buckets %v, want %v", name, s, p.bounds, b)
			}
		}
		for s := range g {
			if _, ok := want[s]; !ok {
				t.Errorf("%s{%s}: unexpected series", name, s)
			}
		}
	}
	for name := range got {
		if _, ok := expected()[name]; !ok {
			t.Errorf("unexpected metric %s", name)
		}
	}
}

func TestPrometheus(t *testing.T) {
	tel := newTelemetry(t, Config{})
	defer tel.Shutdown(context.Background())
	for _, r := range records {
		tel.Record(r)
	}
	srv := httptest.NewServer(tel.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	for _, w := range private {
		if strings.Contains(string(body), w) {
			t.Errorf("exposition contains %q", w)
		}
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	byProm := make(map[string]string)
	for otel, prom := range promNames {
		byProm[prom] = otel
	}
	allowedLabels := map[string]bool{"otel_scope_name": true, "otel_scope_version": true, "otel_scope_schema_url": true}
	for _, k := range allowed {
		allowedLabels[strings.ReplaceAll(k, ".", "_")] = true
	}
	got := make(map[string]map[string]point)
	for name, fam := range fams {
		if name == "target_info" {
			if l := fam.GetMetric()[0].GetLabel(); len(l) != 1 || l[0].GetName() != "service_name" || l[0].GetValue() != "tollgate-test" {
				t.Errorf("target_info labels %v, want service_name only", l)
			}
			continue
		}
		otel, ok := byProm[name]
		if !ok {
			t.Errorf("unexpected metric family %s", name)
			continue
		}
		got[otel] = make(map[string]point)
		for _, m := range fam.GetMetric() {
			attrs := make(map[string]string)
			for _, l := range m.GetLabel() {
				if !allowedLabels[l.GetName()] {
					t.Errorf("%s: label %s is not in the allowed set", name, l.GetName())
				}
				if !strings.HasPrefix(l.GetName(), "otel_scope_") {
					attrs[l.GetName()] = l.GetValue()
				}
			}
			got[otel][series(attrs)] = promPoint(t, fam.GetType(), m)
		}
	}
	compare(t, got)
}

func promPoint(t *testing.T, typ dto.MetricType, m *dto.Metric) point {
	switch typ {
	case dto.MetricType_HISTOGRAM:
		h := m.GetHistogram()
		var bounds []float64
		for _, b := range h.GetBucket() {
			if !math.IsInf(b.GetUpperBound(), 1) {
				bounds = append(bounds, b.GetUpperBound())
			}
		}
		return point{count: h.GetSampleCount(), sum: h.GetSampleSum(), bounds: bounds}
	case dto.MetricType_COUNTER:
		return point{sum: m.GetCounter().GetValue()}
	}
	t.Errorf("unexpected metric type %v", typ)
	return point{}
}

// collector is an OTLP/gRPC metrics receiver.
type collector struct {
	colmetrics.UnimplementedMetricsServiceServer
	mu   sync.Mutex
	reqs []*colmetrics.ExportMetricsServiceRequest
}

func (c *collector) Export(_ context.Context, req *colmetrics.ExportMetricsServiceRequest) (*colmetrics.ExportMetricsServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, req)
	return &colmetrics.ExportMetricsServiceResponse{}, nil
}

func (c *collector) last() *colmetrics.ExportMetricsServiceRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.reqs) == 0 {
		return nil
	}
	return c.reqs[len(c.reqs)-1]
}

func startCollector(t *testing.T) (*collector, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	srv := grpc.NewServer()
	colmetrics.RegisterMetricsServiceServer(srv, c)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return c, lis.Addr().String()
}

func TestOTLP(t *testing.T) {
	for _, tt := range []struct {
		name     string
		endpoint func(addr string) Config
	}{
		{"host:port", func(addr string) Config { return Config{OTLPEndpoint: addr, OTLPInsecure: true} }},
		{"http URL", func(addr string) Config { return Config{OTLPEndpoint: "http://" + addr} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			col, addr := startCollector(t)
			cfg := tt.endpoint(addr)
			cfg.ExportInterval = time.Hour // only Shutdown exports
			tel := newTelemetry(t, cfg)
			for _, r := range records {
				tel.Record(r)
			}
			if err := tel.Shutdown(t.Context()); err != nil {
				t.Fatal(err)
			}
			tel.Record(records[0]) // after Shutdown: dropped, no panic
			req := col.last()
			if req == nil {
				t.Fatal("the collector received nothing")
			}
			if n := len(req.GetResourceMetrics()); n != 1 {
				t.Fatalf("%d resource metrics, want 1", n)
			}
			rm := req.GetResourceMetrics()[0]
			if res := attrMap(rm.GetResource().GetAttributes()); len(res) != 1 || res["service.name"] != "tollgate-test" {
				t.Errorf("resource attributes %v, want service.name only", res)
			}
			got := make(map[string]map[string]point)
			for _, sm := range rm.GetScopeMetrics() {
				for _, m := range sm.GetMetrics() {
					got[m.GetName()] = otlpPoints(t, m)
				}
			}
			compare(t, got)
		})
	}
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	return m
}

func otlpPoints(t *testing.T, m *metricspb.Metric) map[string]point {
	pts := make(map[string]point)
	check := func(kvs []*commonpb.KeyValue) map[string]string {
		attrs := attrMap(kvs)
		for k := range attrs {
			if !slices.Contains(allowed, k) {
				t.Errorf("%s: attribute %s is not in the allowed set", m.GetName(), k)
			}
		}
		for _, v := range attrs {
			for _, w := range private {
				if strings.Contains(v, w) {
					t.Errorf("%s: attribute value %q carries private text", m.GetName(), v)
				}
			}
		}
		return attrs
	}
	switch d := m.GetData().(type) {
	case *metricspb.Metric_Histogram:
		if d.Histogram.GetAggregationTemporality() != metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
			t.Errorf("%s: temporality %v", m.GetName(), d.Histogram.GetAggregationTemporality())
		}
		for _, dp := range d.Histogram.GetDataPoints() {
			pts[series(check(dp.GetAttributes()))] = point{count: dp.GetCount(), sum: dp.GetSum(), bounds: dp.GetExplicitBounds()}
		}
	case *metricspb.Metric_Sum:
		if !d.Sum.GetIsMonotonic() {
			t.Errorf("%s: a counter must be monotonic", m.GetName())
		}
		for _, dp := range d.Sum.GetDataPoints() {
			pts[series(check(dp.GetAttributes()))] = point{sum: float64(dp.GetAsInt())}
		}
	default:
		t.Errorf("%s: unexpected data %T", m.GetName(), d)
	}
	return pts
}

// TestRecordConcurrent records from many goroutines at once and checks
// that nothing is lost.
func TestRecordConcurrent(t *testing.T) {
	tel := newTelemetry(t, Config{})
	defer tel.Shutdown(context.Background())
	const workers, each = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r := records[(w+i)%3] // the three successful requests
				tel.Record(r)
			}
		})
	}
	wg.Wait()
	srv := httptest.NewServer(tel.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, m := range fams["gen_ai_client_operation_duration_seconds"].GetMetric() {
		n += m.GetHistogram().GetSampleCount()
	}
	if n != workers*each {
		t.Errorf("%d durations recorded, want %d", n, workers*each)
	}
}

// TestKeyBounds feeds attribute values that must not pass through.
func TestKeyBounds(t *testing.T) {
	tel := &Telemetry{served: func(p, m string) bool { return p == "openai" && m == "gpt-4o" }}
	long := strings.Repeat("a", 65)
	tests := []struct {
		name string
		rec  usage.Record
		want setKey
	}{
		{"served", usage.Record{Provider: "openai", Model: "gpt-4o", Operation: "chat.completions", Status: usage.StatusOK},
			setKey{provider: "openai", model: "gpt-4o", operation: "chat", status: usage.StatusOK}},
		{"unserved model", usage.Record{Provider: "openai", Model: "gpt-4o-canary", Operation: "responses", Status: usage.StatusOK},
			setKey{provider: "openai", model: other, operation: "chat", status: usage.StatusOK}},
		{"served name, other provider", usage.Record{Provider: "anthropic", Model: "gpt-4o", Operation: "messages", Status: usage.StatusOK},
			setKey{provider: "anthropic", model: other, operation: "chat", status: usage.StatusOK}},
		{"no route", usage.Record{Status: usage.StatusRejected, Reason: "not_found", HTTPStatus: 404},
			setKey{status: usage.StatusRejected, errorType: "not_found"}},
		{"free-text reason", usage.Record{Provider: "gemini", Operation: "countTokens", Status: usage.StatusRejected, Reason: "no such model: x"},
			setKey{provider: "gcp.gemini", operation: "countTokens", status: usage.StatusRejected, errorType: other}},
		{"long reason", usage.Record{Provider: "gemini", Operation: "embedContent", Status: usage.StatusError, Reason: long},
			setKey{provider: "gcp.gemini", operation: "embeddings", status: usage.StatusError, errorType: other}},
		{"upstream status", usage.Record{Provider: "openai", Operation: "embeddings", Status: usage.StatusError, HTTPStatus: 503},
			setKey{provider: "openai", operation: "embeddings", status: usage.StatusError, httpStatus: 503}},
		{"ok ignores reason", usage.Record{Provider: "openai", Operation: "models.list", Status: usage.StatusOK, Reason: "x", HTTPStatus: 500},
			setKey{provider: "openai", operation: "models.list", status: usage.StatusOK}},
		{"unknown provider and operation text", usage.Record{Provider: "open ai", Operation: "chat completions", Status: "weird status"},
			setKey{provider: other, operation: other, status: other}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tel.key(tt.rec); got != tt.want {
				t.Errorf("key = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func BenchmarkRecord(b *testing.B) {
	tel, err := New(context.Background(), Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			tel.Record(records[0])
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				tel.Record(records[0])
			}
		})
	})
	b.Run("rejected", func(b *testing.B) {
		for b.Loop() {
			tel.Record(records[4])
		}
	})
}

// TestOverflow feeds more attribute combinations than the bound: past it,
// requests are counted under _OTHER attributes and none is lost.
func TestOverflow(t *testing.T) {
	tel := newTelemetry(t, Config{})
	defer tel.Shutdown(context.Background())
	const n = maxCachedSets + 200
	for i := range n {
		tel.Record(usage.Record{Provider: "openai", Model: "gpt-4o", Operation: "chat.completions",
			Status: usage.StatusRejected, Reason: fmt.Sprintf("reason_%d", i)})
	}
	srv := httptest.NewServer(tel.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(body), "otel_metric_overflow") {
		t.Errorf("the SDK's overflow label appeared: its limit must sit above ours")
	}
	// A line scan rather than the text parser: the exposition holds
	// thousands of histogram lines, slow to parse under the race detector.
	var total, other float64
	series := 0
	for line := range strings.Lines(string(body)) {
		if !strings.HasPrefix(line, "tollgate_rejections_total{") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:]), 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		series++
		total += v
		if strings.Contains(line, `tollgate_reason="_OTHER"`) {
			other += v
		}
	}
	if total != n || other != n-maxCachedSets || series != maxCachedSets+1 {
		t.Errorf("rejections: total %v in %d series, %v under _OTHER; want %d in %d, %d", total, series, other, n, maxCachedSets+1, n-maxCachedSets)
	}
}
