package replay

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/provider/anthropic"
	"github.com/tollgate-dev/tollgate/pkg/provider/gemini"
	"github.com/tollgate-dev/tollgate/pkg/provider/openai"
	"github.com/tollgate-dev/tollgate/pkg/tokenize"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// ---------------------------------------------------------------------------
// What is replayed and what is skipped.

// Skip reasons. Every recorded interaction is either replayed or skipped
// for exactly one of these, and wantSkipped pins the list, so a cassette
// added later is never silently ignored.
const (
	skipAzure       = "Azure OpenAI (deployments URL on *.cognitiveservices.azure.com): the gateway serves only api.openai.com's API shape"
	skipVertex      = "Vertex AI (*-aiplatform.googleapis.com projects/.../publishers/google/models): the gateway serves only the Gemini Developer API"
	skipCompletions = "OpenAI legacy Completions /v1/completions: not an endpoint the gateway serves (it answers 404 unsupported itself)"
	skipImages      = "OpenAI Images /v1/images/generations: not an endpoint the gateway serves (it answers 404 unsupported itself)"
)

var wantSkipped = map[string]string{
	"envoyproxy-ai-gateway/azure-chat-basic.yaml#0":                                                                skipAzure,
	"envoyproxy-ai-gateway/completion-bad-request.yaml#0":                                                          skipCompletions,
	"envoyproxy-ai-gateway/completion-basic.yaml#0":                                                                skipCompletions,
	"envoyproxy-ai-gateway/completion-streaming.yaml#0":                                                            skipCompletions,
	"envoyproxy-ai-gateway/image-generation-basic.yaml#0":                                                          skipImages,
	"opentelemetry-python-contrib/test_function_call_choice.yaml#0":                                                skipVertex,
	"opentelemetry-python-contrib/test_generate_content.yaml#0":                                                    skipVertex,
	"opentelemetry-python-contrib/test_generate_content_invalid_role.yaml#0":                                       skipVertex,
	"opentelemetry-python-contrib/test_generate_content_missing_model.yaml#0":                                      skipVertex,
	"opentelemetry-python-contrib/test_non_streaming[logcontent-gemini-2.5-flash-vertexaiapi-sync-default].yaml#0": skipVertex,
	"opentelemetry-python-contrib/test_streaming[logcontent-gemini-2.5-flash-vertexaiapi-sync-default].yaml#0":     skipVertex,
	"opentelemetry-python-contrib/test_tool_events.yaml#0":                                                         skipVertex,
}

// Corpus size, pinned so that a cassette added or lost shows up here.
const (
	wantCassettes    = 68
	wantInteractions = 79
)

// replayCase is one served interaction with what the test derives from it.
type replayCase struct {
	It       Interaction
	Provider string // openai, anthropic, gemini
	Op       string // the gateway's operation name
	Target   string // path and query under the gateway, e.g. /openai/v1/chat/completions
	Model    string
}

func (c replayCase) streamRequested() bool {
	if c.Provider == "gemini" {
		return c.Op == "streamGenerateContent"
	}
	var m struct {
		Stream bool `json:"stream"`
	}
	_ = json.Unmarshal(c.It.RequestBody, &m)
	return m.Stream
}

// classify returns the case for a served interaction, or the skip reason.
// An interaction it cannot place fails the test.
func classify(it Interaction) (replayCase, string, error) {
	c := replayCase{It: it}
	host := strings.ToLower(it.Host)
	switch {
	case strings.HasSuffix(host, ".cognitiveservices.azure.com"), strings.HasSuffix(host, ".openai.azure.com"):
		return c, skipAzure, nil
	case strings.HasSuffix(host, "-aiplatform.googleapis.com"), host == "aiplatform.googleapis.com":
		return c, skipVertex, nil
	case host == "api.openai.com":
		c.Provider = "openai"
		switch it.Path {
		case "/v1/chat/completions":
			c.Op = "chat.completions"
		case "/v1/responses":
			c.Op = "responses"
		case "/v1/embeddings":
			c.Op = "embeddings"
		case "/v1/completions":
			return c, skipCompletions, nil
		case "/v1/images/generations":
			return c, skipImages, nil
		default:
			return c, "", fmt.Errorf("OpenAI path %s is neither served nor a known skip", it.Path)
		}
	case host == "api.anthropic.com":
		c.Provider = "anthropic"
		switch it.Path {
		case "/v1/messages":
			c.Op = "messages"
		case "/v1/messages/count_tokens":
			c.Op = "messages.count_tokens"
		default:
			return c, "", fmt.Errorf("Anthropic path %s is neither served nor a known skip", it.Path)
		}
	case host == "generativelanguage.googleapis.com":
		c.Provider = "gemini"
		rest, ok := strings.CutPrefix(it.Path, "/v1beta/models/")
		if !ok {
			return c, "", fmt.Errorf("Gemini path %s is not under /v1beta/models/", it.Path)
		}
		model, verb, _ := strings.Cut(rest, ":")
		switch verb {
		case "generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents", "countTokens":
			c.Op, c.Model = verb, model
		default:
			return c, "", fmt.Errorf("Gemini method %q is neither served nor a known skip", verb)
		}
	default:
		return c, "", fmt.Errorf("host %s is neither served nor a known skip", it.Host)
	}
	c.Target = "/" + c.Provider + it.Path
	if it.RawQuery != "" {
		c.Target += "?" + it.RawQuery
	}
	if c.Model == "" {
		var m struct {
			Model string `json:"model"`
		}
		if err := json.Unmarshal(it.RequestBody, &m); err != nil || m.Model == "" {
			return c, "", fmt.Errorf("request body has no model: %v", err)
		}
		c.Model = m.Model
	}
	return c, "", nil
}

var (
	corpusOnce sync.Once
	corpus     []Interaction
	corpusErr  error
)

func loadCorpus(t testing.TB) []Interaction {
	t.Helper()
	corpusOnce.Do(func() { corpus, corpusErr = LoadAll(RecordedDir()) })
	if corpusErr != nil {
		t.Fatal(corpusErr)
	}
	return corpus
}

// servedCases classifies the corpus and checks the skip list.
func servedCases(t *testing.T) []replayCase {
	t.Helper()
	all := loadCorpus(t)
	var cases []replayCase
	skipped := map[string]string{}
	for _, it := range all {
		c, reason, err := classify(it)
		switch {
		case err != nil:
			t.Fatalf("%s: %v", it.Name(), err)
		case reason != "":
			skipped[it.Name()] = reason
		default:
			cases = append(cases, c)
		}
	}
	if !reflect.DeepEqual(skipped, wantSkipped) {
		for k, v := range skipped {
			if wantSkipped[k] != v {
				t.Errorf("skipped %s (%s), not in wantSkipped with that reason", k, v)
			}
		}
		for k := range wantSkipped {
			if _, ok := skipped[k]; !ok {
				t.Errorf("wantSkipped has %s, which is not skipped (or no longer recorded)", k)
			}
		}
		t.FailNow()
	}
	return cases
}

func TestCorpus(t *testing.T) {
	files, err := Cassettes(RecordedDir())
	if err != nil {
		t.Fatal(err)
	}
	all := loadCorpus(t)
	if len(files) != wantCassettes || len(all) != wantInteractions {
		t.Fatalf("corpus has %d cassettes and %d interactions, want %d and %d: update the pinned counts and wantSkipped",
			len(files), len(all), wantCassettes, wantInteractions)
	}
	perFile := map[string]int{}
	formats := map[Format]int{}
	for _, it := range all {
		perFile[it.File]++
		formats[it.Format]++
		if it.Method != http.MethodPost {
			t.Errorf("%s: method %q", it.Name(), it.Method)
		}
		if it.Status < 200 || it.Status > 599 {
			t.Errorf("%s: status %d", it.Name(), it.Status)
		}
		if len(it.Body) == 0 || len(it.RequestBody) == 0 {
			t.Errorf("%s: empty request or response body", it.Name())
		}
		if it.Gzipped && !strings.EqualFold(it.Header.Get("Content-Encoding"), "gzip") {
			t.Errorf("%s: body was gzip but the recorded headers do not say so", it.Name())
		}
	}
	for _, f := range files {
		if perFile[f] == 0 {
			t.Errorf("%s: no interactions", f)
		}
	}
	if formats[FormatGoVCR] == 0 || formats[FormatVCRPy] == 0 || formats[FormatPydantic] == 0 {
		t.Errorf("formats seen: %v; want all three", formats)
	}
	cases := servedCases(t)
	if len(cases)+len(wantSkipped) != len(all) {
		t.Fatalf("%d served + %d skipped != %d", len(cases), len(wantSkipped), len(all))
	}
	served := map[string]bool{}
	for _, c := range cases {
		served[c.It.Name()] = true
	}
	for name := range noKeyCases {
		if !served[name] {
			t.Errorf("noKeyCases names %s, which is not a replayed interaction", name)
		}
	}
	withUsage := 0
	for _, c := range cases {
		if _, ok, err := recordedUsage(c); err != nil {
			t.Errorf("%s: %v", c.It.Name(), err)
		} else if ok {
			withUsage++
		}
	}
	reasons := map[string]int{}
	for _, r := range wantSkipped {
		reasons[r]++
	}
	t.Logf("%d interactions in %d cassettes; replayed %d (%d with recorded usage); skipped %d: %v",
		len(all), len(files), len(cases), withUsage, len(wantSkipped), reasons)
}

// ---------------------------------------------------------------------------
// The in-process stack.

// catalogOverlay adds the model names the recordings use and the default
// catalog lacks. The last group are names the recordings chose to provoke
// an upstream error; serving them here lets the request reach the replayed
// upstream, whose recorded error must then pass through.
const catalogOverlay = `
models:
  - {provider: openai, name: gpt-4, like: gpt-4o}
  - provider: openai
    name: text-embedding-3-small
    kind: embedding
    price: {input: 0.02, output: 0}
    tpm: {free: 1000000, personal: 1000000, pro: 1000000}
  - {provider: anthropic, name: claude-opus-4-6, like: claude-opus-4-5}
  - {provider: anthropic, name: claude-sonnet-4-6, like: claude-sonnet-4-5}
  - {provider: anthropic, name: claude-3-5-sonnet-20240620, like: claude-3-7-sonnet-20250219}
  - {provider: gemini, name: gemini-3.5-flash, like: gemini-3-flash-preview}
  - provider: gemini
    name: gemini-embedding-001
    kind: embedding
    price: {input: 0.15, output: 0}
    tpm: {free: 1000000, personal: 1000000, pro: 1000000}
  # names recorded to provoke upstream errors
  - {provider: openai, name: gpt-4.1-nano-wrong, like: gpt-4.1-nano}
  - {provider: openai, name: this-model-does-not-exist, like: gpt-4o-mini}
  - {provider: openai, name: text-embedding-4-ultra, like: text-embedding-3-small}
  - {provider: anthropic, name: invalid-model-name, like: claude-sonnet-4-5}
`

// overlayModels are the names catalogOverlay adds, by provider.
var overlayModels = map[string][]string{
	"openai":    {"gpt-4", "gpt-4.1-nano-wrong", "text-embedding-3-small", "text-embedding-4-ultra", "this-model-does-not-exist"},
	"anthropic": {"claude-3-5-sonnet-20240620", "claude-opus-4-6", "claude-sonnet-4-6", "invalid-model-name"},
	"gemini":    {"gemini-3.5-flash", "gemini-embedding-001"},
}

// Real provider keys the gateway is configured with; they must arrive
// upstream, and the client's gateway token must not.
var upstreamKeys = map[string]string{
	"openai":    "sk-upstream-test",
	"anthropic": "sk-ant-upstream-test",
	"gemini":    "gemini-upstream-test",
}

const (
	testAccount = "acct-replay"
	testProject = "proj-replay"
)

type fixture struct {
	catalog  *catalog.Catalog
	counter  *tokenize.Counter
	verifier *auth.Verifier
	token    string
}

var (
	fixOnce sync.Once
	fix     fixture
	fixErr  error
)

func getFixture(t testing.TB) fixture {
	t.Helper()
	fixOnce.Do(func() {
		def, err := catalog.Default()
		if err != nil {
			fixErr = err
			return
		}
		if fix.catalog, err = catalog.Load(def, []byte(catalogOverlay)); err != nil {
			fixErr = err
			return
		}
		if fix.counter, err = tokenize.NewCounter(); err != nil {
			fixErr = err
			return
		}
		signer, err := auth.GenerateKey("")
		if err != nil {
			fixErr = err
			return
		}
		fix.verifier = auth.NewVerifier(map[string]ed25519.PublicKey{signer.KeyID(): signer.PublicKey()}, nil)
		now := time.Now()
		fix.token, fixErr = signer.Mint(auth.Claims{
			Account: testAccount, Project: testProject, IssuedAt: now, ExpiresAt: now.Add(24 * time.Hour),
		})
	})
	if fixErr != nil {
		t.Fatal(fixErr)
	}
	return fix
}

func newGateway(t testing.TB, rec gateway.Recorder, keys map[string]string) *gateway.Gateway {
	f := getFixture(t)
	ups := map[string]gateway.Upstream{}
	for name := range upstreamKeys {
		ups[name] = gateway.Upstream{Key: keys[name]}
	}
	return gateway.New(gateway.Config{
		Providers: []gateway.Provider{openai.New(), anthropic.New(), gemini.New()},
		Upstreams: ups,
		Catalog:   f.catalog,
		Verifier:  f.verifier,
		Recorder:  rec,
		Counter:   f.counter,
	})
}

// outcome is what one replayed request produced.
type outcome struct {
	Status   int
	Header   http.Header
	Body     []byte
	Records  []usage.Record
	Received []Received
}

// variant is how the client request differs from the recording.
type variant struct {
	name string
	// body replaces the recorded request body when not nil.
	body []byte
	// queryKey sends the token as ?key= (Gemini REST) instead of a header.
	queryKey bool
	// hiddenUsage: the client did not ask for stream usage but the
	// recording has the usage chunk, which the gateway must hide.
	hiddenUsage bool
	// noKey configures the gateway without real provider keys (local
	// fakes): nothing may then authenticate upstream.
	noKey bool
}

func (v variant) requestBody(c replayCase) []byte {
	if v.body != nil {
		return v.body
	}
	return c.It.RequestBody
}

// Headers a client sends that must never reach the provider.
var clientNoise = map[string]string{
	"User-Agent":          "replay-test-client/1.0",
	"Cookie":              "session=client-cookie",
	"OpenAI-Organization": "org-client",
	"OpenAI-Project":      "proj-client",
	"X-Client-Secret":     "client-secret-value",
	"X-Stainless-Lang":    "go",
	"Anthropic-Beta":      "prompt-caching-2024-07-31",
	"X-Goog-User-Project": "client-project",
}

// replay sends c through a fresh gateway behind front door d, whose
// upstreams are a replay of c.It written in the given chunks (nil: the
// default).
func replay(t *testing.T, d frontDoor, c replayCase, v variant, chunks []int) outcome {
	t.Helper()
	f := getFixture(t)
	up := NewUpstream(c.It)
	up.Chunks = chunks
	upSrv := httptest.NewServer(up)
	defer upSrv.Close()
	base, _ := url.Parse(upSrv.URL)

	var mu sync.Mutex
	var recs []usage.Record
	keys := upstreamKeys
	if v.noKey {
		keys = nil
	}
	gw := newGateway(t, gateway.RecorderFunc(func(r usage.Record) {
		mu.Lock()
		recs = append(recs, r)
		mu.Unlock()
	}), keys)
	doorURL, stop := d.start(t, gw, base, chunks)

	target := c.Target
	if v.queryKey {
		sep := "?"
		if strings.Contains(target, "?") {
			sep = "&"
		}
		target += sep + "key=" + url.QueryEscape(f.token)
	}
	req, err := http.NewRequest(http.MethodPost, doorURL+target, bytes.NewReader(v.requestBody(c)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, val := range clientNoise {
		req.Header.Set(k, val)
	}
	switch c.Provider {
	case "openai":
		req.Header.Set("Authorization", "Bearer "+f.token)
	case "anthropic":
		req.Header.Set("X-Api-Key", f.token)
		req.Header.Set("Anthropic-Version", "2023-06-01")
	case "gemini":
		if !v.queryKey {
			req.Header.Set("X-Goog-Api-Key", f.token)
		}
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	stop() // the record is in
	mu.Lock()
	defer mu.Unlock()
	return outcome{Status: resp.StatusCode, Header: resp.Header, Body: body, Records: recs, Received: up.Requests()}
}

// ---------------------------------------------------------------------------
// The replay test.

// noKeyCases are replayed a second time with no real provider key
// configured, one per provider and framing.
var noKeyCases = map[string]bool{
	"envoyproxy-ai-gateway/chat-basic.yaml#0":                                 true,
	"opentelemetry-python-contrib/test_chat_completion_streaming.yaml#0":      true,
	"opentelemetry-python-contrib/test_sync_messages_create_basic.yaml#0":     true,
	"opentelemetry-python-contrib/test_sync_messages_create_streaming.yaml#0": true,
	"openinference/test_generate_content.yaml#0":                              true,
	"llm-gemini/test_prompt.yaml#0":                                           true,
}

// variants lists the client requests made for c.
func variants(t *testing.T, c replayCase) []variant {
	vs := []variant{{name: "recorded"}}
	if c.Provider == "openai" && c.Op == "chat.completions" && c.streamRequested() && c.It.Status/100 == 2 {
		if _, _, ok := usageChunk(c.It.Body); ok {
			// The recording asked for usage; a client that does not gets
			// include_usage injected and the usage chunk hidden.
			var m map[string]json.RawMessage
			if err := json.Unmarshal(c.It.RequestBody, &m); err != nil {
				t.Fatal(err)
			}
			delete(m, "stream_options")
			b, _ := json.Marshal(m)
			vs = append(vs, variant{name: "hidden-usage", body: b, hiddenUsage: true})
		}
	}
	if c.Provider == "gemini" {
		vs = append(vs, variant{name: "query-key", queryKey: true})
	}
	if noKeyCases[c.It.Name()] {
		vs = append(vs, variant{name: "no-upstream-key", noKey: true})
	}
	return vs
}

func TestReplay(t *testing.T) {
	cases := servedCases(t)
	for _, d := range frontDoors {
		for _, c := range cases {
			for _, v := range variants(t, c) {
				t.Run(d.name+"/"+c.It.Name()+"/"+v.name, func(t *testing.T) {
					t.Parallel()
					out := replay(t, d, c, v, nil)
					checkOutcome(t, c, v, out)
				})
			}
		}
	}
}

// wantClientBody is the body the client must receive.
func wantClientBody(t *testing.T, c replayCase, v variant) []byte {
	if !v.hiddenUsage {
		return c.It.Body
	}
	start, end, ok := usageChunk(c.It.Body)
	if !ok {
		t.Fatal("hidden-usage variant without a usage chunk")
	}
	// Without include_usage the API leaves usage out of every chunk; with it
	// (as recorded) each chunk carries "usage":null, which the client that
	// did not ask must not see either.
	body := slices.Concat(c.It.Body[:start], c.It.Body[end:])
	return bytes.ReplaceAll(body, []byte(`,"usage":null`), nil)
}

func checkOutcome(t *testing.T, c replayCase, v variant, out outcome) {
	f := getFixture(t)
	it := c.It

	// (b), (c): status, content type and bytes as recorded.
	if out.Status != it.Status {
		t.Errorf("client status %d, recorded %d (body %.300q)", out.Status, it.Status, out.Body)
	}
	ct, _ := it.ServedContentType()
	if got := out.Header.Get("Content-Type"); got != ct {
		t.Errorf("client content-type %q, upstream sent %q", got, ct)
	}
	if want := wantClientBody(t, c, v); !bytes.Equal(out.Body, want) {
		t.Errorf("client body differs from the recording (%s)", diffAt(out.Body, want))
	}
	for k := range out.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "x-ratelimit-") || strings.HasPrefix(lk, "anthropic-ratelimit-") ||
			slices.Contains([]string{"set-cookie", "openai-organization", "openai-project", "anthropic-organization-id"}, lk) {
			t.Errorf("client received upstream account header %s", k)
		}
	}
	if out.Header.Get("X-Tollgate-Request-Id") == "" {
		t.Error("no x-tollgate-request-id")
	}

	// (d): what reached the provider.
	if len(out.Received) != 1 {
		t.Fatalf("upstream received %d requests, want 1", len(out.Received))
	}
	checkUpstreamRequest(t, c, v, out.Received[0], f.token)

	// (a), (c): the one usage record.
	if len(out.Records) != 1 {
		t.Fatalf("%d usage records, want 1", len(out.Records))
	}
	rec := out.Records[0]
	if rec.Provider != c.Provider || rec.Model != c.Model || rec.Operation != c.Op ||
		rec.Account != testAccount || rec.Project != testProject || rec.HTTPStatus != it.Status ||
		rec.Stream != c.streamRequested() {
		t.Errorf("record %+v: want provider %s model %s operation %s account %s project %s http %d stream %v",
			rec, c.Provider, c.Model, c.Op, testAccount, testProject, it.Status, c.streamRequested())
	}
	want, hasUsage, err := recordedUsage(c)
	if err != nil {
		t.Fatalf("reading the recorded usage: %v", err)
	}
	switch {
	case it.Status/100 != 2:
		if rec.Status != usage.StatusError || rec.Reason != "upstream_status" || !rec.Tokens.IsZero() || rec.Estimated {
			t.Errorf("error recording: record status %s reason %q tokens %+v estimated %v; want error, upstream_status, no tokens",
				rec.Status, rec.Reason, rec.Tokens, rec.Estimated)
		}
	case hasUsage:
		if rec.Status != usage.StatusOK || rec.Estimated || rec.Tokens != want {
			t.Errorf("metered %+v (status %s, estimated %v); the recording says %+v",
				rec.Tokens, rec.Status, rec.Estimated, want)
		}
	default:
		// No usage in the response: a marked estimate.
		if rec.Status != usage.StatusOK || !rec.Estimated || rec.Input <= 0 || (it.IsStream() && rec.Output <= 0) {
			t.Errorf("response without usage: record status %s estimated %v tokens %+v; want ok, estimated, input>0%s",
				rec.Status, rec.Estimated, rec.Tokens, map[bool]string{true: ", output>0"}[it.IsStream()])
		}
	}
}

// gatewayHeaders are the only request headers the provider may see, by
// provider; Go's transport adds User-Agent and the server reports
// Content-Length.
var gatewayHeaders = map[string][]string{
	"openai":    {"accept-encoding", "authorization", "content-length", "content-type", "user-agent"},
	"anthropic": {"accept-encoding", "anthropic-version", "content-length", "content-type", "user-agent", "x-api-key"},
	"gemini":    {"accept-encoding", "content-length", "content-type", "user-agent", "x-goog-api-key"},
}

func checkUpstreamRequest(t *testing.T, c replayCase, v variant, got Received, token string) {
	if got.Method != http.MethodPost || got.Path != c.It.Path || got.RawQuery != c.It.RawQuery {
		t.Errorf("upstream got %s %s?%s, want POST %s?%s", got.Method, got.Path, got.RawQuery, c.It.Path, c.It.RawQuery)
	}
	wantNames := gatewayHeaders[c.Provider]
	if v.noKey {
		wantNames = slices.DeleteFunc(slices.Clone(wantNames), func(n string) bool {
			return n == "authorization" || n == "x-api-key" || n == "x-goog-api-key"
		})
	}
	if keys := Keys(got.Header); !slices.Equal(keys, wantNames) {
		t.Errorf("upstream header names %v, want exactly %v", keys, wantNames)
	}
	h := got.Header
	want := map[string]string{
		"Content-Type":    "application/json",
		"Accept-Encoding": "identity",
		"User-Agent":      gateway.UserAgent,
	}
	if c.Provider == "anthropic" {
		want["Anthropic-Version"] = "2023-06-01"
	}
	if !v.noKey {
		switch c.Provider {
		case "openai":
			want["Authorization"] = "Bearer " + upstreamKeys["openai"]
		case "anthropic":
			want["X-Api-Key"] = upstreamKeys["anthropic"]
		case "gemini":
			want["X-Goog-Api-Key"] = upstreamKeys["gemini"]
		}
	}
	for k, val := range want {
		if vs := h.Values(k); len(vs) != 1 || vs[0] != val {
			t.Errorf("upstream %s = %q, want [%q]", k, vs, val)
		}
	}
	for k, vs := range h {
		for _, val := range vs {
			if strings.Contains(val, token) {
				t.Errorf("the gateway token reached upstream in header %s", k)
			}
		}
	}
	if strings.Contains(got.RawQuery, token) || strings.Contains(got.Path, token) || bytes.Contains(got.Body, []byte(token)) {
		t.Error("the gateway token reached upstream in the URL or body")
	}

	sent := v.requestBody(c)
	if c.Provider != "openai" || c.Op == "embeddings" {
		if !bytes.Equal(got.Body, sent) {
			t.Errorf("upstream body changed (%s)", diffAt(got.Body, sent))
		}
		return
	}
	// OpenAI chat and responses: store=false, the account's prompt cache
	// key, and for a chat stream include_usage; nothing else changes.
	wantBody := decodeNumbers(t, sent)
	gotBody := decodeNumbers(t, got.Body)
	key, _ := gotBody["prompt_cache_key"].(string)
	if !strings.HasPrefix(key, "tg-") || strings.Contains(key, testAccount) {
		t.Errorf("prompt_cache_key %q", key)
	}
	wantBody["store"] = false
	wantBody["prompt_cache_key"] = key
	if c.Op == "chat.completions" && c.streamRequested() {
		so, _ := wantBody["stream_options"].(map[string]any)
		if so == nil {
			so = map[string]any{}
		}
		so["include_usage"] = true
		wantBody["stream_options"] = so
	}
	if !reflect.DeepEqual(gotBody, wantBody) {
		g, _ := json.Marshal(gotBody)
		w, _ := json.Marshal(wantBody)
		t.Errorf("upstream body\n got %.600s\nwant %.600s", g, w)
	}
}

func decodeNumbers(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decoding %.200q: %v", b, err)
	}
	return m
}

func diffAt(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-60)
	return fmt.Sprintf("len %d vs %d, first difference at byte %d: got %q, want %q",
		len(got), len(want), i, got[lo:min(len(got), i+80)], want[lo:min(len(want), i+80)])
}

// TestUnservedEndpointsRefused checks the skip reasons that say "the
// gateway does not serve it": the gateway answers itself and nothing goes
// upstream.
func TestUnservedEndpointsRefused(t *testing.T) {
	for _, it := range loadCorpus(t) {
		if r := wantSkipped[it.Name()]; r != skipCompletions && r != skipImages {
			continue
		}
		t.Run(it.Name(), func(t *testing.T) {
			c := replayCase{It: it, Provider: "openai", Target: "/openai" + it.Path}
			out := replay(t, frontDoors[0], c, variant{name: "unserved"}, nil)
			if out.Status != http.StatusNotFound || len(out.Received) != 0 {
				t.Errorf("status %d, %d upstream requests; want the gateway's own 404 and none", out.Status, len(out.Received))
			}
			var e struct {
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(out.Body, &e); err != nil || e.Error.Code != "unsupported" {
				t.Errorf("body %s: want an OpenAI error with code unsupported", out.Body)
			}
			if len(out.Records) != 1 || out.Records[0].Status != usage.StatusRejected || !out.Records[0].Tokens.IsZero() {
				t.Errorf("records %+v; want one rejected record without tokens", out.Records)
			}
		})
	}
}

// TestCatalogCoversRecordings checks that the overlay adds exactly the
// recorded names the default catalog lacks.
func TestCatalogCoversRecordings(t *testing.T) {
	def, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	f := getFixture(t)
	missing := map[string][]string{}
	for _, c := range servedCases(t) {
		if _, ok := f.catalog.Lookup(catalog.Provider(c.Provider), c.Model); !ok {
			t.Errorf("%s: model %s/%s not in the test catalog", c.It.Name(), c.Provider, c.Model)
		}
		if _, ok := def.Lookup(catalog.Provider(c.Provider), c.Model); !ok && !slices.Contains(missing[c.Provider], c.Model) {
			missing[c.Provider] = append(missing[c.Provider], c.Model)
		}
	}
	for p := range missing {
		sort.Strings(missing[p])
	}
	if !reflect.DeepEqual(missing, overlayModels) {
		t.Errorf("recorded models missing from the default catalog: %v; the overlay adds %v", missing, overlayModels)
	}
}

// ---------------------------------------------------------------------------
// Usage as the recording states it, read independently of the gateway.

// recordedUsage reads the usage in c's recorded response and maps it onto
// the gateway's disjoint kinds. ok is false when the response has none (an
// error, a stream recorded without include_usage, Gemini embeddings).
func recordedUsage(c replayCase) (u usage.Tokens, ok bool, err error) {
	it := c.It
	if it.Status/100 != 2 {
		return u, false, nil
	}
	ct, _ := it.ServedContentType()
	sse := strings.HasPrefix(strings.ToLower(ct), "text/event-stream")
	switch c.Provider {
	case "openai":
		if !sse {
			var doc struct {
				Usage json.RawMessage `json:"usage"`
			}
			if err := json.Unmarshal(it.Body, &doc); err != nil {
				return u, false, err
			}
			return openAIUsage(doc.Usage)
		}
		for _, ev := range parseSSE(it.Body) {
			if !bytes.HasPrefix(ev.data, []byte("{")) {
				continue // [DONE]
			}
			if c.Op == "responses" {
				var e struct {
					Type     string `json:"type"`
					Response struct {
						Usage json.RawMessage `json:"usage"`
					} `json:"response"`
				}
				if err := json.Unmarshal(ev.data, &e); err != nil {
					return u, false, err
				}
				switch e.Type {
				case "response.completed", "response.incomplete", "response.failed":
					if v, found, err := openAIUsage(e.Response.Usage); err != nil {
						return u, false, err
					} else if found {
						u, ok = v, true
					}
				}
				continue
			}
			var e struct {
				Usage json.RawMessage `json:"usage"`
			}
			if err := json.Unmarshal(ev.data, &e); err != nil {
				return u, false, err
			}
			if v, found, err := openAIUsage(e.Usage); err != nil {
				return u, false, err
			} else if found {
				u, ok = v, true
			}
		}
		return u, ok, nil
	case "anthropic":
		if !sse {
			var doc struct {
				Usage json.RawMessage `json:"usage"`
			}
			if err := json.Unmarshal(it.Body, &doc); err != nil {
				return u, false, err
			}
			found, err := anthropicOverwrite(&u, doc.Usage)
			return u, found, err
		}
		for _, ev := range parseSSE(it.Body) {
			var e struct {
				Type    string `json:"type"`
				Message struct {
					Usage json.RawMessage `json:"usage"`
				} `json:"message"`
				Usage json.RawMessage `json:"usage"`
			}
			if err := json.Unmarshal(ev.data, &e); err != nil {
				return u, false, err
			}
			switch e.Type {
			case "message_start":
				if _, err := anthropicOverwrite(&u, e.Message.Usage); err != nil {
					return u, false, err
				}
			case "message_delta": // cumulative: overwrites, never adds
				found, err := anthropicOverwrite(&u, e.Usage)
				if err != nil {
					return u, false, err
				}
				ok = ok || found
			}
		}
		return u, ok, nil
	case "gemini":
		var docs []json.RawMessage
		switch {
		case sse:
			for _, ev := range parseSSE(it.Body) {
				docs = append(docs, ev.data)
			}
		case c.Op == "streamGenerateContent":
			if err := json.Unmarshal(it.Body, &docs); err != nil {
				return u, false, fmt.Errorf("JSON-array stream: %w", err)
			}
		default:
			docs = []json.RawMessage{it.Body}
		}
		for _, d := range docs { // running totals: the last one wins
			var e struct {
				Usage *struct {
					Prompt     int64 `json:"promptTokenCount"`
					Cached     int64 `json:"cachedContentTokenCount"`
					Candidates int64 `json:"candidatesTokenCount"`
					Thoughts   int64 `json:"thoughtsTokenCount"`
					ToolPrompt int64 `json:"toolUsePromptTokenCount"`
					// Modality breakdowns: audio input and image output
					// are billed apart (usage.Tokens).
					PromptDet     modalities `json:"promptTokensDetails"`
					CacheDet      modalities `json:"cacheTokensDetails"`
					CandidatesDet modalities `json:"candidatesTokensDetails"`
				} `json:"usageMetadata"`
			}
			if err := json.Unmarshal(d, &e); err != nil {
				return u, false, err
			}
			if e.Usage == nil {
				continue
			}
			m := e.Usage
			u = usage.Tokens{
				Input:       m.Prompt - m.Cached + m.ToolPrompt,
				CachedInput: m.Cached,
				Output:      m.Candidates + m.Thoughts,
				Reasoning:   m.Thoughts,
			}
			for _, d := range m.PromptDet {
				if d.Modality == "AUDIO" {
					u.AudioInput += d.Count
				}
			}
			for _, d := range m.CacheDet {
				if d.Modality == "AUDIO" {
					u.AudioInput -= d.Count // cached audio is billed as cached input
				}
			}
			for _, d := range m.CandidatesDet {
				if d.Modality == "IMAGE" {
					u.ImageOutput += d.Count
				}
			}
			ok = true
		}
		return u, ok, nil
	}
	return u, false, fmt.Errorf("provider %s", c.Provider)
}

// modalities is a Gemini *TokensDetails array.
type modalities []struct {
	Modality string `json:"modality"`
	Count    int64  `json:"tokenCount"`
}

// openAIUsage maps a Chat (prompt/completion) or Responses (input/output)
// usage object: cached is a subset of the prompt, reasoning of the output.
func openAIUsage(raw json.RawMessage) (usage.Tokens, bool, error) {
	var u usage.Tokens
	if len(raw) == 0 || string(raw) == "null" {
		return u, false, nil
	}
	var v struct {
		Prompt     *int64 `json:"prompt_tokens"`
		Completion *int64 `json:"completion_tokens"`
		Input      *int64 `json:"input_tokens"`
		Output     *int64 `json:"output_tokens"`
		PromptDet  struct {
			Cached int64 `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
		InputDet struct {
			Cached int64 `json:"cached_tokens"`
		} `json:"input_tokens_details"`
		CompletionDet struct {
			Reasoning int64 `json:"reasoning_tokens"`
		} `json:"completion_tokens_details"`
		OutputDet struct {
			Reasoning int64 `json:"reasoning_tokens"`
		} `json:"output_tokens_details"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return u, false, err
	}
	// Chat names the counts prompt/completion, Responses input/output.
	first := func(a, b *int64) int64 {
		switch {
		case a != nil:
			return *a
		case b != nil:
			return *b
		}
		return 0
	}
	if v.Prompt == nil && v.Input == nil && v.Completion == nil && v.Output == nil {
		return u, false, fmt.Errorf("usage object without token counts: %s", raw)
	}
	prompt, out := first(v.Prompt, v.Input), first(v.Completion, v.Output)
	cached := v.PromptDet.Cached + v.InputDet.Cached
	return usage.Tokens{
		Input: prompt - cached, CachedInput: cached, Output: out,
		Reasoning: v.CompletionDet.Reasoning + v.OutputDet.Reasoning,
	}, true, nil
}

// anthropicOverwrite sets the counters present (and not null) in raw.
func anthropicOverwrite(u *usage.Tokens, raw json.RawMessage) (bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return false, nil
	}
	var v struct {
		Input       *int64 `json:"input_tokens"`
		CacheRead   *int64 `json:"cache_read_input_tokens"`
		CacheCreate *int64 `json:"cache_creation_input_tokens"`
		Output      *int64 `json:"output_tokens"`
		OutDetails  *struct {
			Thinking *int64 `json:"thinking_tokens"`
		} `json:"output_tokens_details"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return false, err
	}
	found := false
	set := func(dst *int64, p *int64) {
		if p != nil {
			*dst, found = *p, true
		}
	}
	set(&u.Input, v.Input)
	set(&u.CachedInput, v.CacheRead)
	set(&u.CacheWrite, v.CacheCreate)
	set(&u.Output, v.Output)
	if v.OutDetails != nil {
		set(&u.Reasoning, v.OutDetails.Thinking)
	}
	return found, nil
}

// sseEvent is one event of a recorded stream: [start, end) is its byte
// range, from the previous event's end to just past its blank line.
type sseEvent struct {
	name       string
	data       []byte
	start, end int
}

// parseSSE splits a text/event-stream body into events (lines end in
// CRLF, LF or CR; an event ends at a blank line; events without data are
// not dispatched; a last event without its blank line still counts).
func parseSSE(b []byte) []sseEvent {
	var out []sseEvent
	var cur sseEvent
	var data [][]byte
	hasData := false
	start := 0
	dispatch := func(end int) {
		if hasData {
			cur.data = bytes.Join(data, []byte("\n"))
			cur.start, cur.end = start, end
			out = append(out, cur)
			start = end
		}
		cur, data, hasData = sseEvent{}, nil, false
	}
	for i := 0; i < len(b); {
		j := i
		for j < len(b) && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		line := b[i:j]
		next := j
		if next < len(b) {
			if b[next] == '\r' && next+1 < len(b) && b[next+1] == '\n' {
				next += 2
			} else {
				next++
			}
		}
		if len(line) == 0 {
			dispatch(next)
		} else if line[0] != ':' {
			field, value, found := bytes.Cut(line, []byte(":"))
			if found && len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
			switch string(field) {
			case "data":
				data = append(data, value)
				hasData = true
			case "event":
				cur.name = string(value)
			}
		}
		i = next
	}
	dispatch(len(b))
	return out
}

// usageChunk finds an OpenAI chat stream's usage chunk: the event with
// "choices": [] and a usage object.
func usageChunk(body []byte) (start, end int, ok bool) {
	for _, ev := range parseSSE(body) {
		var e struct {
			Choices *[]json.RawMessage `json:"choices"`
			Usage   json.RawMessage    `json:"usage"`
		}
		if json.Unmarshal(ev.data, &e) != nil {
			continue
		}
		if e.Choices != nil && len(*e.Choices) == 0 && len(e.Usage) > 0 && string(e.Usage) != "null" {
			return ev.start, ev.end, true
		}
	}
	return 0, 0, false
}
