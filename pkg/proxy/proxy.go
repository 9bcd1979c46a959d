// Package proxy is the standalone HTTP adapter over pkg/gateway: a plain Go
// reverse proxy for local development, single-binary installs and tests.
// Responses stream through as they arrive, flushed per chunk.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
)

// DefaultUpstreams are the providers' public API roots.
var DefaultUpstreams = map[string]string{
	"openai":    "https://api.openai.com",
	"anthropic": "https://api.anthropic.com",
	"gemini":    "https://generativelanguage.googleapis.com",
}

// Config assembles a Proxy.
type Config struct {
	Gateway *gateway.Gateway
	// Upstreams maps a provider name to its API root; a path in the URL is
	// kept as a prefix.
	Upstreams map[string]*url.URL
	// Transport sends upstream requests (a tuned http.Transport by default).
	Transport http.RoundTripper
	Logger    *slog.Logger
	// StreamIdleTimeout ends a response that makes no progress for this
	// long: no bytes from upstream, or a client that takes none (default
	// DefaultStreamIdleTimeout). It is per read and per write, not for the
	// whole response, since streams legitimately run and pause for minutes.
	StreamIdleTimeout time.Duration
}

// DefaultReadTimeout bounds reading a request's head and body: a slow-loris
// client trickling either byte by byte would otherwise hold a connection
// and a goroutine for as long as it likes. Two minutes take the largest
// default body (32 MiB) over a 2.3 Mbit/s link.
const DefaultReadTimeout = 2 * time.Minute

// NewServer returns the http.Server for the proxy's listener. Its timeouts
// bound the request only: ReadTimeout ends once the body is read (net/http
// clears the read deadline then), so streams of any length go out, bounded
// by the Proxy's stream idle timeout instead. readTimeout <= 0 means
// DefaultReadTimeout.
func NewServer(h http.Handler, readTimeout time.Duration) *http.Server {
	if readTimeout <= 0 {
		readTimeout = DefaultReadTimeout
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(30*time.Second, readTimeout),
		ReadTimeout:       readTimeout,
		IdleTimeout:       120 * time.Second,
	}
}

// DefaultStreamIdleTimeout is generous on purpose: reasoning models think
// for minutes between events. It matches the sidecar's Envoy idle timeouts
// and the transport's ResponseHeaderTimeout, so both front doors give up on
// a silent peer at the same time.
const DefaultStreamIdleTimeout = 10 * time.Minute

// errUpstreamIdle cancels an upstream request that sent nothing for the
// stream idle timeout.
var errUpstreamIdle = errors.New("upstream sent nothing for the stream idle timeout")

// Proxy serves the gateway over HTTP.
type Proxy struct {
	gw        *gateway.Gateway
	upstreams map[string]*url.URL
	rt        http.RoundTripper
	log       *slog.Logger
	ids       *gateway.RequestIDs
	idle      time.Duration
	// Read buffers for upstream bodies: large ones for whole bodies,
	// small ones for streams (see forward).
	large, small sync.Pool
}

const (
	largeRead = 32 << 10
	smallRead = 4 << 10
)

// New returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Gateway == nil {
		return nil, errors.New("proxy: no gateway")
	}
	p := &Proxy{gw: cfg.Gateway, upstreams: cfg.Upstreams, rt: cfg.Transport, log: cfg.Logger, idle: cfg.StreamIdleTimeout}
	if p.idle <= 0 {
		p.idle = DefaultStreamIdleTimeout
	}
	for _, name := range cfg.Gateway.Providers() {
		if p.upstreams[name] == nil {
			return nil, fmt.Errorf("proxy: no upstream for provider %q", name)
		}
	}
	if p.rt == nil {
		t := NewTransport()
		// An upstream that never answers is as silent as one that stops
		// midway: one timeout for both.
		t.ResponseHeaderTimeout = p.idle
		p.rt = t
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.ids = gateway.NewRequestIDs()
	p.large.New = func() any { b := make([]byte, largeRead); return &b }
	p.small.New = func() any { b := make([]byte, smallRead); return &b }
	return p, nil
}

// NewTransport returns the upstream transport: many idle connections per
// host (every request of a busy gateway goes to three hosts), no transparent
// decompression (the gateway asks for identity encoding and reads what it
// forwards), HTTP/2 where the provider offers it.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Minute,
		DisableCompression:    true,
	}
}

// apiVersion matches the version segment every provider path starts with
// (v1, v1beta, v1alpha).
var apiVersion = regexp.MustCompile(`^v[0-9]+(alpha|beta)?[0-9]*$`)

// ParseUpstreams parses provider=URL pairs over the defaults: each an
// http(s) API root, a path in it kept as a prefix. A trailing API version
// segment (…/v1, …/v1beta) is dropped, since the client's path brings its
// own.
func ParseUpstreams(overrides map[string]string) (map[string]*url.URL, error) {
	out := make(map[string]*url.URL, len(DefaultUpstreams))
	for name, raw := range DefaultUpstreams {
		if o, ok := overrides[name]; ok {
			raw = o
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("upstream for %s: %q is not an absolute URL", name, raw)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("upstream for %s: %q: want an http:// or https:// URL", name, raw)
		}
		if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#") {
			// The client's query replaces it; refuse rather than drop it.
			return nil, fmt.Errorf("upstream for %s: %q: want the API root, with no query or fragment", name, raw)
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		// A base URL in the SDKs' form ends in the API version
		// (OPENAI_BASE_URL=http://localhost:11434/v1); the client's path
		// starts with its own, so the root is what precedes it.
		if i := strings.LastIndexByte(u.Path, '/'); i >= 0 && apiVersion.MatchString(u.Path[i+1:]) {
			u.Path = u.Path[:i]
		}
		u.RawPath = ""
		out[name] = u
	}
	for name := range overrides {
		if _, ok := DefaultUpstreams[name]; !ok {
			return nil, fmt.Errorf("unknown provider %q in upstream override (want openai, anthropic or gemini)", name)
		}
	}
	return out, nil
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz", "/readyz":
		w.Header().Set("content-type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
		return
	}
	ctx := r.Context()
	x := p.gw.NewExchange(ctx, p.ids.Next())
	x.WholeEvents()
	end := gateway.Completed
	defer func() { x.Settle(end) }()

	target := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	out := x.RequestHeaders(r.Method, target, toHeaders(r.Header))
	if out.Action == gateway.NeedBody {
		body, tooLarge, err := readBody(r, x.MaxRequestBody())
		switch {
		case tooLarge:
			p.writeResponse(w, x.Reject(x.TooLarge()))
			return
		case err != nil:
			// The client left, or was too slow (the server's read
			// timeout): the deferred Settle records it; no answer goes
			// out, so a client still there cannot take an empty 200 for one.
			end = gateway.ClientGone
			panic(http.ErrAbortHandler)
		}
		out = x.RequestBody(body)
	}
	if out.Action == gateway.Respond {
		p.writeResponse(w, out.Response)
		return
	}
	var cut bool
	end, cut = p.forward(ctx, w, x, out.Upstream)
	if cut {
		// The body was cut and its framing has no error event to say so (a
		// JSON body, a streamed JSON array): end the response without its
		// final chunk, so no client takes the truncated body as whole. The
		// deferred Settle still records the request.
		panic(http.ErrAbortHandler)
	}
}

// forward calls the upstream and streams its answer back. cut reports an
// upstream failure midway through a body that no error event can flag.
func (p *Proxy) forward(ctx context.Context, w http.ResponseWriter, x *gateway.Exchange, up gateway.UpstreamRequest) (end gateway.End, cut bool) {
	base := p.upstreams[up.Provider]
	u := *base
	// up.Path is in its escaped form, as the client sent it: keep it so, and
	// never escape it a second time.
	path, query, _ := strings.Cut(up.Path, "?")
	unescaped, err := url.PathUnescape(path)
	if err != nil {
		p.writeResponse(w, x.Reject(gateway.Fail(http.StatusBadRequest, gateway.CodeInvalidRequest, "The request path is not validly escaped.")))
		return gateway.Completed, false
	}
	u.Path = base.Path + unescaped
	u.RawPath = base.EscapedPath() + path
	u.RawQuery = query
	// upCtx ends with the client's request, or when upstream goes silent
	// for the idle timeout (the idle timer below).
	upCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(upCtx, up.Method, u.String(), nil)
	if err != nil {
		p.writeResponse(w, x.UpstreamUnavailable())
		return gateway.UpstreamFailed, false
	}
	req.Body = io.NopCloser(bytes.NewReader(up.Body))
	req.ContentLength = int64(len(up.Body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(up.Body)), nil }
	for _, h := range up.Header {
		req.Header[http.CanonicalHeaderKey(h.Name)] = append(req.Header[http.CanonicalHeaderKey(h.Name)], h.Value)
	}
	resp, err := p.rt.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return gateway.ClientGone, false
		}
		p.log.LogAttrs(ctx, slog.LevelWarn, "upstream unreachable",
			slog.String("request_id", x.ID()), slog.String("provider", up.Provider), slog.String("error", redactURL(err)))
		p.writeResponse(w, x.UpstreamUnavailable())
		return gateway.UpstreamFailed, false
	}
	defer resp.Body.Close()
	idle := time.AfterFunc(p.idle, func() { cancel(errUpstreamIdle) })
	defer idle.Stop()

	hdr := x.ResponseHeaders(resp.StatusCode, toHeaders(resp.Header))
	if r, ok := x.Replacement(); ok {
		p.writeResponse(w, r)
		return gateway.Completed, false
	}
	wh := w.Header()
	for _, h := range hdr {
		wh[http.CanonicalHeaderKey(h.Name)] = append(wh[http.CanonicalHeaderKey(h.Name)], h.Value)
	}
	w.WriteHeader(resp.StatusCode)
	// A stream goes out as it arrives: headers now, then every chunk. A
	// whole JSON body needs no flushes of its own, which saves a write per
	// chunk; net/http sends it when the handler returns.
	stream := x.Streaming()
	cw := &clientWriter{w: w, rc: http.NewResponseController(w), idle: p.idle}
	if stream {
		_ = cw.send(nil, true)
	}

	// A stream's reads are its events, mostly far under 1 KiB, and a
	// stream can stay open for minutes: it reads into a small buffer, and
	// moves to a large one once a read fills the small one (a burst, or
	// large events). A whole body reads into a large one from the start.
	pool := &p.large
	if stream {
		pool = &p.small
	}
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	for filled := false; ; {
		if filled && pool == &p.small {
			p.small.Put(bp)
			pool = &p.large
			bp = pool.Get().(*[]byte)
		}
		buf := *bp
		// The idle timer runs only while waiting for upstream: a slow
		// client is the write deadline's business (send).
		idle.Reset(p.idle)
		n, rerr := resp.Body.Read(buf)
		idle.Stop()
		filled = n == len(buf)
		if n > 0 {
			if fwd := x.ResponseBody(buf[:n], false); len(fwd) > 0 {
				if err := cw.send(fwd, stream); err != nil {
					return gateway.ClientGone, false
				}
			}
		}
		switch {
		case rerr == nil:
			continue
		case errors.Is(rerr, io.EOF):
			if err := cw.send(x.ResponseBody(nil, true), true); err != nil {
				return gateway.ClientGone, false
			}
			return gateway.Completed, false
		case ctx.Err() != nil:
			return gateway.ClientGone, false
		}
		if errors.Is(context.Cause(upCtx), errUpstreamIdle) {
			p.log.LogAttrs(ctx, slog.LevelWarn, "upstream stalled; response ended",
				slog.String("request_id", x.ID()), slog.String("provider", up.Provider), slog.Duration("idle_timeout", p.idle))
		}
		if x.StreamEnded() {
			// The final event (or a streamed array's closing bracket) has
			// passed: the answer is whole, end it cleanly (Settle records
			// it as complete).
			_ = cw.send(nil, true)
			return gateway.UpstreamFailed, false
		}
		tail := x.StreamAborted()
		if len(tail) == 0 {
			return gateway.UpstreamFailed, true
		}
		_ = cw.send(tail, true)
		return gateway.UpstreamFailed, false
	}
}

// readBody reads at most limit bytes; more is reported as tooLarge without
// reading the rest.
func readBody(r *http.Request, limit int64) (body []byte, tooLarge bool, err error) {
	if r.ContentLength > limit {
		return nil, true, nil
	}
	size := r.ContentLength
	if size < 0 {
		size = 4096
	}
	buf := make([]byte, 0, size+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, true, nil
		}
		if errors.Is(err, io.EOF) {
			return buf, false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
}

// clientWriter writes a response to the client under a write deadline of
// the idle timeout. A client that stops reading fills the socket buffers;
// without a deadline the write would block, and with it the upstream read
// and the request's settlement, for as long as the connection stays up.
// The deadline moves forward only once half the timeout has passed since it
// was set, so a write that blocks fails after between half and all of it,
// and a stream's many writes do not each pay for a deadline update.
type clientWriter struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
	at   time.Time // the deadline set; zero: none yet
}

// arm bounds the next writes by the idle timeout.
func (c *clientWriter) arm() {
	now := time.Now()
	if c.at.Sub(now) > c.idle/2 {
		return
	}
	c.at = now.Add(c.idle)
	// Not every ResponseWriter has a connection (httptest recorders).
	_ = c.rc.SetWriteDeadline(c.at)
}

// send writes b to the client, then flushes it when flush is set, under
// the write deadline (arm).
func (c *clientWriter) send(b []byte, flush bool) error {
	c.arm()
	if len(b) > 0 {
		if _, err := c.w.Write(b); err != nil {
			return fmt.Errorf("write to client: %w", err)
		}
	}
	if !flush {
		return nil
	}
	if err := c.rc.Flush(); err != nil {
		return fmt.Errorf("flush to client: %w", err)
	}
	return nil
}

// writeResponse sends one of the gateway's own answers, under the write
// deadline (clientWriter).
func (p *Proxy) writeResponse(w http.ResponseWriter, resp gateway.Response) {
	(&clientWriter{w: w, rc: http.NewResponseController(w), idle: p.idle}).arm()
	wh := w.Header()
	for _, h := range resp.Header {
		wh[http.CanonicalHeaderKey(h.Name)] = append(wh[http.CanonicalHeaderKey(h.Name)], h.Value)
	}
	wh.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

func toHeaders(h http.Header) gateway.Headers {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	out := make(gateway.Headers, 0, n)
	for k, vs := range h {
		for _, v := range vs {
			out = append(out, gateway.Header{Name: k, Value: v})
		}
	}
	return out
}

// redactURL keeps an upstream error's cause but drops the URL, whose query
// could carry a key.
func redactURL(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}
