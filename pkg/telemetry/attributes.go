package telemetry

import (
	"cmp"
	"strconv"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// The attribute keys, and the only ones any metric carries (a test holds
// the exporters to this list).
const (
	keyOperation = attribute.Key("gen_ai.operation.name")
	keyProvider  = attribute.Key("gen_ai.provider.name")
	keyModel     = attribute.Key("gen_ai.request.model")
	keyTokenType = attribute.Key("gen_ai.token.type")
	keyErrorType = attribute.Key("error.type")
	keyStatus    = attribute.Key("tollgate.status")
	keyReason    = attribute.Key("tollgate.reason")
	keyTokenKind = attribute.Key("tollgate.token.kind")
)

// reasonUpstreamStatus is the reason pkg/gateway settles an upstream
// error status with.
const reasonUpstreamStatus = "upstream_status"

// other is the conventions' value for something outside the known set.
const other = "_OTHER"

// The values of tollgate.token.kind, in usage.Tokens order.
var tokenKinds = [...]string{"input", "cache_read", "cache_write", "output"}

// setKey is a request's attributes after they are bounded: every field
// holds a constant, a served model name or a reason code.
type setKey struct {
	provider, model, operation string
	status                     usage.Status
	// errorType is a reason code, or "" with httpStatus set.
	errorType  string
	httpStatus int
}

// attrSets is one combination of bounded attributes: the options each
// histogram records with, and the counters, which are atomic adds on the
// request path and are read when the exporters collect.
type attrSets struct {
	base     []metric.RecordOption // provider, model, operation
	duration []metric.RecordOption // base, status, error.type
	input    []metric.RecordOption // base, gen_ai.token.type=input
	output   []metric.RecordOption // base, gen_ai.token.type=output

	credits    atomic.Int64
	rejections atomic.Int64
	tokens     [len(tokenKinds)]atomic.Int64

	creditsObs   []metric.ObserveOption // base
	rejectionObs []metric.ObserveOption // base, reason
	tokensObs    [len(tokenKinds)][]metric.ObserveOption
}

// attrs returns the attribute sets for rec, building them on first sight.
func (t *Telemetry) attrs(rec usage.Record) *attrSets {
	k := t.key(rec)
	t.mu.RLock()
	s, ok := t.sets[k]
	t.mu.RUnlock()
	if ok {
		return s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.sets[k]; ok {
		return s
	}
	// Bounded values keep the map small; the cap is a backstop, past
	// which new combinations share one set of _OTHER attributes, as the
	// SDK's own cardinality limit does.
	if len(t.sets) >= maxCachedSets {
		return t.overflow
	}
	s = k.build()
	t.sets[k] = s
	return s
}

// key bounds every attribute of rec: only served model names, known
// providers and operations, and short codes pass; anything else is
// _OTHER.
func (t *Telemetry) key(rec usage.Record) setKey {
	k := setKey{
		provider:  providerName(rec.Provider),
		operation: operationName(rec.Operation),
		status:    usage.Status(code(string(rec.Status))),
	}
	switch {
	case rec.Model == "":
	case rec.Provider != "" && t.served(rec.Provider, rec.Model):
		k.model = rec.Model
	default:
		k.model = other
	}
	if rec.Status != usage.StatusOK {
		k.errorType = code(rec.Reason)
		// The gateway's reason for an upstream error status says only
		// that; the status itself is the error's class.
		if (k.errorType == "" || k.errorType == reasonUpstreamStatus) && rec.HTTPStatus >= 400 && rec.HTTPStatus <= 599 {
			k.errorType, k.httpStatus = "", rec.HTTPStatus
		}
	}
	return k
}

func (k setKey) build() *attrSets {
	base := make([]attribute.KeyValue, 0, 5)
	for _, a := range [...]struct {
		key attribute.Key
		v   string
	}{{keyOperation, k.operation}, {keyProvider, k.provider}, {keyModel, k.model}} {
		if a.v != "" {
			base = append(base, a.key.String(a.v))
		}
	}
	with := func(extra ...attribute.KeyValue) metric.MeasurementOption {
		kv := append(append(make([]attribute.KeyValue, 0, len(base)+len(extra)), base...), extra...)
		return metric.WithAttributeSet(attribute.NewSet(kv...))
	}
	dur := []attribute.KeyValue{keyStatus.String(nonEmpty(string(k.status)))}
	if k.status != usage.StatusOK {
		// error.type: the gateway's reason code, else the HTTP status
		// the request ended with, else how it ended (abandoned).
		et := k.errorType
		if et == "" && k.httpStatus != 0 {
			et = strconv.Itoa(k.httpStatus)
		}
		dur = append(dur, keyErrorType.String(nonEmpty(cmp.Or(et, string(k.status)))))
	}
	b := with()
	s := &attrSets{
		base:         []metric.RecordOption{b},
		duration:     []metric.RecordOption{with(dur...)},
		input:        []metric.RecordOption{with(keyTokenType.String("input"))},
		output:       []metric.RecordOption{with(keyTokenType.String("output"))},
		creditsObs:   []metric.ObserveOption{b},
		rejectionObs: []metric.ObserveOption{with(keyReason.String(nonEmpty(k.errorType)))},
	}
	for i, kind := range tokenKinds {
		s.tokensObs[i] = []metric.ObserveOption{with(keyTokenKind.String(kind))}
	}
	return s
}

func nonEmpty(s string) string { return cmp.Or(s, other) }

// providerName is the conventions' gen_ai.provider.name for a gateway
// provider. Gemini is served from generativelanguage.googleapis.com, which
// the conventions name gcp.gemini.
func providerName(p string) string {
	switch p {
	case "openai", "anthropic":
		return p
	case "gemini":
		return "gcp.gemini"
	}
	return code(p)
}

// operationName maps a gateway route operation onto the conventions'
// well-known gen_ai.operation.name values; an operation they do not name
// (token counting, model listings) keeps the gateway's name.
func operationName(op string) string {
	switch op {
	case "chat.completions", "responses", "messages":
		return "chat"
	case "generateContent", "streamGenerateContent":
		return "generate_content"
	case "embeddings", "embedContent", "batchEmbedContents":
		return "embeddings"
	}
	return code(op)
}

// code passes s if it looks like a code (a short run of ASCII letters,
// digits, '_', '.', '-') and is _OTHER otherwise, so free text can never
// become a label value.
func code(s string) string {
	if len(s) > 64 {
		return other
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return other
		}
	}
	return s
}
