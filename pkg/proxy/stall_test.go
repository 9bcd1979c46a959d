package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// stallIdle is the stream idle timeout of the stall tests: short, so they
// take seconds, and far above a loopback round trip, so they do not flake.
const stallIdle = 300 * time.Millisecond

// endlessUpstream answers every request with a 200 SSE stream of OpenAI
// chat chunks written as fast as the gateway takes them, up to limit
// bytes, then waits for the request to end. sent counts the bytes written;
// released closes once the upstream request's context ends (the gateway
// let go of the upstream call).
func endlessUpstream(t *testing.T, limit int64) (srv *httptest.Server, sent *atomic.Int64, released chan struct{}) {
	t.Helper()
	sent, released = new(atomic.Int64), make(chan struct{})
	chunk := []byte(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"` +
		strings.Repeat("tollgate ", 100) + `"},"finish_reason":null}],"usage":null}` + "\n\n")
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(released)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("content-type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		for sent.Load() < limit {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			sent.Add(int64(len(chunk)))
		}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv, sent, released
}

// waitClosed fails the test unless ch closes within d.
func waitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Errorf("%s within %v: it did not", what, d)
	}
}

// A client that stops reading mid-stream (its receive window full) must not
// hold the request forever: the gateway's writes block on TCP backpressure,
// so it stops reading upstream (memory stays bounded by socket buffers), and
// after the stream idle timeout with no write progress it gives up, records
// the request as abandoned with its usage so far, and releases the upstream
// call.
func TestClientStopsReading(t *testing.T) {
	const limit = 256 << 20
	up, sent, released := endlessUpstream(t, limit)
	s := newStack(t, stackOptions{upstream: up.URL, idle: stallIdle})

	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(s.gwURL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the stack's cleanups, so it runs before them: a
	// gateway stuck writing to this connection lets go once it closes.
	t.Cleanup(func() { conn.Close() })
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	body := `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", s.token, len(body), body); err != nil {
		t.Fatal(err)
	}
	// The client reads nothing from here on.

	start := time.Now()
	rec := s.rec.only(t)
	took := time.Since(start)
	if rec.Status != usage.StatusAbandoned || rec.Reason != "client_gone" {
		t.Errorf("record status %q reason %q, want abandoned / client_gone", rec.Status, rec.Reason)
	}
	if !rec.Estimated || rec.Input <= 0 || rec.Output <= 0 {
		t.Errorf("record tokens %+v estimated=%v, want an estimate of the input and of the output sent so far", rec.Tokens, rec.Estimated)
	}
	waitClosed(t, released, 5*time.Second, "the upstream call should end once the gateway gives up on the client")
	if n := sent.Load(); n >= limit {
		t.Errorf("upstream wrote all %d bytes to a gateway whose client read nothing: it kept reading upstream", n)
	} else {
		t.Logf("settled %v after the request; upstream wrote %d KiB before the gateway stopped reading", took.Round(time.Millisecond), n>>10)
	}
}

// stallingUpstream answers every request with a 200 of the given content
// type, writes body and flushes, then sends nothing more until the request
// ends. released closes then.
func stallingUpstream(t *testing.T, contentType string, body func(*http.Request) string) (*httptest.Server, chan struct{}) {
	t.Helper()
	released := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { released <- struct{}{} }()
		// Read to the end, so net/http watches the connection and ends
		// r.Context() when the gateway drops the call.
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("content-type", contentType)
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, body(r))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv, released
}

// An upstream that goes silent after its headers, or in the middle of an
// event, ends after the stream idle timeout: the client gets what was sent,
// then the provider's in-stream error event (so its SDK raises rather than
// waiting forever), the request is recorded once as an upstream error, and
// the upstream call is cancelled.
func TestUpstreamStalls(t *testing.T) {
	partial := map[string]string{
		"openai":    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once",
		"anthropic": "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"con",
		"gemini":    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Once upon a time\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":4,\"totalTokenCount\":11}}\r\n\r\ndata: {\"cand",
	}
	errPrefix := map[string]string{"openai": "data: {\"error\":", "anthropic": "event: error\n", "gemini": "data: {\"error\":{\"code\":502"}
	for _, mode := range []string{"after headers", "mid-event"} {
		up, released := stallingUpstream(t, "text/event-stream", func(r *http.Request) string {
			if mode == "after headers" {
				return ""
			}
			return partial[strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]]
		})
		s := newStack(t, stackOptions{upstream: up.URL, idle: stallIdle})
		for _, c := range upstreamCases {
			t.Run(mode+"/"+c.provider, func(t *testing.T) {
				s.t = t
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				start := time.Now()
				res := s.doCtx(ctx, request{path: c.path, body: []byte(c.body), header: s.authed(c.header)})
				if res.status != http.StatusOK {
					t.Fatalf("status %d, want the upstream's 200", res.status)
				}
				got := string(res.body)
				want := ""
				// The OpenAI case hides the usage chunk the gateway asked
				// for, so it forwards whole events only: its unfinished
				// event never reaches the client.
				if mode == "mid-event" && c.provider != "openai" {
					want = partial[c.provider]
				}
				if !strings.HasPrefix(got, want) {
					t.Fatalf("the bytes sent before the stall were not forwarded as they were: %q", got)
				}
				if tail := strings.TrimLeft(got[len(want):], "\r\n"); !strings.HasPrefix(tail, errPrefix[c.provider]) {
					t.Errorf("no error event after the stall: %q", got[len(want):])
				}
				rec := s.rec.wait(t, res.id)
				if rec.Status != usage.StatusError || rec.Reason != "upstream_error" {
					t.Errorf("record status %q reason %q, want error / upstream_error", rec.Status, rec.Reason)
				}
				waitClosed(t, released, 5*time.Second, "the upstream call should be cancelled")
				t.Logf("ended %v after the request", time.Since(start).Round(time.Millisecond))
			})
		}
	}
}

// An upstream that accepts the request and never sends its headers gets the
// stream idle timeout too: the client gets a 502 in its provider's error
// shape, one upstream-error record, and the upstream call is cancelled.
func TestUpstreamNeverAnswers(t *testing.T) {
	released := make(chan struct{}, 16)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { released <- struct{}{} }()
		// Read to the end, so net/http watches the connection and ends
		// r.Context() when the gateway drops the call.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	t.Cleanup(up.Close)
	s := newStack(t, stackOptions{upstream: up.URL, idle: stallIdle})
	for _, c := range upstreamCases {
		t.Run(c.provider, func(t *testing.T) {
			s.t = t
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res := s.doCtx(ctx, request{path: c.path, body: []byte(c.body), header: s.authed(c.header)})
			if res.status != http.StatusBadGateway {
				t.Fatalf("status %d, want 502: %s", res.status, res.body)
			}
			if p := parseNative(t, c.provider, res.status, res.body); p.message == "" {
				t.Errorf("not the %s error shape: %s", c.provider, res.body)
			}
			rec := s.rec.wait(t, res.id)
			if rec.Status != usage.StatusError || rec.Reason != "upstream_error" || !rec.Tokens.IsZero() {
				t.Errorf("record %+v, want an upstream error with no tokens", rec)
			}
			waitClosed(t, released, 5*time.Second, "the upstream call should be cancelled")
		})
	}
}

// A slow-loris client, trickling its request head or body a byte at a time,
// is cut off by the server's read timeout rather than holding a connection
// and a goroutine for as long as it keeps trickling; it gets no success (not
// an empty 200), and a request whose head had arrived is recorded once as
// abandoned.
func TestSlowLorisClient(t *testing.T) {
	const readTimeout = 500 * time.Millisecond
	s := newStack(t, stackOptions{readTimeout: readTimeout})
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	head := fmt.Sprintf("POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", s.token, len(body))
	for _, c := range []struct {
		name          string
		sent, trickle string
		recorded      bool
	}{
		{"head", "", head + body, false},
		{"body", head, body, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s.t = t
			conn, err := net.DialTimeout("tcp", strings.TrimPrefix(s.gwURL, "http://"), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			start := time.Now()
			if _, err := io.WriteString(conn, c.sent); err != nil {
				t.Fatal(err)
			}
			// Trickle the rest, 20 bytes a second, until the server cuts
			// the connection or the whole request has gone.
			cut := make(chan struct{})
			go func() {
				defer close(cut)
				for i := 0; i < len(c.trickle); i++ {
					if _, err := io.WriteString(conn, c.trickle[i:i+1]); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
			got, _ := io.ReadAll(conn)
			took := time.Since(start)
			// net/http answers a head it timed out on with a 400; what
			// must not come is a success.
			if strings.HasPrefix(string(got), "HTTP/1.1 2") {
				t.Errorf("the server answered a request it never finished reading with a success: %q", got)
			}
			if took > 5*readTimeout {
				t.Errorf("the connection was cut after %v, want about the %v read timeout", took, readTimeout)
			}
			conn.Close()
			<-cut
			if c.recorded {
				if rec := s.rec.only(t); rec.Status != usage.StatusAbandoned {
					t.Errorf("record status %q, want abandoned", rec.Status)
				}
			}
		})
	}
}
