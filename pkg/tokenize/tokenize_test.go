package tokenize

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tiktoken-go/tokenizer"
)

const limit200k = 200_000

// newCounter returns a shared Counter; building the vocabulary once keeps the
// tests fast.
var newCounter = sync.OnceValues(NewCounter)

func counter(t testing.TB) *Counter {
	t.Helper()
	c, err := newCounter()
	if err != nil {
		t.Fatalf("NewCounter: %v", err)
	}
	return c
}

// prose returns about n bytes of deterministic English-like text: sentences
// of common words with punctuation, numbers and paragraph breaks.
func prose(n int) string {
	words := strings.Fields(`the of and to in is was that for it with as his on be at by had
		are but from or have an they which one you were her all she there would their we him been has
		when who will more no if out so said what up its about into than them can only other new some
		could time these two may then do first any my now such like our over man me even most made after
		also did many before must through back years where much your way well down should because each
		just those people how too little state good very make world still own see men work long get here
		between both life being under never day same another know while last might us great old year off
		come since against go came right used take three gateway tokenizer request provider budget model
		streaming latency kubernetes container cluster account project billing credit limit minute`)
	r := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	b.Grow(n + 64)
	for b.Len() < n {
		sentence := 5 + r.IntN(15)
		for i := range sentence {
			w := words[r.IntN(len(words))]
			if i == 0 {
				w = strings.ToUpper(w[:1]) + w[1:]
			}
			b.WriteString(w)
			switch {
			case i == sentence-1:
				b.WriteString(". ")
			case r.IntN(12) == 0:
				b.WriteString(", ")
			case r.IntN(40) == 0:
				b.WriteString(" 1,")
				b.WriteString(string(rune('0' + r.IntN(10))))
				b.WriteString("42 ")
			default:
				b.WriteByte(' ')
			}
		}
		if r.IntN(6) == 0 {
			b.WriteString("\n\n")
		}
	}
	return b.String()
}

// chatBody returns an OpenAI chat request with the given user contents.
func chatBody(t testing.TB, contents ...any) []byte {
	t.Helper()
	var msgs []any
	for _, c := range contents {
		msgs = append(msgs, map[string]any{"role": "user", "content": c})
	}
	b, err := json.Marshal(map[string]any{"model": "gpt-4o", "messages": msgs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// referenceCount counts a media-free body independently of the walker:
// encoding/json decodes it and the codec counts every key and string whole,
// without chunking.
func referenceCount(t testing.TB, c *Counter, body []byte) int64 {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	var total int64
	var visit func(any)
	count := func(s string) {
		n, err := mustCodec(t, c).Count(s)
		if err != nil {
			t.Fatal(err)
		}
		total += int64(n)
	}
	visit = func(v any) {
		switch v := v.(type) {
		case string:
			count(v)
		case []any:
			for _, e := range v {
				visit(e)
			}
		case map[string]any:
			for k, e := range v {
				count(k)
				visit(e)
			}
		}
	}
	visit(v)
	return total
}

func TestNewCounterOffline(t *testing.T) {
	// The vocabulary is compiled in; this only fails if that ever changes to
	// a download. Run under `unshare -rn` to check without a network.
	c := counter(t)
	if got := c.CountText("hello world"); got != 2 {
		t.Errorf(`CountText("hello world") = %d, want 2`, got)
	}
}

func TestCountText(t *testing.T) {
	c := counter(t)
	long := prose(200 << 10)
	cjk := strings.Repeat("日本語のテキストを数える。", 5000) // no spaces: cut at rune boundaries
	tests := []struct {
		name string
		text string
	}{
		{"empty", ""},
		{"short", "The quick brown fox jumps over the lazy dog."},
		{"long prose, chunked at spaces", long},
		{"CJK, chunked at runes", cjk},
		{"invalid UTF-8", "abc\xff\xfe def"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := mustCodec(t, c).Count(tt.text)
			if err != nil {
				t.Fatal(err)
			}
			got := c.CountText(tt.text)
			// Cuts at a space are exact; a cut inside a run of CJK may move a
			// token or two.
			slack := int64(0)
			if tt.name == "CJK, chunked at runes" {
				slack = 2 * int64(len(tt.text)/chunkSize+1)
			}
			if d := got - int64(want); d < -slack || d > slack {
				t.Errorf("CountText = %d, unchunked count = %d (slack %d)", got, want, slack)
			}
		})
	}
}

func TestInputTokensText(t *testing.T) {
	c := counter(t)
	tests := []struct {
		name     string
		body     []byte
		limit    int64
		wantOver bool
	}{
		// English runs at about 4-5 bytes per token: 1.2 MB of prose is
		// well over 200k tokens, 400 kB (over 200k bytes, so it must be
		// tokenized) well under.
		{"1.2 MB of prose is over 200k", chatBody(t, prose(1_200_000)), limit200k, true},
		{"400 kB of prose is under 200k", chatBody(t, prose(400_000)), limit200k, false},
		{"escaped text", chatBody(t, strings.Repeat("line \"quoted\" \\ é 日本\n", 20_000)), limit200k, false},
		{"small limit", chatBody(t, prose(10_000)), 100, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.InputTokens(tt.body, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if over := got > tt.limit; over != tt.wantOver {
				t.Errorf("InputTokens = %d, over limit %d = %v, want %v", got, tt.limit, over, tt.wantOver)
			}
			// The verdict must agree with a full, independent count.
			full := referenceCount(t, c, tt.body)
			if (full > tt.limit) != tt.wantOver {
				t.Errorf("reference count %d disagrees with want over %v: fix the test", full, tt.wantOver)
			}
			// Within the limit, the result bounds the count from above.
			if got <= tt.limit && got < full {
				t.Errorf("InputTokens = %d, below the reference count %d", got, full)
			}
		})
	}
}

func TestInputTokensExactWhenTokenized(t *testing.T) {
	c := counter(t)
	body := chatBody(t, prose(300_000), "second message with \"escapes\"\n\ttoo")
	want := referenceCount(t, c, body)
	// A limit just above the count forces tokenizing all of it: the text's
	// bytes are far above the limit until the very end.
	got, err := c.InputTokens(body, want)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("InputTokens(limit=%d) = %d, want the exact count %d", want, got, want)
	}
	over, err := c.InputTokens(body, want-1)
	if err != nil {
		t.Fatal(err)
	}
	if over <= want-1 {
		t.Errorf("InputTokens(limit=%d) = %d, want over the limit", want-1, over)
	}
}

func TestInputTokensStopsWhenTheRestFits(t *testing.T) {
	// 250 kB of prose is about 58k tokens: once a few chunks are counted, the
	// bytes left cannot reach the limit even at one token each.
	c := counter(t)
	body := chatBody(t, prose(250_000))
	exact := referenceCount(t, c, body)
	got, err := c.InputTokens(body, limit200k)
	if err != nil {
		t.Fatal(err)
	}
	if got > limit200k || got < exact {
		t.Errorf("InputTokens = %d, want an upper bound on %d within %d", got, exact, limit200k)
	}
	if got == exact {
		t.Errorf("InputTokens = %d, the exact count: it tokenized text it did not need to", got)
	}
}

func TestInputTokensSmallBodyNotTokenized(t *testing.T) {
	// A Counter without a codec panics if it tokenizes anything.
	var c Counter
	body := chatBody(t, prose(150_000))
	got, err := c.InputTokens(body, limit200k)
	if err != nil {
		t.Fatal(err)
	}
	s, err := scanBody(body)
	if err != nil {
		t.Fatal(err)
	}
	if got != s.textBytes || got > limit200k {
		t.Errorf("InputTokens = %d, want the text's %d bytes as the bound", got, s.textBytes)
	}
}

func TestInputTokensEarlyStop(t *testing.T) {
	c := counter(t)
	body := chatBody(t, prose(2<<20)) // about 490k tokens
	tests := []int64{1, 1000, 50_000, limit200k}
	for _, limit := range tests {
		got, err := c.InputTokens(body, limit)
		if err != nil {
			t.Fatal(err)
		}
		// Counting stops after the chunk that crossed the limit; a chunk of
		// chunkSize bytes has at most chunkSize tokens.
		if got <= limit || got > limit+chunkSize {
			t.Errorf("InputTokens(limit=%d) = %d, want in (%d, %d]", limit, got, limit, limit+chunkSize)
		}
	}
}

func b64(n int) string {
	raw := make([]byte, n)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	return base64.StdEncoding.EncodeToString(raw)
}

func TestInputTokensMedia(t *testing.T) {
	c := counter(t)
	img := b64(10 << 20 * 3 / 4) // 10 MiB of base64
	dataURL := "data:image/png;base64," + img
	tests := []struct {
		name string
		body string
	}{
		{"OpenAI chat image_url data URL", `{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"` + dataURL + `","detail":"high"}}]}]}`},
		{"OpenAI responses input_image", `{"model":"gpt-4o","input":[{"role":"user","content":[{"type":"input_text","text":"What is this?"},{"type":"input_image","image_url":"` + dataURL + `"}]}]}`},
		{"OpenAI input_audio", `{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"` + img + `","format":"wav"}}]}]}`},
		{"OpenAI file_data", `{"messages":[{"role":"user","content":[{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,` + img + `"}}]}]}`},
		{"Anthropic base64 source", `{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + img + `"}}]}]}`},
		{"Anthropic base64 source, data before type (Go SDK)", `{"max_tokens":10,"messages":[{"content":[{"source":{"data":"` + img + `","media_type":"image/png","type":"base64"},"type":"image"}],"role":"user"}]}`},
		{"Gemini inlineData", `{"contents":[{"role":"user","parts":[{"text":"What is this?"},{"inlineData":{"mimeType":"image/png","data":"` + img + `"}}]}]}`},
		{"Gemini inline_data (REST)", `{"contents":[{"parts":[{"inline_data":{"mime_type":"image/png","data":"` + img + `"}}]}]}`},
		{"data URL in an unknown field", `{"anything":{"blob":"` + dataURL + `"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.InputTokens([]byte(tt.body), limit200k)
			if err != nil {
				t.Fatal(err)
			}
			if got < MediaTokens || got > MediaTokens+200 {
				t.Errorf("InputTokens = %d, want %d for the image plus a little text", got, MediaTokens)
			}
			if est := c.Estimate([]byte(tt.body)); est < MediaTokens || est > MediaTokens+100 {
				t.Errorf("Estimate = %d, want about %d", est, MediaTokens)
			}
		})
	}
}

// TestInputTokensNumbers: token-ID input (OpenAI embeddings) and numbers in
// tool payloads count one token each, so a body of numbers cannot pass the
// limit uncounted.
func TestInputTokensNumbers(t *testing.T) {
	c := counter(t)
	ids := func(n int) string {
		b := make([]byte, 0, n*7)
		for i := range n {
			if i > 0 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, "%d", 100000+i%90000)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name  string
		body  string
		over  bool
		exact int64 // when not over: the count, 0 to skip
	}{
		{"embeddings, token arrays over the limit", `{"model":"m","input":[[` + ids(120_000) + `],[` + ids(90_000) + `]]}`, true, 0},
		{"embeddings, token arrays within", `{"model":"m","input":[` + ids(1000) + `]}`, false, 1000 + 11}, // 11 bytes of text, not tokenized under the limit
		{"long numbers in a tool's arguments over the limit", `{"model":"m","messages":[{"role":"assistant","content":[{"type":"tool_use","id":"x","name":"f","input":{"n":[` + longNumbers(700, 1000) + `]}}]}]}`, true, 0},
		{"long numbers within", `{"model":"m","input":[` + longNumbers(10, 30) + `]}`, false, 10*9 + 11},
		{"Gemini functionResponse numbers over the limit", `{"contents":[{"parts":[{"functionResponse":{"name":"f","response":{"values":[` + ids(210_000) + `]}}}]}]}`, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.InputTokens([]byte(tc.body), limit200k)
			if err != nil {
				t.Fatal(err)
			}
			if tc.over != (got > limit200k) {
				t.Fatalf("InputTokens = %d, over the limit %v, want %v", got, got > limit200k, tc.over)
			}
			if tc.exact != 0 && got != tc.exact {
				t.Errorf("InputTokens = %d, want %d", got, tc.exact)
			}
			if est := c.Estimate([]byte(tc.body)); tc.over && est <= limit200k {
				t.Errorf("Estimate = %d, want above the limit like the count", est)
			}
		})
	}
}

// longNumbers returns n comma-separated numbers of the given digits.
func longNumbers(n, digits int) string {
	num := "1" + strings.Repeat("234567890", digits/9+1)[:digits-1]
	return strings.TrimSuffix(strings.Repeat(num+",", n), ",")
}

func TestInputTokensManyImagesTokenizes(t *testing.T) {
	// A small body can still be over the limit by its images alone.
	c := counter(t)
	var parts []any
	for range 130 {
		parts = append(parts, map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://example.com/a.png"}})
	}
	body := chatBody(t, parts)
	got, err := c.InputTokens(body, limit200k)
	if err != nil {
		t.Fatal(err)
	}
	if got <= limit200k {
		t.Errorf("InputTokens = %d for 130 images, want over %d", got, limit200k)
	}
}

func TestScanBody(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantText  string // concatenated text the walk visits
		wantMedia int64
	}{
		{"keys and strings", `{"a":"bc","d":["e",1,true,null,{"f":"g"}]}`, "abcdefg", 0},
		{"numbers are not text", `{"n":-1.5e+10,"m":0}`, "nm", 0},
		{"escapes decoded", `{"k":"a\nb\"c\\d\/e\u00e9\ud83d\ude00"}`, "ka\nb\"c\\d/eé😀", 0},
		{"lone surrogate", `["\ud800x"]`, "\uFFFDx", 0},
		{"http image_url object", `{"image_url":{"url":"https://x/a.png","detail":"low"}}`, "image_urlurldetaillow", 1},
		{"http image_url string", `{"type":"input_image","image_url":"https://x/a.png"}`, "typeinput_imageimage_url", 1},
		{"file_id", `{"type":"input_file","file_id":"file-abc"}`, "typeinput_filefile_id", 1},
		{"file_url", `{"type":"input_file","file_url":"https://x/a.pdf"}`, "typeinput_filefile_url", 1},
		{"Anthropic text source is text", `{"source":{"type":"text","media_type":"text/plain","data":"Hello"}}`, "sourcetypetextmedia_typetext/plaindataHello", 0},
		{"Anthropic text source, data first", `{"source":{"data":"Hello","type":"text"}}`, "sourcedatatypetextHello", 0},
		{"Anthropic url source", `{"source":{"type":"url","url":"https://x/a.pdf"}}`, "sourcetypeurlurl", 1},
		{"Anthropic file source", `{"source":{"type":"file","file_id":"file_1"}}`, "sourcetypefilefile_id", 1},
		{"Anthropic base64 source", `{"source":{"type":"base64","data":"QUJD"}}`, "sourcetypebase64data", 1},
		{"Gemini fileData", `{"fileData":{"mimeType":"video/mp4","fileUri":"https://x/v"}}`, "fileDatamimeTypevideo/mp4fileUri", 1},
		{"Gemini file_data", `{"file_data":{"mime_type":"video/mp4","file_uri":"gs://b/v"}}`, "file_datamime_typevideo/mp4file_uri", 1},
		{"data URL anywhere", `["data:image/jpeg;base64,QUJD"]`, "", 1},
		{"escaped data URL", `["data:image\/jpeg;base64,QUJD"]`, "", 1},
		{"non-base64 data URL is text", `["data:text/plain,hello"]`, "data:text/plain,hello", 0},
		{"data key elsewhere is text", `{"data":"plain"}`, "dataplain", 0},
		{"two images", `[{"image_url":{"url":"a"}},{"inlineData":{"data":"QQ=="}}]`, "image_urlurlinlineDatadata", 2},
		{"escaped type is not base64: counted", `{"source":{"type":"b\u0061se64","data":"QUJD"}}`, "sourcetypebase64dataQUJD", 0},
		{"escaped key is not known: counted", `{"inlineD\u0061ta":{"data":"QQ=="}}`, "inlineDatadataQQ==", 0},
		{"empty containers", ` { "a" : [ ] , "b" : { } } `, "ab", 0},
		// Opaque blobs the provider hands out and takes back: not text.
		{"OpenAI encrypted reasoning", `{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAAAABo"}`, "typereasoningidrs_1summaryencrypted_content", 0},
		{"Anthropic thinking signature", `{"signature":"EqQBCgIYAh","thinking":"Let me see.","type":"thinking"}`, "signaturethinkingLet me see.typethinking", 0},
		{"Anthropic redacted thinking", `{"data":"EmwKAhgB","type":"redacted_thinking"}`, "datatyperedacted_thinking", 0},
		{"Gemini thought signature", `{"parts":[{"text":"Hi","thoughtSignature":"CiQB"},{"thought_signature":"CiQB"}]}`, "partstextHithoughtSignaturethought_signature", 0},
		{"a tool argument called signature is text", `{"type":"tool_use","input":{"signature":"Yours truly"}}`, "typetool_useinputsignatureYours truly", 0},
		{"signature in a text block is text", `{"type":"text","signature":"x"}`, "typetextsignaturex", 0},
		{"escaped thinking type: signature counted", `{"type":"thinkin\u0067","signature":"x"}`, "typethinkingsignaturex", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var text []byte
			got, err := walk([]byte(tt.body), func(raw []byte, escaped bool) bool {
				text = appendUnescaped(text, raw)
				return true
			})
			if err != nil {
				t.Fatal(err)
			}
			if string(text) != tt.wantText || got.media != tt.wantMedia {
				t.Errorf("walk: text %q, media %d; want %q, %d", text, got.media, tt.wantText, tt.wantMedia)
			}
			s, err := scanBody([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if s.textBytes != int64(len(tt.wantText)) || s.media != tt.wantMedia {
				t.Errorf("scanBody = %+v, want %d text bytes, %d media", s, len(tt.wantText), tt.wantMedia)
			}
		})
	}
}

func TestWalkInvalid(t *testing.T) {
	tests := []string{
		``,
		`   `,
		`{`,
		`{"a"}`,
		`{"a":}`,
		`{"a":1,}`,
		`{a:1}`,
		`[1,]`,
		`[1 2]`,
		`"abc`,
		`"ab\`,
		`"\x"`,
		`"\u12"`,
		`"\u12g4"`,
		`tru`,
		`nul`,
		`-`,
		`{} {}`,
		`{"a":1}x`,
		`]`,
		strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
	}
	c := counter(t)
	for _, body := range tests {
		name := body
		if len(name) > 20 {
			name = name[:20] + "..."
		}
		t.Run(name, func(t *testing.T) {
			if _, err := walk([]byte(body), func([]byte, bool) bool { return true }); err == nil {
				t.Errorf("walk(%q) succeeded, want an error", body)
			}
			if _, err := c.InputTokens([]byte(body), limit200k); err == nil {
				t.Errorf("InputTokens(%q) succeeded, want an error", body)
			}
		})
	}
	deepOK := strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)
	if _, err := walk([]byte(deepOK), func([]byte, bool) bool { return true }); err != nil {
		t.Errorf("walk of %d nested arrays: %v", maxDepth, err)
	}
}

func TestWalkLinearInEscapes(t *testing.T) {
	// A long string with an escape every few bytes and its closing quote far
	// away must not be rescanned for the quote after each escape. Linear,
	// this takes milliseconds; quadratic, over a minute.
	body := []byte(`["` + strings.Repeat(`ab\n`, 1<<20) + `"]`)
	start := time.Now()
	s, err := scanBody(body)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("scanning 4 MiB took %v: not linear", d)
	}
	if want := int64(3 << 20); s.textBytes != want {
		t.Errorf("textBytes = %d, want %d", s.textBytes, want)
	}
}

func TestEstimate(t *testing.T) {
	c := counter(t)
	tests := []struct {
		name string
		body string
		want int64
	}{
		{"text", `{"abcd":"efghijkl"}`, 3},
		{"rounds up", `{"a":"b"}`, 1},
		{"escapes count once", `["\n\n\n\n"]`, 1},
		{"image", `{"image_url":{"url":"https://x"}}`, 3 + MediaTokens},
		{"numbers one each", `{"input":[[1,2,3],[40000,-5.5e3]],"max_tokens":9}`, 4 + 6}, // 15 bytes of keys, 6 numbers
		{"invalid JSON", `{"abcdefg`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Estimate([]byte(tt.body)); got != tt.want {
				t.Errorf("Estimate = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestCut(t *testing.T) {
	tests := []struct {
		name string
		text string
		max  int
		want int
	}{
		{"short", "abc", 10, 3},
		{"at a space after a word", "hello world again", 13, 11},
		{"not at a space after a space", "hello  world", 7, 5},
		{"not at a space after a newline", "hello\n world", 7, 7},
		{"rune boundary", strings.Repeat("é", 10), 5, 4},
		{"ASCII without spaces", strings.Repeat("a", 10), 5, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cut(tt.text, tt.max); got != tt.want {
				t.Errorf("cut(%q, %d) = %d, want %d", tt.text, tt.max, got, tt.want)
			}
			if got := cut([]byte(tt.text), tt.max); got != tt.want {
				t.Errorf("cut([]byte(%q), %d) = %d, want %d", tt.text, tt.max, got, tt.want)
			}
		})
	}
}

func TestCounterConcurrent(t *testing.T) {
	c := counter(t)
	body := chatBody(t, prose(250_000)) // over 200k bytes: it is tokenized
	want, err := c.InputTokens(body, limit200k)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			got, err := c.InputTokens(body, limit200k)
			if err != nil || got != want {
				t.Errorf("concurrent InputTokens = %d, %v; want %d", got, err, want)
			}
			if got := c.CountText("hello world"); got != 2 {
				t.Errorf("concurrent CountText = %d, want 2", got)
			}
		})
	}
	wg.Wait()
}

// FuzzWalk checks that the walker never panics, accepts what encoding/json
// accepts, and decodes strings as encoding/json does. (encoding/json also
// replaces invalid UTF-8 with U+FFFD; the walker passes those bytes to the
// tokenizer as they are, so such strings are only checked for consistency.)
func FuzzWalk(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, `["\u00e9\ud83d\ude00"]`, `{"source":{"data":"x","type":"text"}}`, `[1,-2.5e3,true,null]`, `"\ud800"`, `{"image_url":{"url":"data:a;base64,xx"}}`, "[\"\x96\"]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, err := walk(body, func(raw []byte, escaped bool) bool {
			got := appendUnescaped(nil, raw)
			if n := decodedLen(raw); n != int64(len(got)) {
				t.Errorf("decodedLen(%q) = %d, but it unescapes to %d bytes", raw, n, len(got))
			}
			if !escaped && string(got) != string(raw) {
				t.Errorf("unescaped string %q changed to %q", raw, got)
			}
			var want string
			if !utf8.Valid(raw) || json.Unmarshal([]byte(`"`+string(raw)+`"`), &want) != nil {
				return true // raw control characters: accepted here, refused there
			}
			if string(got) != want {
				t.Errorf("appendUnescaped(%q) = %q, encoding/json gives %q", raw, got, want)
			}
			return true
		})
		if err != nil && json.Valid(body) {
			t.Errorf("walk(%q) = %v, but it is valid JSON", body, err)
		}
	})
}

func BenchmarkInputTokens(b *testing.B) {
	c := counter(b)
	text := chatBody(b, prose(1<<20)) // 1 MiB of prose: about 240k tokens
	img := []byte(`{"messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,` + b64(10<<20*3/4) + `"}}]}]}`)
	half := chatBody(b, prose(512<<10)) // about 120k tokens
	small := chatBody(b, prose(8<<10))
	// A limit equal to the count makes InputTokens tokenize all of the text.
	full := referenceCount(b, c, text)
	benchmarks := []struct {
		name  string
		body  []byte
		limit int64
	}{
		{"1MiB-text/limit=200k", text, limit200k},
		{"1MiB-text/full-count", text, full},
		{"512KiB-text/limit=200k", half, limit200k},
		{"10MiB-image/limit=200k", img, limit200k},
		{"8KiB-text/limit=200k", small, limit200k},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			b.SetBytes(int64(len(bm.body)))
			b.ReportAllocs()
			var n int64
			for b.Loop() {
				var err error
				if n, err = c.InputTokens(bm.body, bm.limit); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n), "tokens")
		})
	}
}

func BenchmarkEstimate(b *testing.B) {
	c := counter(b)
	body := chatBody(b, prose(1<<20))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		c.Estimate(body)
	}
}

func mustCodec(t testing.TB, c *Counter) tokenizer.Codec {
	t.Helper()
	codec, err := c.codec()
	if err != nil {
		t.Fatal(err)
	}
	return codec
}

// TestNewCounterIsLazy: the vocabulary table is built on the first body that
// needs it, not when the gateway starts. It runs in a fresh process: the
// library keeps one table per process, which other tests have built.
func TestNewCounterIsLazy(t *testing.T) {
	if os.Getenv("TOKENIZE_LAZY_CHILD") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestNewCounterIsLazy$", "-test.count", "1")
		cmd.Env = append(os.Environ(), "TOKENIZE_LAZY_CHILD=1")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("fresh process: %v\n%s", err, out)
		}
		return
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	c, err := NewCounter()
	if err != nil {
		t.Fatal(err)
	}
	created := heap()
	if n := c.CountText("hello world"); n != 2 {
		t.Fatalf("CountText = %d, want 2", n)
	}
	loaded := heap()
	if created > before+1<<20 {
		t.Errorf("NewCounter grew the heap by %d bytes: it built the table up front", created-before)
	}
	if loaded < created+4<<20 {
		t.Errorf("the first count grew the heap by only %d bytes: was the table already built?", loaded-created)
	}
	runtime.KeepAlive(c)
}

// TestInputTokensClientData: the client's own JSON (tool call arguments, tool
// results, schemas) is text the model reads whatever its keys, so keys that
// name media or opaque blobs elsewhere hide nothing there from the count.
func TestInputTokensClientData(t *testing.T) {
	c := counter(t)
	text := prose(1_200_000) // over 200k tokens
	for _, tc := range []struct{ name, body string }{
		{"Gemini functionResponse thoughtSignature", `{"contents":[{"parts":[{"functionResponse":{"name":"f","response":{"thoughtSignature":"` + text + `"}}}]}]}`},
		{"Gemini functionResponse image_url", `{"contents":[{"parts":[{"functionResponse":{"name":"f","response":{"r":[{"image_url":"` + text + `"}]}}}]}]}`},
		{"Gemini functionCall args inlineData", `{"contents":[{"parts":[{"functionCall":{"name":"f","args":{"inlineData":{"data":"` + text + `"}}}}]}]}`},
		{"Gemini responseSchema", `{"contents":[],"generationConfig":{"responseSchema":{"type":"STRING","file_id":"` + text + `"}}}`},
		{"Anthropic tool_use input redacted_thinking", `{"model":"m","messages":[{"role":"assistant","content":[{"type":"tool_use","id":"x","name":"f","input":{"type":"redacted_thinking","data":"` + text + `"}}]}]}`},
		{"Anthropic tool_use input thinking signature", `{"model":"m","messages":[{"role":"assistant","content":[{"input":{"signature":"` + text + `","type":"thinking"},"type":"tool_use"}]}]}`},
		{"Anthropic tool_use input base64 source", `{"model":"m","messages":[{"role":"assistant","content":[{"type":"tool_use","input":{"source":{"type":"base64","data":"` + text + `"}}}]}]}`},
		{"Anthropic tool_use input encrypted_content", `{"model":"m","messages":[{"role":"assistant","content":[{"type":"tool_use","input":{"encrypted_content":"` + text + `"}}]}]}`},
		{"Anthropic input_schema file_id", `{"model":"m","tools":[{"name":"f","input_schema":{"type":"object","file_id":"` + text + `"}}],"messages":[]}`},
		{"OpenAI function parameters file_url", `{"model":"m","tools":[{"type":"function","function":{"name":"f","parameters":{"file_url":"` + text + `"}}}],"messages":[]}`},
		{"OpenAI json_schema schema image_url", `{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"image_url":{"url":"` + text + `"}}}},"messages":[]}`},
		{"escaped key", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","t\u0065xt":{"thoughtSignature":"` + text + `"}}]}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.InputTokens([]byte(tc.body), limit200k)
			if err != nil {
				t.Fatal(err)
			}
			if got <= limit200k {
				t.Errorf("InputTokens = %d, want over %d: the hidden text was not counted", got, limit200k)
			}
			if est := c.Estimate([]byte(tc.body)); est <= limit200k {
				t.Errorf("Estimate = %d, want over %d", est, limit200k)
			}
		})
	}
}
