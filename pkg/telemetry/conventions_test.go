package telemetry

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// manual builds a Telemetry whose metrics are read with the SDK's
// ManualReader, so a test sees exactly the data points of each instrument.
func manual(t *testing.T) (*Telemetry, *sdkmetric.ManualReader) {
	t.Helper()
	tel := &Telemetry{served: func(p, m string) bool { return p == "openai" && m == "gpt-4o" }, sets: make(map[setKey]*attrSets)}
	tel.overflow = setKey{provider: other, model: other, operation: other, status: other, errorType: other}.build()
	reader := sdkmetric.NewManualReader()
	tel.provider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	if err := tel.instruments(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.provider.Shutdown(context.Background()) })
	return tel, reader
}

// histograms returns each histogram's data points by metric name.
func histograms(t *testing.T, r *sdkmetric.ManualReader) map[string][]metricdata.HistogramDataPoint[float64] {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]metricdata.HistogramDataPoint[float64])
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				out[m.Name] = d.DataPoints
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					out[m.Name] = append(out[m.Name], metricdata.HistogramDataPoint[float64]{
						Attributes: p.Attributes, Count: p.Count, Sum: float64(p.Sum), Bounds: p.Bounds})
				}
			}
		}
	}
	return out
}

func count(ps []metricdata.HistogramDataPoint[float64]) (n uint64) {
	for _, p := range ps {
		n += p.Count
	}
	return n
}

// A gateway is the GenAI client of the provider: the conventions' client
// metric for the first streamed chunk is
// gen_ai.client.operation.time_to_first_chunk, reported for streaming
// calls only (a non-streaming response's first byte is its whole
// answer), with the operation-duration buckets. gen_ai.server.* metrics
// describe a model server, which the gateway is not.
func TestTimeToFirstChunk(t *testing.T) {
	tel, reader := manual(t)
	base := usage.Record{Provider: "openai", Model: "gpt-4o", Operation: "chat.completions", Status: usage.StatusOK,
		HTTPStatus: 200, Latency: 2 * time.Second, TTFT: 1900 * time.Millisecond}
	tel.Record(base) // not a stream
	stream := base
	stream.Stream, stream.TTFT = true, 300*time.Millisecond
	tel.Record(stream)
	h := histograms(t, reader)
	if ps, ok := h["gen_ai.server.time_to_first_token"]; ok {
		t.Errorf("gen_ai.server.time_to_first_token recorded (%d points): a gateway is no model server", count(ps))
	}
	ps := h["gen_ai.client.operation.time_to_first_chunk"]
	if count(ps) != 1 || ps[0].Sum != 0.3 {
		t.Fatalf("time_to_first_chunk: %d points, want the stream's only (0.3 s): %+v", count(ps), ps)
	}
	if !slices.Equal(ps[0].Bounds, durationBuckets) {
		t.Errorf("time_to_first_chunk buckets %v, want %v", ps[0].Bounds, durationBuckets)
	}
}

// The gateway settles an upstream error status with the reason
// "upstream_status"; error.type must then be the status code itself, as
// the conventions' example ("500") and docs/telemetry.md say, not one
// value for every upstream failure.
func TestErrorTypeUpstreamStatus(t *testing.T) {
	tel, reader := manual(t)
	for _, st := range []int{429, 500, 500} {
		tel.Record(usage.Record{Provider: "openai", Model: "gpt-4o", Operation: "chat.completions",
			Status: usage.StatusError, HTTPStatus: st, Reason: "upstream_status", Latency: time.Second})
	}
	got := make(map[string]uint64)
	for _, p := range histograms(t, reader)["gen_ai.client.operation.duration"] {
		v, _ := p.Attributes.Value(attribute.Key("error.type"))
		got[v.AsString()] += p.Count
	}
	if len(got) != 2 || got["429"] != 1 || got["500"] != 2 {
		t.Errorf("error.type counts %v, want 429:1 500:2", got)
	}
}

// The conventions: an instrumentation that cannot obtain token counts
// MUST NOT report gen_ai.client.token.usage (unless the user enabled
// offline counting). A record whose tokens the gateway estimated (the
// provider never said) is billed, so tollgate.tokens counts it, but it is
// no provider count.
func TestEstimatedTokensNotGenAIUsage(t *testing.T) {
	tel, reader := manual(t)
	tel.Record(usage.Record{Provider: "openai", Model: "gpt-4o", Operation: "chat.completions", Status: usage.StatusAbandoned,
		HTTPStatus: 200, Stream: true, Tokens: usage.Tokens{Input: 50, Output: 10}, Estimated: true, Latency: time.Second})
	if ps := histograms(t, reader)["gen_ai.client.token.usage"]; count(ps) != 0 {
		t.Errorf("estimated tokens reported as gen_ai.client.token.usage: %d points", count(ps))
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var billed int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "tollgate.tokens" {
				for _, p := range s.DataPoints {
					billed += p.Value
				}
			}
		}
	}
	if billed != 60 {
		t.Errorf("tollgate.tokens %d, want the 60 billed", billed)
	}
}

// OTEL_EXPORTER_OTLP_ENDPOINT alone (no OTLPEndpoint in the config)
// enables the OTLP export, as the standard variables promise.
func TestOTLPEndpointFromEnv(t *testing.T) {
	col, addr := startCollector(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	tel := newTelemetry(t, Config{ExportInterval: time.Hour})
	tel.Record(records[0])
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if col.last() == nil {
		t.Fatal("OTEL_EXPORTER_OTLP_ENDPOINT set, but the collector received nothing")
	}
}
