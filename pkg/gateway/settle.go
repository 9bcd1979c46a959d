package gateway

import (
	"context"
	"log/slog"

	"github.com/tollgate-dev/tollgate/pkg/sse"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// ReasonStreamError is the record reason of a response that began with a
// success status and then carried the provider's own error (see
// StreamFailer).
const ReasonStreamError = "upstream_stream_error"

// StreamFailer is implemented by meters that recognise an error the
// provider reports inside a response it already started with a 2xx status:
// Anthropic's error event, an OpenAI or Gemini error chunk, Responses'
// response.failed. The status alone would record such a request as ok
// although it failed midway.
type StreamFailer interface {
	// Failed reports whether the response carried such an error.
	Failed() bool
}

// MeterFailed reports whether m saw the provider report an error inside the
// response; a meter that cannot tell (no StreamFailer) never has.
func MeterFailed(m Meter) bool {
	f, ok := m.(StreamFailer)
	return ok && f.Failed()
}

// RunningTotaler is implemented by meters whose partial usage is the
// provider's running total of everything generated so far (Gemini's
// usageMetadata on every chunk), unlike a count of the input side only
// (Anthropic's message_start). Such a total is the provider's own count of
// the output it covers; replacing it with a byte-based estimate would bill
// a guess over a count.
type RunningTotaler interface {
	// UncountedChars is the generated text seen after the last running
	// total, which no provider count covers.
	UncountedChars() int64
}

// StreamEnder is implemented by meters of streams that end with an event of
// their own: OpenAI's data: [DONE], the Responses API's response.completed
// (or .incomplete, .failed), Anthropic's message_stop. Once that event has
// passed, the provider has finished and the client has all it needs: the
// SDKs stop reading there and close the connection, which can beat the
// transport's own end (the last empty chunk) to the gateway. Such a close,
// or an upstream reset after the event, does not make the request
// abandoned or failed.
type StreamEnder interface {
	// Ended reports whether the stream's final event has passed.
	Ended() bool
}

// ServedModeler is implemented by meters that read which model answered
// (Anthropic names it in every message, and may have fallen back from the
// requested one); the request is priced as that model.
type ServedModeler interface {
	ServedModel() string
}

// StreamEnded reports whether the response's own end has passed: an SSE
// stream's final event (StreamEnder), or the closing bracket of a streamed
// JSON array (Gemini without alt=sse). The client then has the whole
// answer, though the transport's end has not come yet: an upstream failure
// after it is no failure of the response, and adapters must end the
// response cleanly rather than add an error event (which the Anthropic SDKs
// raise even after message_stop) or cut it.
func (x *Exchange) StreamEnded() bool {
	e, ok := x.meter.(StreamEnder)
	return ok && e.Ended() || x.framing == framingArray && x.arr.Done()
}

// Settle ends the exchange and hands its one usage record to the recorder.
// It is safe to call more than once; only the first call counts. Adapters
// call it however the request ended: completion, client reset, upstream
// failure.
func (x *Exchange) Settle(how End) usage.Record {
	if x.settled {
		return usage.Record{}
	}
	x.settled = true
	now := x.g.now()
	rec := usage.Record{
		RequestID:  x.id,
		Time:       x.start.UTC(),
		Account:    x.claims.Account,
		Project:    x.claims.Project,
		Model:      x.recordName(x.model),
		Operation:  x.route.Operation,
		HTTPStatus: x.status,
		Stream:     x.stream,
		Latency:    now.Sub(x.start),
	}
	rec.LatencyMS = rec.Latency.Milliseconds()
	if x.prov != nil {
		rec.Provider = x.prov.Name()
	}
	ended := x.StreamEnded()
	completed := x.completed || ended
	switch {
	case x.failure != nil:
		rec.Status = usage.StatusRejected
		rec.Reason = string(x.failure.Code)
	case x.replaced != nil:
		rec.Status = usage.StatusError
		rec.Reason = string(x.replaced.Code)
	case how == ClientGone && !completed:
		rec.Status = usage.StatusAbandoned
		rec.Reason = "client_gone"
	case !completed || how == UpstreamFailed && !ended:
		rec.Status = usage.StatusError
		rec.Reason = string(CodeUpstream)
	case x.status/100 != 2:
		rec.Status = usage.StatusError
		rec.Reason = "upstream_status"
	case MeterFailed(x.meter):
		rec.Status = usage.StatusError
		rec.Reason = ReasonStreamError
	default:
		rec.Status = usage.StatusOK
	}
	if x.meter != nil {
		// Close a stream cut short so a final event without its blank line
		// still counts.
		if x.framing == framingSSE && !completed {
			_ = x.dec.Close(func(ev sse.Event) error { x.meter.Event(ev); return nil })
		}
		if sm, ok := x.meter.(ServedModeler); ok {
			rec.ServedModel = x.recordName(recordedModel(sm.ServedModel()))
		}
		u, state := x.meter.Usage()
		outEst := (x.meter.OutputChars() + 3) / 4
		if rt, ok := x.meter.(RunningTotaler); ok && state == PartialUsage && completed && !MeterFailed(x.meter) && rt.UncountedChars() == 0 {
			// A stream that ended cleanly, with no error and no text
			// after its last running total: that total is the provider's
			// count of the whole request, whether or not its chunk said
			// why it finished.
			state = FinalUsage
		}
		switch {
		case state == FinalUsage:
			rec.Tokens = u
		case state == PartialUsage:
			// Keep what the provider counted and estimate the output it
			// never reported: the text after a running total, or all of it
			// when the count is of the input side only. Still an estimate,
			// since the final count never came.
			rec.Tokens = u
			if rt, ok := x.meter.(RunningTotaler); ok {
				rec.Output = u.Output + (rt.UncountedChars()+3)/4
			} else {
				rec.Output = max(u.Output, outEst)
			}
			rec.Estimated = true
		case x.forwarded && !x.route.Unbilled && (x.status == 0 || x.status/100 == 2):
			// The provider bills a request it received even when it never
			// said how much (a stream the client abandoned, embeddings
			// without usage): record a marked estimate.
			rec.Tokens = usage.Tokens{Input: x.inputEst, Output: outEst}
			rec.Estimated = true
		}
	}
	// Each count within what a record holds: a sum of counts read off the
	// wire can exceed usage.MaxCount, and the ledger would refuse the
	// record, leaving the request unbilled.
	rec.Tokens = rec.Tokens.Clamped()
	if rec.CacheWrite1h > 0 {
		// The gateway refuses ttl 1h, so 1-hour writes mean the provider
		// wrote some by default: they are billed (at twice the input
		// price) and an operator must look. No prompt or key is logged.
		x.g.log.LogAttrs(x.ctx, slog.LevelWarn, "upstream wrote 1-hour cache entries the gateway does not allow",
			slog.String("request_id", rec.RequestID),
			slog.String("provider", rec.Provider),
			slog.String("model", rec.Model),
			slog.Int64("cache_write_1h_tokens", rec.CacheWrite1h),
		)
	}
	if !x.firstByte.IsZero() {
		rec.TTFT = x.firstByte.Sub(x.start)
	}
	if x.grant != nil {
		x.grant.Settle(context.WithoutCancel(x.ctx), &rec)
	}
	if x.g.cfg.Recorder != nil {
		x.g.cfg.Recorder.Record(rec)
	}
	x.g.log.LogAttrs(x.ctx, slog.LevelDebug, "request",
		slog.String("request_id", rec.RequestID),
		slog.String("provider", rec.Provider),
		slog.String("model", rec.Model),
		slog.String("status", string(rec.Status)),
		slog.Int("http_status", rec.HTTPStatus),
		slog.String("reason", rec.Reason),
		slog.Int64("input_tokens", rec.Input),
		slog.Int64("output_tokens", rec.Output),
		slog.Bool("estimated", rec.Estimated),
		slog.Int64("latency_ms", rec.LatencyMS),
	)
	x.doc, x.hold, x.out = nil, nil, nil
	return rec
}
