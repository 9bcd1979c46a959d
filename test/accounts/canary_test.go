package accounts_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"google.golang.org/genai"

	"github.com/tollgate-dev/tollgate/pkg/envvars"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// newCanary returns a string that cannot occur by chance: 24 letters
// drawn from an alphabet with no hex digit (request ids and hashes are hex),
// so that any window of it found anywhere was copied from a request.
func newCanary(t *testing.T) string {
	t.Helper()
	const alphabet = "ghjkmnpqrstuvwxyz"
	b := make([]byte, 24)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			t.Fatal(err)
		}
		b[i] = alphabet[n.Int64()]
	}
	return string(b)
}

// canaryWindow is the length of the canary's pieces that are searched for
// too: a stream carries a reply in pieces, and a leak of a piece is a leak.
const canaryWindow = 12

// leaks reports where in sources the canary, or any canaryWindow-long piece
// of it, occurs.
func leaks(canary string, sources map[string][]byte) []string {
	var found []string
	for name, b := range sources {
		for i := 0; i+canaryWindow <= len(canary); i++ {
			if j := bytes.Index(b, []byte(canary[i:i+canaryWindow])); j >= 0 {
				lo, hi := max(0, j-60), min(len(b), j+canaryWindow+60)
				found = append(found, fmt.Sprintf("%s at byte %d: %q", name, j, b[lo:hi]))
				break
			}
		}
	}
	return found
}

// dirFiles reads every regular file under dir, keyed by its path relative
// to dir. A file that disappears while the gateway runs (a drained spool
// segment) is skipped.
func dirFiles(t *testing.T, dir, label string, into map[string][]byte) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		into[label+" "+rel] = b
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return b
}

// canaryCalls sends the canary through the three SDKs as prompt text
// (user and system) and as completions (non-streamed and streamed), plus
// requests the gateway or the provider refuses with the canary in their
// body. It returns how many requests reached the gateway (each yields one
// usage record).
func canaryCalls(t *testing.T, w workload, canary string) int {
	t.Helper()
	// The mock answers with the reply directive's text: the completion
	// carries the canary back through the gateway's meters.
	reply := "the canary says " + canary + " and nothing else"
	directive := "[[mock reply=" + reply + "]]"
	prompt := "remember " + canary + " " + directive
	streamed := "remember " + canary + " [[mock chunks=5]] " + directive
	mustHave := func(what, got string) {
		t.Helper()
		if !strings.Contains(got, canary) {
			t.Errorf("%s: the completion does not carry the canary (got %q), so the test would prove nothing", what, got)
		}
	}
	n := 0

	ant := w.anthropic(aoption.WithMaxRetries(0))
	msg, err := ant.Messages.New(callCtx(t), anthropic.MessageNewParams{
		Model: "claude-sonnet-4-5", MaxTokens: 64,
		System:   []anthropic.TextBlockParam{{Text: "system prompt " + canary}},
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
	})
	n++
	if err != nil {
		t.Fatalf("anthropic messages: %v", err)
	}
	mustHave("anthropic messages", msg.Content[0].Text)

	st := ant.Messages.NewStreaming(callCtx(t), anthropic.MessageNewParams{
		Model: "claude-sonnet-4-5", MaxTokens: 64,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(streamed))},
	})
	n++
	acc := anthropic.Message{}
	for st.Next() {
		if err := acc.Accumulate(st.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Err(); err != nil {
		t.Fatalf("anthropic stream: %v", err)
	}
	mustHave("anthropic stream", acc.Content[0].Text)

	// Refused by the gateway (no such model) and by the provider (500):
	// error paths must not log the body either.
	_, err = ant.Messages.New(callCtx(t), anthropic.MessageNewParams{
		Model: "claude-nonexistent-" + canary[:4], MaxTokens: 64,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
	})
	n++
	var aerr *anthropic.Error
	if !errors.As(err, &aerr) || aerr.StatusCode != http.StatusNotFound {
		t.Errorf("unknown model: %v, want a 404", err)
	}
	_, err = ant.Messages.New(callCtx(t), anthropic.MessageNewParams{
		Model: "claude-sonnet-4-5", MaxTokens: 64,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("fail " + canary + " [[mock error=500]]"))},
	})
	n++
	if !errors.As(err, &aerr) || aerr.StatusCode != http.StatusInternalServerError {
		t.Errorf("upstream error: %v, want a 500", err)
	}

	oai := w.openai(ooption.WithMaxRetries(0))
	chat, err := oai.Chat.Completions.New(callCtx(t), openai.ChatCompletionNewParams{
		Model: "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("system prompt " + canary), openai.UserMessage(prompt),
		},
	})
	n++
	if err != nil {
		t.Fatalf("openai chat: %v", err)
	}
	mustHave("openai chat", chat.Choices[0].Message.Content)

	cst := oai.Chat.Completions.NewStreaming(callCtx(t), openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(streamed)},
	})
	n++
	cacc := openai.ChatCompletionAccumulator{}
	for cst.Next() {
		cacc.AddChunk(cst.Current())
	}
	if err := cst.Err(); err != nil {
		t.Fatalf("openai chat stream: %v", err)
	}
	mustHave("openai chat stream", cacc.Choices[0].Message.Content)

	rst := oai.Responses.NewStreaming(callCtx(t), responses.ResponseNewParams{
		Model:        "gpt-4o-mini",
		Instructions: openai.String("instructions " + canary),
		Input:        responses.ResponseNewParamsInputUnion{OfString: openai.String(streamed)},
	})
	n++
	rtext := ""
	for rst.Next() {
		if ev := rst.Current(); ev.Type == "response.output_text.delta" {
			rtext += ev.Delta
		}
	}
	if err := rst.Err(); err != nil {
		t.Fatalf("openai responses stream: %v", err)
	}
	mustHave("openai responses stream", rtext)

	// A stream the provider breaks midway: the gateway settles what it
	// counted, and must not log the text it saw.
	mst := oai.Chat.Completions.NewStreaming(callCtx(t), openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(streamed + " [[mock midstream_error]]")},
	})
	n++
	for mst.Next() {
	}
	if mst.Err() == nil {
		t.Errorf("a stream broken midway ended without an error")
	}

	gem := w.gemini(t)
	gr, err := gem.Models.GenerateContent(callCtx(t), "gemini-2.5-flash", genai.Text(prompt),
		&genai.GenerateContentConfig{SystemInstruction: genai.NewContentFromText("system "+canary, genai.RoleUser)})
	n++
	if err != nil {
		t.Fatalf("gemini generateContent: %v", err)
	}
	mustHave("gemini generateContent", gr.Text())
	gtext := ""
	for ch, err := range gem.Models.GenerateContentStream(callCtx(t), "gemini-2.5-flash", genai.Text(streamed), nil) {
		if err != nil {
			t.Fatalf("gemini stream: %v", err)
		}
		gtext += ch.Text()
	}
	n++
	mustHave("gemini stream", gtext)

	// A body that is not JSON, sent as a client with a broken serializer
	// would: refused with 400, and its text must not be echoed into logs.
	req, err := http.NewRequest(http.MethodPost, w[envvars.AnthropicBaseURL]+"/v1/messages",
		strings.NewReader(`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"`+canary+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-api-key", w[envvars.AnthropicAPIKey])
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	n++
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a broken JSON body: %s, want 400", resp.Status)
	}
	return n
}

// TestCanaryDev sends a unique canary in prompts and completions through
// `tollgate dev` with debug logging, then looks for it in every file of the
// data dir (read while the gateway runs, so the WAL and spool are there,
// and again after it stopped), the gateway's stdout and stderr, the
// Prometheus metrics and every `tollgate usage` output.
func TestCanaryDev(t *testing.T) {
	t.Parallel()
	canary := newCanary(t)
	dev := harness.StartDev(t, "--mock", "--log-level", "debug")
	n := canaryCalls(t, newWorkload(dev.BaseURL, dev.Token), canary)

	// Positive control: the canary really went through the gateway to the
	// provider, in the requests the mock received.
	reached := 0
	for _, s := range dev.Served(t) {
		if bytes.Contains(s.Body, []byte(canary)) {
			reached++
		}
	}
	if reached < 8 {
		t.Fatalf("the canary reached the mock in %d requests, want at least 8", reached)
	}

	recs := dev.WaitUsage(t, n)
	if len(recs) != n {
		t.Errorf("the ledger has %d records, want one per request (%d)", len(recs), n)
	}
	sources := map[string][]byte{}
	dirFiles(t, dev.DataDir, "data dir (running)", sources)
	metrics := httpGet(t, dev.BaseURL+"/_tollgate/metrics")
	if !bytes.Contains(metrics, []byte("tollgate_tokens_total")) {
		t.Errorf("the metrics output has no tollgate_tokens_total; is it the right endpoint?\n%s", metrics)
	}
	sources["metrics"] = metrics
	for _, args := range usageViews("dev") {
		sources["tollgate "+strings.Join(args, " ")] = harness.Run(t, append(args, "--data-dir", dev.DataDir)...)
	}

	dev.Stop(t)
	dirFiles(t, dev.DataDir, "data dir (stopped)", sources)
	if _, ok := sources["data dir (stopped) usage.db"]; !ok {
		t.Fatalf("no usage.db in the data dir; files: %v", keys(sources))
	}
	stderr := dev.Stderr()
	if !strings.Contains(stderr, "request_id=") {
		t.Errorf("the gateway logged no request lines at debug level; is this its log?\n%s", stderr)
	}
	sources["gateway stderr"] = []byte(stderr)
	sources["gateway stdout"] = []byte(dev.Stdout())
	for _, l := range leaks(canary, sources) {
		t.Errorf("the canary leaked: %s", l)
	}
}

// usageViews are the `tollgate usage` invocations whose output must hold
// no request text: the summary as a table and as JSON, by model and by
// hour, and the records.
func usageViews(account string) [][]string {
	return [][]string{
		{"usage", "--account", account},
		{"usage", "--account", account, "--json"},
		{"usage", "--account", account, "--by", "model", "--json"},
		{"usage", "--account", account, "--by", "hour"},
		{"usage", "--records"},
		{"usage", "--records", "--json"},
	}
}

func keys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestLeaks checks the search itself: the whole canary, a piece of it cut
// by a stream, or nothing.
func TestLeaks(t *testing.T) {
	canary := newCanary(t)
	for _, tc := range []struct {
		name string
		text string
		want int
	}{
		{"whole", "prompt: " + canary, 1},
		{"streamed piece", `{"delta":"` + canary[5:5+canaryWindow] + `"}`, 1},
		{"pieces too short", canary[:canaryWindow-1] + " " + canary[canaryWindow-1:2*canaryWindow-2], 0},
		{"another canary", newCanary(t), 0},
	} {
		if got := len(leaks(canary, map[string][]byte{tc.name: []byte(tc.text)})); got != tc.want {
			t.Errorf("%s: %d leaks found, want %d", tc.name, got, tc.want)
		}
	}
}
