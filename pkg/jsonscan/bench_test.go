package jsonscan

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkArraySplitter splits the recorded Gemini array stream, whole and
// in 256-byte chunks, reading usageMetadata from every element as the
// gateway does.
func BenchmarkArraySplitter(b *testing.B) {
	in := readTestdata(b, "gemini-array.json")
	for _, size := range []int{len(in), 256} {
		chunks := sized(in, size)
		name := "chunk=whole"
		if size != len(in) {
			name = fmt.Sprintf("chunk=%d", size)
		}
		for _, field := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/usage=%v", name, field), func(b *testing.B) {
				var s ArraySplitter
				found := 0
				emit := func(e []byte) error {
					if field {
						if _, ok := Field(e, "usageMetadata"); ok {
							found++
						}
					}
					return nil
				}
				b.SetBytes(int64(len(in)))
				b.ReportAllocs()
				for b.Loop() {
					s.Reset()
					for _, c := range chunks {
						if err := s.Feed(c, emit); err != nil {
							b.Fatal(err)
						}
					}
					if err := s.Close(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkField looks up usage objects in typical stream events.
func BenchmarkField(b *testing.B) {
	var gemini []byte
	var s ArraySplitter
	s.Feed(readTestdata(b, "gemini-array.json"), func(e []byte) error {
		gemini = bytes.Clone(e) // the last, biggest element
		return nil
	})
	docs := []struct {
		name string
		doc  []byte
		path []string
	}{
		{"openai-chat", []byte(`{"id":"chatcmpl-C4Hq5a6K3RaPMymUv70btQNYv6SvY","object":"chat.completion.chunk","created":1755137921,"model":"gpt-5-nano-2025-08-07","service_tier":"default","system_fingerprint":null,"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":100,"total_tokens":112,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":100,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"t9"}`), []string{"usage", "completion_tokens"}},
		{"anthropic-delta", []byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" air"}              }`), []string{"usage"}},
		{"gemini", gemini, []string{"usageMetadata", "totalTokenCount"}},
	}
	for _, d := range docs {
		b.Run(d.name, func(b *testing.B) {
			b.SetBytes(int64(len(d.doc)))
			b.ReportAllocs()
			for b.Loop() {
				Field(d.doc, d.path...)
			}
		})
	}
}
