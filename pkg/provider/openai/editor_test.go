package openai

import "testing"

func TestAppendEventRemovesInjectedNullUsage(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
			"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n"},
		{"data: {\"choices\":[],\"usage\":null,\"obfuscation\":\"x\"}\r\n\r\n",
			"data: {\"choices\":[],\"obfuscation\":\"x\"}\r\n\r\n"},
		{"data: {\"usage\":null,\"choices\":[]}\n\n", "data: {\"choices\":[]}\n\n"},
		// Text that merely mentions usage is escaped inside its string and
		// stays as it is.
		{"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":null\"}}]}\n\n",
			"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":null\"}}]}\n\n"},
		{"data: [DONE]\n\n", "data: [DONE]\n\n"},
	}
	m := &meter{op: opChat, hide: true}
	for _, tt := range tests {
		if got := string(m.AppendEvent([]byte("prev|"), []byte(tt.raw))); got != "prev|"+tt.want {
			t.Errorf("AppendEvent(%q)\n got %q\nwant %q", tt.raw, got, "prev|"+tt.want)
		}
	}
}
