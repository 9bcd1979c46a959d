package proxy_test

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
)

// TestOpenStreamHeap: an LLM stream can stay open for minutes between
// events, and a gateway holds thousands at once, so what one open stream
// keeps on the proxy's heap is bounded. Measured as the live heap of N
// streams opened through the proxy, less that of N opened straight to
// the same mock (what the client and the mock hold either way), each
// stream parked after its first event.
func TestOpenStreamHeap(t *testing.T) {
	const (
		streams = 64
		// net/http's buffers for the two connections (about 18 KiB), the
		// exchange's state (about 2.5 KiB) and a stream's small read
		// buffer fit; a 32 KiB read buffer held for the stream's life
		// does not.
		budget = 40 << 10
	)
	s := newStack(t, stackOptions{mock: mockprovider.Options{ChunkDelay: time.Hour}})
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"[[mock chunks=5]] hi"}]}`)
	open := func(base string, h http.Header) (heap uint64, closeAll func()) {
		before := liveHeap()
		var resps []*http.Response
		for range streams {
			req, err := http.NewRequest(http.MethodPost, base+"/openai/v1/chat/completions", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header = h.Clone()
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(line, "data: ") {
				t.Fatalf("stream: %d %q %v", resp.StatusCode, line, err)
			}
			resps = append(resps, resp)
		}
		after := liveHeap()
		return after - min(after, before), func() {
			for _, r := range resps {
				r.Body.Close()
			}
		}
	}
	direct, closeDirect := open(s.mockURL, http.Header{})
	closeDirect()
	proxied, closeProxied := open(s.gwURL, s.authed(nil))
	defer closeProxied()
	per := (int64(proxied) - int64(direct)) / streams
	t.Logf("live heap per open stream: %d B direct, %d B through the proxy; the proxy's share %d B", direct/streams, proxied/streams, per)
	if per > budget {
		t.Errorf("the proxy holds %d B per open stream, want at most %d", per, budget)
	}
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestStreamLargeEvents: a stream starts on the small read buffer and
// moves to a large one when a read fills it; events far larger than either
// reach the client byte for byte, and are metered.
func TestStreamLargeEvents(t *testing.T) {
	big := strings.Repeat("tollgate ", 20000) // 180,000 bytes in one event
	var sent bytes.Buffer
	for _, e := range []string{
		`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"a"},"finish_reason":null}],"usage":null}`,
		`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"` + big + `"},"finish_reason":null}],"usage":null}`,
		`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`,
		`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":20001,"total_tokens":20008}}`,
		`[DONE]`,
	} {
		sent.WriteString("data: " + e + "\n\n")
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		// Small writes, flushed: the proxy's reads see every size from a
		// few bytes to a full buffer.
		b := sent.Bytes()
		for i := 0; i < len(b); {
			n := min(len(b)-i, 1+i%9000)
			_, _ = w.Write(b[i : i+n])
			w.(http.Flusher).Flush()
			i += n
		}
	}))
	defer up.Close()
	s := newStack(t, stackOptions{upstream: up.URL})
	res := s.do(request{path: "/openai/v1/chat/completions", header: s.authed(nil),
		body: []byte(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)})
	if res.status != http.StatusOK {
		t.Fatalf("status %d: %.300s", res.status, res.body)
	}
	if !bytes.Equal(res.body, sent.Bytes()) {
		t.Fatalf("client got %d bytes, upstream sent %d; they differ", len(res.body), sent.Len())
	}
	if rec := s.rec.wait(t, res.id); rec.Tokens.Output != 20001 || rec.Tokens.Input != 7 {
		t.Errorf("record tokens %+v, want 7 in and 20001 out", rec.Tokens)
	}
}
