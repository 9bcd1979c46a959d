package extproc

import (
	"context"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/internal/envoyhdr"
	"github.com/tollgate-dev/tollgate/pkg/internal/gwtest"
)

// FuzzStream feeds arbitrary sequences of ProcessingRequest messages to one
// stream. Whatever arrives, the processor must not panic, must answer
// every message that awaits an answer with one reply of the matching kind
// (or an immediate response), must write at most one usage record, and
// must never let a request go upstream carrying a client credential.
//
// The input is a script of messages separated by "\n---\n". A message's
// first line is its kind (H request headers, B request body, T request
// trailers, RH, RB, RT the response side, F a flow-control message) with
// flags: "eos", "obs" (observability mode), "cfg=R,S" (protocol_config
// with request and response body modes). Header messages continue with
// "name: value" lines, bodies with their bytes. TOKEN stands for a valid
// gateway token.
func FuzzStream(f *testing.F) {
	seeds := []string{
		"H cfg=2,2\n:method: POST\n:path: /openai/v1/chat/completions\nauthorization: Bearer TOKEN\nx-api-key: TOKEN\n---\nB eos\n" +
			`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}` +
			"\n---\nRH\n:status: 200\ncontent-type: application/json\n---\nRB eos\n" + `{"usage":{"prompt_tokens":3,"completion_tokens":2}}`,
		"H\n:method: POST\n:path: /gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=TOKEN\n---\nB eos\n" +
			`{"contents":[{"parts":[{"text":"hi"}]}]}` + "\n---\nRH\n:status: 200\ncontent-type: text/event-stream\n---\nRB\ndata: {\"usageMetadata\":{\"promptTokenCount\":2}}\n\n---\nRB eos\n",
		"H eos\n:method: GET\n:path: /anthropic/v1/models\nx-api-key: TOKEN\nanthropic-version: 2023-06-01",
		"H cfg=1,1\n:method: POST\n:path: /anthropic/v1/messages\nx-api-key: TOKEN\nanthropic-version: 2023-06-01\n---\nB\n{\"model\":\"claude-sonnet-4-5\"\n---\nT\n---\nRT",
		"F\n---\nRH\n:status: 403\n---\nRB eos\ndenied\n---\nH\n:method: POST\n:path: /openai/v1/embeddings\nauthorization: Bearer TOKEN",
		"H obs\n:method: POST\n:path: /openai/v1/chat/completions\nauthorization: bearer TOKEN\n---\nB eos obs\n" +
			`{"model":"gpt-4o-mini","stream":true,"messages":[]}` + "\n---\nRH obs\n:status: 200\ncontent-type: text/event-stream\n---\nRB obs\ndata: {}\n\n",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	st := gwtest.New(f, gwtest.Options{MaxRequestBody: 1 << 20})
	ids := gateway.NewRequestIDs()
	f.Fuzz(func(t *testing.T, script string) {
		script = strings.ReplaceAll(script, "TOKEN", st.Token)
		before := len(st.Recorder.All())
		s := newStream(st.Gateway, context.Background(), ids)
		var up []*corev3.HeaderValue // the request as Envoy would forward it
		var creds []string           // what the client sent as credentials
		reqMode := extprocfilterv3.ProcessingMode_BUFFERED
		answered := false // Envoy sends nothing after an immediate response
		for _, part := range strings.Split(script, "\n---\n") {
			m, want := message(part)
			if pc := m.GetProtocolConfig(); pc != nil {
				reqMode = pc.GetRequestBodyMode()
			}
			if h := m.GetRequestHeaders(); h != nil && up == nil {
				up = h.GetHeaders().GetHeaders()
				creds = gwtest.Credentials(up)
			}
			r := s.handle(m)
			if want == "" || m.GetObservabilityMode() || answered {
				continue // no reply awaited (a reply would be ignored)
			}
			if r == nil {
				t.Fatalf("no reply to %s", want)
			}
			if r.GetImmediateResponse() != nil {
				answered = true
				continue
			}
			if got := replyKind(r); got != want {
				t.Fatalf("reply %s to %s", got, want)
			}
			var hm *extprocv3.HeaderMutation
			switch {
			case r.GetRequestHeaders() != nil:
				hm = r.GetRequestHeaders().GetResponse().GetHeaderMutation()
			case r.GetRequestBody() != nil:
				hm = r.GetRequestBody().GetResponse().GetHeaderMutation()
			default:
				continue
			}
			up = applyMutation(up, hm)
			// The request leaves Envoy with a body reply, or with the
			// headers reply when no body is buffered.
			released := want == "request_body" || m.GetRequestHeaders().GetEndOfStream() ||
				(reqMode != extprocfilterv3.ProcessingMode_BUFFERED && reqMode != extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL)
			if released {
				if leak := leaked(up, creds); leak != "" {
					t.Fatalf("a client credential goes upstream in %s", leak)
				}
			}
		}
		s.settle()
		if n := len(st.Recorder.All()) - before; n > 1 {
			t.Fatalf("%d usage records for one stream", n)
		}
	})
}

// message parses one script part; want is the reply kind it awaits.
func message(part string) (m *extprocv3.ProcessingRequest, want string) {
	head, rest, _ := strings.Cut(part, "\n")
	fields := strings.Fields(head)
	m = &extprocv3.ProcessingRequest{}
	eos := false
	kind := ""
	for i, f := range fields {
		switch {
		case i == 0:
			kind = f
		case f == "eos":
			eos = true
		case f == "obs":
			m.ObservabilityMode = true
		case strings.HasPrefix(f, "cfg="):
			a, b, _ := strings.Cut(f[4:], ",")
			ra, _ := strconv.Atoi(a)
			rb, _ := strconv.Atoi(b)
			m.ProtocolConfig = &extprocv3.ProtocolConfiguration{
				RequestBodyMode:  extprocfilterv3.ProcessingMode_BodySendMode(ra),
				ResponseBodyMode: extprocfilterv3.ProcessingMode_BodySendMode(rb),
			}
		}
	}
	headers := func() *extprocv3.HttpHeaders {
		hm := &corev3.HeaderMap{}
		for _, line := range strings.Split(rest, "\n") {
			name, value, ok := strings.Cut(line[min(1, len(line)):], ": ")
			if !ok {
				continue
			}
			// Envoy sends lower-case names.
			key := strings.ToLower(line[:min(1, len(line))] + name)
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: key, RawValue: []byte(value)})
		}
		return &extprocv3.HttpHeaders{Headers: hm, EndOfStream: eos}
	}
	body := &extprocv3.HttpBody{Body: []byte(rest), EndOfStream: eos}
	switch kind {
	case "H":
		m.Request = &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: headers()}
		return m, "request_headers"
	case "B":
		m.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: body}
		return m, "request_body"
	case "T":
		m.Request = &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}
		return m, "request_trailers"
	case "RH":
		m.Request = &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: headers()}
		return m, "response_headers"
	case "RB":
		m.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: body}
		return m, "response_body"
	case "RT":
		m.Request = &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}
		return m, "response_trailers"
	}
	m.FlowControlInit = &extprocv3.ProcessingRequest_FlowControlInit{}
	return m, ""
}

func replyKind(r *extprocv3.ProcessingResponse) string {
	switch r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingResponse_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingResponse_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return "response_trailers"
	}
	return "none"
}

// applyMutation applies a header mutation as Envoy does (removes, then
// sets; pseudo-headers and host cannot be removed).
func applyMutation(h []*corev3.HeaderValue, m *extprocv3.HeaderMutation) []*corev3.HeaderValue {
	var out []*corev3.HeaderValue
	for _, hv := range h {
		removed := false
		for _, r := range m.GetRemoveHeaders() {
			if r == hv.GetKey() && !strings.HasPrefix(r, ":") && r != "host" {
				removed = true
			}
		}
		if !removed {
			out = append(out, hv)
		}
	}
	for _, s := range m.GetSetHeaders() {
		hv := s.GetHeader()
		//lint:ignore SA1019 the field Envoy's ext_proc reads
		if !s.GetAppend().GetValue() {
			kept := out[:0]
			for _, o := range out {
				if o.GetKey() != hv.GetKey() {
					kept = append(kept, o)
				}
			}
			out = kept
		}
		out = append(out, hv)
	}
	return out
}

// leaked names the forwarded header that carries a client credential.
// Headers Envoy keeps to itself (pseudo-headers, host, framing) are no
// credential's place; of them only :path, whose key parameter is, counts.
func leaked(h []*corev3.HeaderValue, creds []string) string {
	for _, hv := range h {
		if hv.GetKey() != ":path" && envoyhdr.Kept(hv.GetKey()) {
			continue
		}
		v := string(hv.GetRawValue())
		for _, c := range creds {
			if hv.GetKey() == ":path" {
				_, q, _ := strings.Cut(v, "?")
				if gateway.QueryValue(q, "key") == c {
					return ":path"
				}
				continue
			}
			if strings.Contains(v, c) {
				return hv.GetKey()
			}
		}
	}
	return ""
}
