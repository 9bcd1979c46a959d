package replay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/account"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	"github.com/tollgate-dev/tollgate/pkg/meter"
	"github.com/tollgate-dev/tollgate/pkg/provider/anthropic"
	"github.com/tollgate-dev/tollgate/pkg/provider/gemini"
	"github.com/tollgate-dev/tollgate/pkg/provider/openai"
	"github.com/tollgate-dev/tollgate/pkg/tokenize"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// ---------------------------------------------------------------------------
// The corpus and how each interaction is handled (rules_test.go).

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

// allCases classifies the corpus; a served request for a model the test
// catalog lacks (the overlay derives one for every recorded name but those
// the provider said do not exist and those it could not place) is expected
// refused as the gateway refuses it.
func allCases(t testing.TB) []replayCase {
	t.Helper()
	f := getFixture(t)
	var out []replayCase
	for _, it := range loadCorpus(t) {
		c := classify(it)
		if c.Handling == handleReplay {
			if _, ok := f.catalog.Lookup(catalog.Provider(c.Provider), c.Model); !ok {
				c = c.modelNotFound()
			}
		}
		out = append(out, c)
	}
	return out
}

// casesOf returns the cases with handling h.
func casesOf(t testing.TB, h handling) []replayCase {
	var out []replayCase
	for _, c := range allCases(t) {
		if c.Handling == h {
			out = append(out, c)
		}
	}
	return out
}

// servedCases are the interactions forwarded to the replayed provider.
func servedCases(t *testing.T) []replayCase { return casesOf(t, handleReplay) }

// TestCorpus checks the corpus against SOURCES.md, its manifest: every
// file the project ships must load with at least the interactions listed
// there (a lost or truncated cassette fails); files added without an entry
// are replayed like the rest and only logged.
func TestCorpus(t *testing.T) {
	files, err := Cassettes(RecordedDir())
	if err != nil {
		t.Fatal(err)
	}
	all := loadCorpus(t)
	perFile := map[string]int{}
	formats := map[Format]int{}
	for _, it := range all {
		perFile[it.File]++
		formats[it.Format]++
		if it.Status < 100 || it.Status > 599 {
			t.Errorf("%s: status %d", it.Name(), it.Status)
		}
		if it.Gzipped && !strings.EqualFold(it.Header.Get("Content-Encoding"), "gzip") {
			t.Errorf("%s: body was gzip but the recorded headers do not say so", it.Name())
		}
	}
	shipped := shippedCassettes(t)
	present := map[string]bool{}
	for _, f := range files {
		present[f] = true
	}
	for _, s := range shipped {
		switch {
		case !present[s.File]:
			t.Errorf("%s: listed in SOURCES.md but missing from testdata/recorded", s.File)
		case perFile[s.File] < s.Interactions:
			t.Errorf("%s: %d interactions, SOURCES.md lists %d", s.File, perFile[s.File], s.Interactions)
		}
	}
	var unlisted []string
	for _, f := range files {
		if !slices.ContainsFunc(shipped, func(s shippedCassette) bool { return s.File == f }) {
			unlisted = append(unlisted, f)
		}
		if perFile[f] == 0 {
			t.Logf("%s: no HTTP interactions", f)
		}
	}
	for _, fm := range []Format{FormatGoVCR, FormatVCRPy, FormatPydantic, FormatCassetter} {
		if formats[fm] == 0 {
			t.Errorf("formats seen: %v; want every one of go-vcr, vcrpy, pydantic-ai and cassetter", formats)
			break
		}
	}

	byHandling := map[handling]int{}
	skips := map[string]int{}
	refusals := map[string]int{}
	withUsage := 0
	for _, c := range allCases(t) {
		byHandling[c.Handling]++
		switch c.Handling {
		case handleSkip:
			skips[c.Skip]++
		case handleRefuse:
			refusals[c.Provider+": "+c.Refusal.Rule]++
		case handleReplay:
			if _, ok, err := recordedUsage(c); err != nil {
				t.Errorf("%s: %v", c.It.Name(), err)
			} else if ok {
				withUsage++
			}
		}
	}
	for name := range noKeyCases {
		if c, ok := caseNamed(t, name); !ok || c.Handling != handleReplay {
			t.Errorf("noKeyCases names %s, which is not a replayed interaction", name)
		}
	}
	t.Logf("%d interactions in %d cassettes (%d shipped per SOURCES.md, %d more: %v); formats %v",
		len(all), len(files), len(shipped), len(unlisted), unlisted, formats)
	t.Logf("replayed %d (%d with recorded usage), refused by the gateway %d %v, answered locally %d, skipped %d %v",
		byHandling[handleReplay], withUsage, byHandling[handleRefuse], refusals, byHandling[handleLocal],
		byHandling[handleSkip], skips)
}

func caseNamed(t testing.TB, name string) (replayCase, bool) {
	for _, c := range allCases(t) {
		if c.It.Name() == name {
			return c, true
		}
	}
	return replayCase{}, false
}

// ---------------------------------------------------------------------------
// The in-process stack.

// overlayFile adds the model names the shipped recordings use and the
// default catalog lacks, each priced like a named model (docs/catalog.md).
// derivedOverlay adds any other recorded name, so that a cassette added
// later is metered instead of refused as an unknown model.
func overlayFile() string {
	return filepath.Join(RecordedDir(), "..", "..", "test", "testdata", "catalog-recorded.yaml")
}

// derivedOverlay prices every recorded model name that cat lacks like the
// default catalog's model (the overlay's, for a kind the defaults lack) of
// the same provider and kind with which it shares the
// longest prefix, then the longest suffix, then the latest-sorting name
// (gemini-1.5-flash like gemini-2.5-flash). Those
// prices are a guess, which is why shipped recordings must be covered by
// the overlay file instead (TestCatalogCoversRecordings).
//
// A name every recorded response for which says the model does not exist
// (upstreamModelNotFound) is not priced but returned in unknown: the
// gateway must then refuse it as a model it does not have, as it would
// refuse it in production, so that those recordings check the gateway's own
// refusal instead of replaying the provider's.
func derivedOverlay(def, cat *catalog.Catalog, its []Interaction) (yaml string, names, unknown []string) {
	type named struct {
		c replayCase
		// found: some recorded response does not say the model does not
		// exist.
		found bool
	}
	var order []string
	byName := map[string]*named{}
	for _, it := range its {
		c := classify(it)
		// Requests refused for their body get a model too, so that they
		// are refused for that reason whichever check the gateway runs
		// first.
		if c.Handling == handleSkip || c.Handling == handleLocal || c.Model == "" {
			continue
		}
		key := c.Provider + "/" + c.Model
		n := byName[key]
		if n == nil {
			n = &named{c: c}
			byName[key] = n
			order = append(order, key)
		}
		n.found = n.found || !upstreamModelNotFound(it)
	}
	var b strings.Builder
	for _, key := range order {
		c := byName[key].c
		if _, ok := cat.Lookup(catalog.Provider(c.Provider), c.Model); ok {
			continue
		}
		if !byName[key].found {
			unknown = append(unknown, key)
			continue
		}
		kind := catalog.KindChat
		if strings.Contains(strings.ToLower(c.Op), "embed") {
			kind = catalog.KindEmbedding
		}
		like, best, bestSuffix := "", -1, -1
		candidates := def.Models(catalog.Provider(c.Provider))
		if !slices.ContainsFunc(candidates, func(m catalog.Model) bool { return m.Kind == kind }) {
			candidates = cat.Models(catalog.Provider(c.Provider)) // embeddings: only the overlay has some
		}
		for _, m := range candidates {
			if m.Kind != kind {
				continue
			}
			n, sfx := commonPrefix(m.Name, c.Model), commonSuffix(m.Name, c.Model)
			if n > best || n == best && (sfx > bestSuffix || sfx == bestSuffix && m.Name > like) {
				like, best, bestSuffix = m.Name, n, sfx
			}
		}
		if like == "" {
			continue // the provider has no model of that kind: refused as unknown
		}
		if b.Len() == 0 {
			b.WriteString("models:\n")
		}
		fmt.Fprintf(&b, "  - {provider: %s, name: %q, like: %q}\n", c.Provider, c.Model, like)
		names = append(names, key+" like "+like)
	}
	return b.String(), names, unknown
}

// upstreamModelNotFound reports a recorded response in which the provider
// says the requested model does not exist: a 404 on a route that names a
// model (how OpenAI's chat and embeddings, Anthropic and Gemini answer an
// unknown model), or an error whose code is model_not_found (OpenAI's
// Responses API answers 400).
func upstreamModelNotFound(it Interaction) bool {
	switch {
	case it.Status == http.StatusNotFound:
		return true
	case it.Status < 400:
		return false
	}
	var e struct {
		Error struct {
			Code any `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(it.Body, &e)
	return e.Error.Code == "model_not_found"
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func commonSuffix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[len(a)-1-n] == b[len(b)-1-n] {
		n++
	}
	return n
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
	// base is the default catalog with the overlay file; catalog adds the
	// derived entries.
	base, catalog *catalog.Catalog
	derived       []string
	// unknown are the recorded names left out of the catalog because the
	// provider said they do not exist ("provider/model").
	unknown  map[string]bool
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
		ov, err := os.ReadFile(overlayFile())
		if err != nil {
			fixErr = err
			return
		}
		if fix.base, err = catalog.Load(def, ov); err != nil {
			fixErr = err
			return
		}
		fix.catalog = fix.base
		all, err := LoadAll(RecordedDir())
		if err != nil {
			fixErr = err
			return
		}
		y, names, unknown := derivedOverlay(def, fix.base, all)
		if y != "" {
			if fix.catalog, err = catalog.Load(fix.base, []byte(y)); err != nil {
				fixErr = fmt.Errorf("derived overlay: %w\n%s", err, y)
				return
			}
			fix.derived = names
		}
		fix.unknown = map[string]bool{}
		for _, k := range unknown {
			fix.unknown[k] = true
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
	// The account layer prices each admitted request (record.Credits) as
	// the gateway runs it; its directory admits the test account without
	// limits.
	pol, err := account.New(account.Config{Directory: replayDirectory{}, Catalog: f.catalog})
	if err != nil {
		t.Fatal(err)
	}
	return gateway.New(gateway.Config{
		Providers: []gateway.Provider{openai.New(), anthropic.New(), gemini.New()},
		Upstreams: ups,
		Catalog:   f.catalog,
		Verifier:  f.verifier,
		Policy:    pol,
		Recorder:  rec,
		Counter:   f.counter,
	})
}

// replayDirectory is the account store: the test account is enabled with
// credits to spare and its project activated.
type replayDirectory struct{}

func (replayDirectory) GetAccount(_ context.Context, id string) (ledger.Account, error) {
	if id != testAccount {
		return ledger.Account{}, ledger.ErrNotFound
	}
	return ledger.Account{ID: id, Plan: catalog.PlanPro, Enabled: true, Balance: 1 << 60}, nil
}

func (replayDirectory) GetProject(_ context.Context, id string) (ledger.Project, error) {
	if id != testProject {
		return ledger.Project{}, ledger.ErrNotFound
	}
	return ledger.Project{ID: id, Account: testAccount, Activated: true}, nil
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
		// The token replaces any key the recorder kept in the URL.
		path, query, _ := strings.Cut(target, "?")
		var keep []string
		for _, p := range strings.Split(query, "&") {
			if k, _, _ := strings.Cut(p, "="); p != "" && k != "key" {
				keep = append(keep, p)
			}
		}
		target = path + "?" + strings.Join(append(keep, "key="+url.QueryEscape(f.token)), "&")
	}
	var body io.Reader
	if b := v.requestBody(c); len(b) > 0 {
		body = bytes.NewReader(b)
	}
	method := c.It.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, doorURL+target, body)
	if err != nil {
		t.Fatal(err)
	}
	// The client sends what the provider's SDK sends, not the recorded
	// request headers: recorders strip them (headers: {}) or keep some, and
	// pydantic-ai's Anthropic recordings lack anthropic-version.
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
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
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	stop() // the record is in
	mu.Lock()
	defer mu.Unlock()
	return outcome{Status: resp.StatusCode, Header: resp.Header, Body: got, Records: recs, Received: up.Requests()}
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

// accountRefusal is the reason the gateway records for an upstream error
// about the operator's account, which it answers itself, or "": by status,
// or for a 400, 402 or 404 by what the provider reads in the body.
func accountRefusal(c replayCase) gateway.Code {
	it := c.It
	switch {
	case it.Status == http.StatusUnauthorized:
		return gateway.CodeUpstreamKey
	case it.Status == http.StatusForbidden:
		return gateway.CodeUpstreamDenied
	case it.Status == http.StatusTooManyRequests && strings.EqualFold(it.Header.Get("x-should-retry"), "false"):
		return gateway.CodeUpstreamQuota
	case it.Status == http.StatusTooManyRequests:
		return gateway.CodeUpstreamLimit
	case judgedByBody(it.Status):
		if ct, _ := it.ServedContentType(); !strings.Contains(strings.ToLower(ct), "json") {
			return ""
		}
		p := map[string]interface {
			AccountError(int, []byte) gateway.Code
		}{"openai": openai.New(), "anthropic": anthropic.New(), "gemini": gemini.New()}[c.Provider]
		return p.AccountError(it.Status, it.Body)
	}
	return ""
}

// judgedByBody reports whether an upstream error status is about the
// operator's account only by what its body says.
func judgedByBody(status int) bool {
	return status == http.StatusBadRequest || status == http.StatusPaymentRequired || status == http.StatusNotFound
}

func checkOutcome(t *testing.T, c replayCase, v variant, out outcome) {
	f := getFixture(t)
	it := c.It

	// (b), (c): status, content type and bytes as recorded; except that a
	// 401, 403 or 429 is about the operator's provider account, whose body
	// (a key's characters, the organization, its use across tenants) no
	// tenant may see: the client gets the gateway's own error of the same
	// status in the provider's shape instead.
	refusal := accountRefusal(c)
	keyRefused := refusal != ""
	if out.Status != it.Status {
		t.Errorf("client status %d, recorded %d (body %.300q)", out.Status, it.Status, out.Body)
	}
	ct, _ := it.ServedContentType()
	if keyRefused && !judgedByBody(it.Status) {
		// Answered at the headers; a 400, 402 or 404 is replaced in its body,
		// under upstream's headers.
		ct = "application/json"
	}
	if got := out.Header.Get("Content-Type"); got != ct {
		t.Errorf("client content-type %q, upstream sent %q", got, ct)
	}
	switch want := wantClientBody(t, c, v); {
	case keyRefused:
		if bytes.Equal(out.Body, want) || !bytes.Contains(out.Body, []byte("the gateway's")) || !json.Valid(out.Body) {
			t.Errorf("a refused provider key: the client got %.300q, want the gateway's own error", out.Body)
		}
	case !bytes.Equal(out.Body, want):
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
	failed := streamFailed(c)
	switch {
	case it.Status/100 != 2:
		reason := "upstream_status"
		if keyRefused {
			reason = string(refusal)
		}
		if rec.Status != usage.StatusError || rec.Reason != reason || !rec.Tokens.IsZero() || rec.Estimated {
			t.Errorf("error recording: record status %s reason %q tokens %+v estimated %v; want error, %s, no tokens",
				rec.Status, rec.Reason, rec.Tokens, rec.Estimated, reason)
		}
	case failed && (rec.Status != usage.StatusError || rec.Reason != gateway.ReasonStreamError):
		t.Errorf("the recorded stream reports an error: record status %s reason %q; want error, %s",
			rec.Status, rec.Reason, gateway.ReasonStreamError)
	case !failed && rec.Status != usage.StatusOK:
		t.Errorf("record status %s reason %q; want ok", rec.Status, rec.Reason)
	}
	switch {
	case it.Status/100 != 2:
	case hasUsage:
		if rec.Estimated || rec.Tokens != want {
			t.Errorf("metered %+v (estimated %v); the recording says %+v%s",
				rec.Tokens, rec.Estimated, want, map[bool]string{true: " (unbilled: token counting)"}[c.Unbilled])
		}
	default:
		// No usage in the response: a marked estimate.
		if !rec.Estimated || rec.Input <= 0 || (it.IsStream() && rec.Output <= 0) {
			t.Errorf("response without usage: record estimated %v tokens %+v; want estimated, input>0%s",
				rec.Estimated, rec.Tokens, map[bool]string{true: ", output>0"}[it.IsStream()])
		}
	}
	// What the request cost: the record's tokens at the price of the
	// model that served it (the requested one unless the response names
	// another catalog model priced differently); nothing for an error
	// status or a token count.
	priced, price := pricing(t, c)
	wantCredits := meter.Credits(price, rec.Tokens, meter.DefaultRate)
	if it.Status/100 != 2 || c.Unbilled {
		wantCredits = 0
	}
	if rec.Credits != wantCredits {
		t.Errorf("credits %d, want %d (%+v at the price of %s)", rec.Credits, wantCredits, rec.Tokens, priced)
	}
}

// pricing is the model whose price a replayed request is billed at, and
// that price: the requested model, unless an Anthropic response says
// another model answered and the catalog has that model, of another price
// family and at a different price (a server-side fallback; docs/credits.md);
// the record still names the requested model. OpenAI and Gemini responses name a snapshot of
// the requested model, never another one.
func pricing(t *testing.T, c replayCase) (string, catalog.Price) {
	f := getFixture(t)
	req, ok := f.catalog.Lookup(catalog.Provider(c.Provider), c.Model)
	if !ok {
		t.Fatalf("model %s/%s not in the test catalog", c.Provider, c.Model)
	}
	if served := servedModel(c); c.Provider == "anthropic" && served != "" && served != c.Model {
		if m, ok := f.catalog.Lookup(catalog.Provider(c.Provider), served); ok && m.Family != req.Family && m.Price != req.Price {
			return served, m.Price
		}
	}
	return c.Model, req.Price
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
	// The query as the gateway forwards it: Anthropic's ?beta=true and
	// any ?key= are dropped, the rest kept as recorded.
	if wq := c.wantUpstreamQuery(); got.Method != http.MethodPost || got.Path != c.It.Path || got.RawQuery != wq {
		t.Errorf("upstream got %s %s?%s, want POST %s?%s", got.Method, got.Path, got.RawQuery, c.It.Path, wq)
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
	// Responses to a reasoning model, store not already off: the encrypted
	// reasoning is asked for, so the output can go back as input.
	if c.Op == "responses" && wantBody["store"] != false && reasoningModel(c.Model) {
		include, _ := wantBody["include"].([]any)
		if !slices.Contains(include, any("reasoning.encrypted_content")) {
			wantBody["include"] = append(include, "reasoning.encrypted_content")
		}
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

// reasoningModel: OpenAI's o-series, gpt-5 family and codex models, which
// emit reasoning items (the harness's own list, checked against the
// gateway's choice).
func reasoningModel(m string) bool {
	switch {
	case strings.Contains(m, "-chat"):
		return false
	case strings.HasPrefix(m, "gpt-5"), strings.HasPrefix(m, "codex-"):
		return true
	}
	return len(m) > 1 && m[0] == 'o' && m[1] >= '1' && m[1] <= '9'
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

// TestRefused sends every recorded request the gateway must refuse (a path
// it does not serve, a body its rules refuse, a model it does not have)
// through each front door: the answer is the gateway's own, in the
// provider's error shape, nothing reaches the provider, and the one record
// is a rejection without tokens or cost.
func TestRefused(t *testing.T) {
	for _, d := range frontDoors {
		for _, c := range casesOf(t, handleRefuse) {
			t.Run(d.name+"/"+c.It.Name(), func(t *testing.T) {
				t.Parallel()
				out := replay(t, d, c, variant{name: "refused"}, nil)
				checkRefused(t, c, out)
			})
		}
	}
}

func checkRefused(t *testing.T, c replayCase, out outcome) {
	r := c.Refusal
	if out.Status != r.Status {
		t.Errorf("status %d, want the gateway's %d (%s); body %.300s", out.Status, r.Status, r.Rule, out.Body)
	}
	if ct := out.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("content-type %q, want application/json", ct)
	}
	if err := checkErrorShape(c.Provider, r.Status, r, out.Body); err != nil {
		t.Errorf("%s: %v", r.Rule, err)
	}
	if out.Header.Get("X-Tollgate-Request-Id") == "" {
		t.Error("no x-tollgate-request-id")
	}
	if len(out.Received) != 0 {
		t.Errorf("%d requests reached the provider; a refusal sends none", len(out.Received))
	}
	if len(out.Records) != 1 {
		t.Fatalf("%d usage records, want 1", len(out.Records))
	}
	rec := out.Records[0]
	if rec.Status != usage.StatusRejected || rec.Reason == "" || rec.HTTPStatus != r.Status || rec.Provider != c.Provider ||
		!rec.Tokens.IsZero() || rec.Estimated || rec.Credits != 0 {
		t.Errorf("record %+v; want one rejected record (http %d) without tokens or credits", rec, r.Status)
	}
	if r.BodyRule && (rec.Model != c.Model || rec.Operation != c.Op) {
		t.Errorf("record names model %q operation %q; want %q %q", rec.Model, rec.Operation, c.Model, c.Op)
	}
}

// TestLocal replays recorded model listings: the gateway answers them from
// its catalog and calls no provider.
func TestLocal(t *testing.T) {
	f := getFixture(t)
	for _, c := range casesOf(t, handleLocal) {
		t.Run(c.It.Name(), func(t *testing.T) {
			out := replay(t, frontDoors[0], c, variant{name: "local"}, nil)
			want := http.StatusOK
			if c.It.Method != http.MethodGet {
				want = http.StatusMethodNotAllowed
			} else if _, ok := f.catalog.Lookup(catalog.Provider(c.Provider), c.Model); c.Model != "" && !ok {
				want = http.StatusNotFound
			}
			if out.Status != want || len(out.Received) != 0 {
				t.Errorf("status %d, %d upstream requests; want %d from the gateway and none (body %.300s)",
					out.Status, len(out.Received), want, out.Body)
			}
			if len(out.Records) != 1 || !out.Records[0].Tokens.IsZero() || out.Records[0].Credits != 0 {
				t.Errorf("records %+v; want one without tokens", out.Records)
			}
		})
	}
}

// TestCatalogCoversRecordings checks the overlay file: every model the
// shipped recordings request that the default catalog lacks is in it (so
// its price is chosen, not derived), and it adds nothing no recording
// requests or names as the model that answered.
func TestCatalogCoversRecordings(t *testing.T) {
	def, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	f := getFixture(t)
	shipped := map[string]bool{}
	for _, s := range shippedCassettes(t) {
		shipped[s.File] = true
	}
	recorded := map[string]bool{}
	for _, c := range allCases(t) {
		if c.Model == "" || c.Handling == handleSkip || c.Handling == handleLocal {
			continue
		}
		key := c.Provider + "/" + c.Model
		recorded[key] = true
		if served := servedModel(c); served != "" && c.Handling == handleReplay {
			recorded[c.Provider+"/"+served] = true // priced as the model that answered
		}
		if _, ok := f.catalog.Lookup(catalog.Provider(c.Provider), c.Model); !ok && c.Handling == handleReplay {
			t.Errorf("%s: model %s not in the test catalog", c.It.Name(), key)
		}
		if _, ok := f.base.Lookup(catalog.Provider(c.Provider), c.Model); !ok && shipped[c.It.File] && !f.unknown[key] {
			t.Errorf("%s: model %s is in neither the default catalog nor %s", c.It.Name(), key, overlayFile())
		}
		// A name the provider said does not exist, and the overlay does
		// not serve, is the gateway's own unknown model.
		if f.unknown[key] && c.Handling != handleRefuse {
			t.Errorf("%s: model %s, which the provider said does not exist, is %s; want refused by the gateway as unknown",
				c.It.Name(), key, c.Handling)
		}
	}
	for _, m := range f.base.All() {
		key := string(m.Provider) + "/" + m.Name
		if _, ok := def.Lookup(m.Provider, m.Name); !ok && !recorded[key] {
			t.Errorf("the overlay adds %s, which no recording names", key)
		}
	}
	if len(f.derived) > 0 {
		t.Logf("models only unlisted recordings name, priced by rule: %v", f.derived)
	}
	if len(f.unknown) > 0 {
		t.Logf("models the provider said do not exist, left unknown: %v", slices.Sorted(maps.Keys(f.unknown)))
	}
}

// ---------------------------------------------------------------------------
// Usage as the recording states it, read independently of the gateway.

// recordedUsage reads the usage in c's recorded response and maps it onto
// the gateway's disjoint kinds. ok is false when the response has none (an
// error, a stream recorded without include_usage, Gemini embeddings). A
// token count (Anthropic count_tokens, Gemini countTokens) is not billed:
// its usage is none at all, whatever the response counts.
func recordedUsage(c replayCase) (u usage.Tokens, ok bool, err error) {
	it := c.It
	if it.Status/100 != 2 {
		return u, false, nil
	}
	if c.Unbilled {
		return u, true, nil
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
		// Top-level counters overwrite (message_delta is cumulative); the
		// usage.iterations of the last usage object that has them add
		// what the top level leaves out.
		var extra usage.Tokens
		read := func(raw json.RawMessage) (bool, error) {
			found, err := anthropicOverwrite(&u, raw)
			if err != nil || !found {
				return found, err
			}
			x, has, err := anthropicIterations(raw)
			if has {
				extra = x
			}
			return found, err
		}
		if !sse {
			var doc struct {
				Usage json.RawMessage `json:"usage"`
			}
			if err := json.Unmarshal(it.Body, &doc); err != nil {
				return u, false, err
			}
			found, err := read(doc.Usage)
			return u.Plus(extra), found, err
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
				if _, err := read(e.Message.Usage); err != nil {
					return u, false, err
				}
			case "message_delta":
				found, err := read(e.Usage)
				if err != nil {
					return u, false, err
				}
				ok = ok || found
			}
		}
		return u.Plus(extra), ok, nil
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
// usage object: cached reads and cache writes are parts of the prompt,
// reasoning of the output.
func openAIUsage(raw json.RawMessage) (usage.Tokens, bool, error) {
	var u usage.Tokens
	if len(raw) == 0 || string(raw) == "null" {
		return u, false, nil
	}
	type promptDetails struct {
		Cached  int64 `json:"cached_tokens"`
		Written int64 `json:"cache_write_tokens"`
	}
	type outputDetails struct {
		Reasoning int64 `json:"reasoning_tokens"`
	}
	var v struct {
		Prompt        *int64        `json:"prompt_tokens"`
		Completion    *int64        `json:"completion_tokens"`
		Input         *int64        `json:"input_tokens"`
		Output        *int64        `json:"output_tokens"`
		PromptDet     promptDetails `json:"prompt_tokens_details"`
		InputDet      promptDetails `json:"input_tokens_details"`
		CompletionDet outputDetails `json:"completion_tokens_details"`
		OutputDet     outputDetails `json:"output_tokens_details"`
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
	written := v.PromptDet.Written + v.InputDet.Written
	return usage.Tokens{
		Input: prompt - cached - written, CachedInput: cached, CacheWrite: written, Output: out,
		Reasoning: v.CompletionDet.Reasoning + v.OutputDet.Reasoning,
	}, true, nil
}

// anthropicOverwrite sets the counters present (and not null) in raw.
// One-hour cache writes are a part of the writes, thinking a part of the
// output.
func anthropicOverwrite(u *usage.Tokens, raw json.RawMessage) (bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return false, nil
	}
	var v struct {
		Input       *int64 `json:"input_tokens"`
		CacheRead   *int64 `json:"cache_read_input_tokens"`
		CacheCreate *int64 `json:"cache_creation_input_tokens"`
		CacheDet    *struct {
			Hour *int64 `json:"ephemeral_1h_input_tokens"`
		} `json:"cache_creation"`
		Output     *int64 `json:"output_tokens"`
		OutDetails *struct {
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
	if v.CacheDet != nil {
		set(&u.CacheWrite1h, v.CacheDet.Hour)
	}
	set(&u.Output, v.Output)
	if v.OutDetails != nil {
		set(&u.Reasoning, v.OutDetails.Thinking)
	}
	u.CacheWrite1h = min(u.CacheWrite1h, u.CacheWrite)
	u.Reasoning = min(u.Reasoning, u.Output)
	return found, nil
}

// anthropicIterations sums the usage.iterations entries the top-level
// counters leave out: "compaction" (the summarising call of context
// compaction) and "advisor_message" (the advisor tool's model). "message"
// and "fallback_message" entries are already in the top-level numbers.
// has is false when raw has no iterations.
func anthropicIterations(raw json.RawMessage) (x usage.Tokens, has bool, err error) {
	var v struct {
		Iterations []struct {
			Type        string `json:"type"`
			Input       int64  `json:"input_tokens"`
			CacheRead   int64  `json:"cache_read_input_tokens"`
			CacheCreate int64  `json:"cache_creation_input_tokens"`
			Output      int64  `json:"output_tokens"`
		} `json:"iterations"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return x, false, err
	}
	for _, e := range v.Iterations {
		switch e.Type {
		case "compaction", "advisor_message":
			x.Input += e.Input
			x.CachedInput += e.CacheRead
			x.CacheWrite += e.CacheCreate
			x.Output += e.Output
		}
	}
	return x, v.Iterations != nil, nil
}

// servedModel is the model the recorded response says served the request
// ("" when it names none): Anthropic's and OpenAI's model, Gemini's
// modelVersion, from the document or the first stream event naming one.
func servedModel(c replayCase) string {
	if c.It.Status/100 != 2 {
		return ""
	}
	var docs [][]byte
	if c.It.IsSSE() || bytes.HasPrefix(bytes.TrimLeft(c.It.Body, " \r\n"), []byte("data:")) ||
		bytes.HasPrefix(bytes.TrimLeft(c.It.Body, " \r\n"), []byte("event:")) {
		for _, ev := range parseSSE(c.It.Body) {
			docs = append(docs, ev.data)
		}
	} else if err := json.Unmarshal(c.It.Body, &[]json.RawMessage{}); err == nil {
		var arr []json.RawMessage
		_ = json.Unmarshal(c.It.Body, &arr)
		for _, d := range arr {
			docs = append(docs, d)
		}
	} else {
		docs = [][]byte{c.It.Body}
	}
	for _, d := range docs {
		var e struct {
			Model        string `json:"model"`
			ModelVersion string `json:"modelVersion"`
			Message      struct {
				Model string `json:"model"`
			} `json:"message"`
			Response struct {
				Model string `json:"model"`
			} `json:"response"`
		}
		if json.Unmarshal(d, &e) != nil {
			continue
		}
		for _, m := range []string{e.Model, e.ModelVersion, e.Message.Model, e.Response.Model} {
			if m != "" {
				return m
			}
		}
	}
	return ""
}

// streamFailed reports whether a recorded 2xx response carries the
// provider's own error (Anthropic's error event, an OpenAI or Gemini error
// chunk, Responses' response.failed or error event): the gateway records
// it as an error with the usage it read.
func streamFailed(c replayCase) bool {
	if c.It.Status/100 != 2 {
		return false
	}
	ct, _ := c.It.ServedContentType()
	if !strings.HasPrefix(strings.ToLower(ct), "text/event-stream") {
		return false
	}
	for _, ev := range parseSSE(c.It.Body) {
		var e struct {
			Type  string          `json:"type"`
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(ev.data, &e) != nil {
			continue
		}
		if ev.name == "error" || e.Type == "error" || e.Type == "response.failed" ||
			len(e.Error) > 0 && string(e.Error) != "null" && c.Op != "responses" {
			return true
		}
	}
	return false
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
