// Package tokenize estimates the input tokens of a provider request body, so
// the gateway can refuse input over the 200,000-token context limit before
// calling upstream, and size TPM reservations.
//
// # What is counted
//
// The body is walked as JSON and only text is tokenized: every object key and
// every string value, except binary data and media references. Keys stand in
// for the few framing tokens per message the providers add, and in tool
// schemas they are property names the model does read. A number of up to six
// bytes counts as one token: token-ID input (OpenAI embeddings take arrays of
// them) is exactly that, and numbers in tool payloads are read by the model as
// text of at least a token each, so a body of numbers cannot pass the limit
// uncounted. A longer number counts a token per three bytes, less one (o200k
// reads digits in groups of three).
// Booleans and nulls are not counted. Skipped, and counted as [MediaTokens]
// each instead:
//
//   - any string that is a base64 data URL ("data:...;base64,...");
//   - OpenAI: image_url (a string, or the url inside an image_url object),
//     input_audio.data, file_data, file_url, file_id;
//   - Anthropic: source.data when source.type is "base64", source.url,
//     source.file_id (source.data of a "text" source is text and is counted);
//   - Gemini: inlineData.data / inline_data.data, fileData.fileUri /
//     file_data.file_uri.
//
// A 10 MiB base64 image is thus 1,600 tokens, not 2.5 million.
//
// None of these rules applies inside the client's own JSON (tool call
// arguments, tool results, JSON schemas) or under a key spelled with escapes:
// everything there is counted as text, since the model reads it so.
//
// Opaque blobs that a provider hands out and takes back are not counted at
// all: OpenAI's reasoning encrypted_content, Anthropic's thinking signature
// and redacted_thinking data, Gemini's thoughtSignature. They are not text
// the model reads, and counted as text (about 1.5 bytes a token) they would
// refuse long agent sessions for tokens that are never billed as such.
//
// # Accuracy
//
// Text is counted with OpenAI's o200k_base encoding (the GPT-4o family's).
// Anthropic and Gemini do not publish their tokenizers, so for them the count
// is an approximation. On recorded traffic (shared/testdata/recorded): for
// OpenAI the count came within 0.3% of prompt_tokens (1152 vs 1149, 1374 vs
// 1370); Anthropic reported 13% and 23% more than o200k for the same
// requests (1167 vs 1034, 1754 vs 1427), so o200k under-counts Claude input
// and a caller that must not let a Claude request through at 200k should
// compare against a lower limit (e.g. limit/1.25); Gemini reported fewer (on
// small prompts, where the JSON keys this package counts dominate). Images
// really cost between about 85 and a few thousand tokens depending on
// provider, model, size and detail; audio, video and PDFs cost more per item,
// by their length. Treat these counts as a pre-flight guard and still check
// the usage the provider reports.
//
// # Cost
//
// The tokenizer runs at single-digit megabytes per second, so [Counter.InputTokens]
// does no more than the comparison with the limit needs: it never tokenizes a
// body whose text, counted as one token per byte (a BPE token is at least one
// byte), could not exceed the limit; it stops as soon as the count exceeds
// the limit; and it stops as soon as the text not yet tokenized could not
// take it over the limit.
package tokenize

import (
	"errors"
	"fmt"
	"sync"

	"github.com/tiktoken-go/tokenizer"
)

// MediaTokens is the allowance for one image, audio clip or file, in tokens.
// 1,600 is what Anthropic charges for an image at its largest unscaled size
// (about 1.15 megapixels, width×height/750), above OpenAI's 765 for a
// high-detail GPT-4o image of 2048×2048 and Gemini's 258 per image tile.
const MediaTokens = 1600

// Chunking: text is tokenized in pieces of about chunkSize bytes so that
// counting can stop early, cut where it does not change the result (see
// cut).
const (
	chunkSize   = 16 << 10
	chunkWindow = 2 << 10 // how far back from chunkSize to look for a clean cut
)

// Counter counts tokens. It is safe for concurrent use.
type Counter struct {
	codec func() (tokenizer.Codec, error)
}

// NewCounter returns a Counter using the o200k_base encoding. The vocabulary
// is compiled into the binary (no download, no cache directory). Its table
// (about 15 MiB of heap, a few tens of milliseconds to build) is built on the
// first body that really needs tokenizing: most never do, and a gateway that
// only sees ordinary requests should not carry it.
func NewCounter() (*Counter, error) {
	return &Counter{codec: sync.OnceValues(func() (tokenizer.Codec, error) {
		codec, err := tokenizer.Get(tokenizer.O200kBase)
		if err != nil {
			return nil, fmt.Errorf("tokenize: loading o200k_base: %w", err)
		}
		return codec, nil
	})}, nil
}

// scan is the cheap pass over a body: bytes of text once unescaped, and media
// items skipped and numbers passed.
type scan struct {
	textBytes int64
	media     int64
	numbers   int64
}

func scanBody(body []byte) (scan, error) {
	var s scan
	t, err := walk(body, func(raw []byte, escaped bool) bool {
		if escaped {
			s.textBytes += decodedLen(raw)
		} else {
			s.textBytes += int64(len(raw))
		}
		return true
	})
	s.media, s.numbers = t.media, t.numbers
	return s, err
}

// InputTokens counts the input tokens of a JSON request body as described in
// the package documentation, doing only as much work as comparing the count
// with limit needs.
//
// A result above limit means the body is over it: counting stopped once that
// was certain, so the value is at least limit+1 but not the full count. A
// result at or below limit means the body is within it, and is an upper bound
// on the count: the tokenizer's count for the text it had to tokenize, plus
// one per byte of text it did not need to (a body whose text has no more bytes
// than limit is not tokenized at all), plus the media allowance and one per
// number.
//
// An error means the body is not valid JSON (or, never in practice, that
// the compiled-in vocabulary did not load).
func (c *Counter) InputTokens(body []byte, limit int64) (int64, error) {
	s, err := scanBody(body)
	if err != nil {
		return 0, fmt.Errorf("tokenize: counting input tokens: %w", err)
	}
	count := s.media*MediaTokens + s.numbers
	remaining := s.textBytes
	if count > limit || count+remaining <= limit {
		return count + remaining, nil
	}

	codec, err := c.codec()
	if err != nil {
		return 0, err
	}
	var (
		buf      []byte
		countErr error
	)
	_, err = walk(body, func(raw []byte, escaped bool) bool {
		text := raw
		if escaped {
			buf = appendUnescaped(buf[:0], raw)
			text = buf
		}
		for len(text) > 0 {
			n := cut(text, chunkSize)
			k, err := codec.Count(string(text[:n]))
			if err != nil {
				countErr = err
				return false
			}
			count += int64(k)
			remaining -= int64(n)
			text = text[n:]
			if count > limit || count+remaining <= limit {
				return false
			}
		}
		return true
	})
	switch {
	case countErr != nil:
		return 0, fmt.Errorf("tokenize: counting input tokens: %w", countErr)
	case err != nil && !errors.Is(err, errStopped):
		// The first pass accepted the same bytes; this cannot happen.
		return 0, fmt.Errorf("tokenize: counting input tokens: %w", err)
	case count > limit:
		return count, nil
	default:
		return count + remaining, nil
	}
}

// Estimate returns a cheap estimate of the input tokens of a JSON request
// body: a quarter of the bytes of its text, rounded up, plus [MediaTokens] per
// media item and the numbers' tokens. It does not tokenize and costs about as much as scanning the body
// once, so it suits TPM reservations made on every request. A body that is not
// valid JSON is estimated as a quarter of its length.
func (c *Counter) Estimate(body []byte) int64 {
	s, err := scanBody(body)
	if err != nil {
		return (int64(len(body)) + 3) / 4
	}
	return (s.textBytes+3)/4 + s.media*MediaTokens + s.numbers
}

// CountText returns the number of o200k_base tokens in s. The gateway uses it
// on the text a stream delivered before its client went away, to bill an
// output the provider never reported.
func (c *Counter) CountText(s string) int64 {
	codec, loadErr := c.codec()
	var total int64
	for len(s) > 0 {
		n := cut(s, chunkSize)
		k, err := 0, loadErr
		if err == nil {
			k, err = codec.Count(s[:n])
		}
		if err != nil {
			// The codec only fails in its strict UTF-8 mode, which is not used
			// here; fall back to the estimate rather than count nothing.
			k = (n + 3) / 4
		}
		total += int64(k)
		s = s[n:]
	}
	return total
}

// cut returns where to end the next chunk of text, at most max bytes in.
//
// The o200k pre-tokenizer splits text into pieces that BPE then encodes one
// by one, so cutting between two pieces does not change the count. A space
// preceded by a printable ASCII character always starts a piece (no pattern
// continues a letter, digit or punctuation run into a following space, and
// the only lookahead, in the whitespace patterns, looks at what follows), so
// cut prefers such a space within the last chunkWindow bytes. Failing that
// (long runs of CJK text, base64 that escaped detection) it cuts at a rune
// boundary, which can change the count by a token or two at the cut.
func cut[T ~string | ~[]byte](text T, max int) int {
	if len(text) <= max {
		return len(text)
	}
	for i := max; i > max-chunkWindow && i > 0; i-- {
		if text[i] == ' ' && '!' <= text[i-1] && text[i-1] <= '~' {
			return i
		}
	}
	i := max
	for i > max-4 && i > 0 && text[i]&0xC0 == 0x80 { // UTF-8 continuation byte
		i--
	}
	return i
}
