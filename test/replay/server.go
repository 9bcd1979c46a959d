package replay

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// ServedContentType is the content type a replay serves for it: the
// recorded one, or, when the recorder kept no headers (openinference
// strips them), one inferred from the body: text/event-stream for a body
// of SSE fields, application/json otherwise. inferred reports the latter.
func (it Interaction) ServedContentType() (ct string, inferred bool) {
	if ct := it.ContentType(); ct != "" {
		return ct, false
	}
	b := bytes.TrimLeft(it.Body, " \t\r\n")
	if bytes.HasPrefix(b, []byte("data:")) || bytes.HasPrefix(b, []byte("event:")) {
		return "text/event-stream", true
	}
	return "application/json", true
}

// IsStream reports whether the response is delivered incrementally: SSE,
// or a Gemini streamGenerateContent JSON array (no alt=sse).
func (it Interaction) IsStream() bool {
	ct, _ := it.ServedContentType()
	if strings.HasPrefix(strings.ToLower(ct), "text/event-stream") {
		return true
	}
	return it.Status/100 == 2 && strings.HasSuffix(it.Path, ":streamGenerateContent")
}

// Received is one request as the replay upstream saw it.
type Received struct {
	Method   string
	Path     string // escaped path
	RawQuery string
	Header   http.Header
	Body     []byte
}

// DefaultStreamChunks is how a replay splits a stream when Upstream.Chunks
// is nil: irregular sizes, cycled, so event and line boundaries fall both
// inside and between writes.
var DefaultStreamChunks = []int{17, 1, 256, 3, 1024, 64, 2, 9}

// Upstream is an http.Handler playing the provider for one interaction: it
// answers every request with the recorded status, headers (without the
// recorder's transfer framing and encoding) and body bytes. Streams are
// written in chunks, each flushed, following Chunks (sizes, cycled);
// documents are written in one piece unless Chunks is set.
type Upstream struct {
	It Interaction
	// Chunks are the write sizes, cycled; nil uses DefaultStreamChunks for
	// streams and one write for documents. A single 0 means one write.
	Chunks []int

	mu   sync.Mutex
	reqs []Received
}

// NewUpstream returns a replay of it.
func NewUpstream(it Interaction) *Upstream { return &Upstream{It: it} }

// hopHeaders are recorded headers a replay does not send: they describe
// the recorded transfer (length, compression, framing), not the response.
var hopHeaders = map[string]bool{
	"content-length": true, "content-encoding": true, "transfer-encoding": true,
	"connection": true, "keep-alive": true, "content-type": true,
}

// ServeHTTP implements http.Handler.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.reqs = append(u.reqs, Received{
		Method: r.Method, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: body,
	})
	u.mu.Unlock()

	h := w.Header()
	for k, vs := range u.It.Header {
		if hopHeaders[strings.ToLower(k)] {
			continue
		}
		h[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	ct, _ := u.It.ServedContentType()
	h.Set("Content-Type", ct)
	chunks := u.Chunks
	if chunks == nil && u.It.IsStream() {
		chunks = DefaultStreamChunks
	}
	if len(chunks) == 0 || len(chunks) == 1 && chunks[0] <= 0 {
		h.Set("Content-Length", strconv.Itoa(len(u.It.Body)))
	}
	w.WriteHeader(u.It.Status)
	rc := http.NewResponseController(w)
	for _, part := range Split(u.It.Body, chunks) {
		if _, err := w.Write(part); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// Requests returns what the replay received so far.
func (u *Upstream) Requests() []Received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Received(nil), u.reqs...)
}

// Split cuts b into consecutive pieces of the given sizes, cycled; sizes
// that are empty or a single non-positive value give b whole.
func Split(b []byte, sizes []int) [][]byte {
	if len(sizes) == 0 || len(sizes) == 1 && sizes[0] <= 0 {
		return [][]byte{b}
	}
	var out [][]byte
	for i := 0; len(b) > 0; i++ {
		n := max(sizes[i%len(sizes)], 1)
		n = min(n, len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}
