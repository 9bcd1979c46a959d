package catalog

import "testing"

func TestResolveFamily(t *testing.T) {
	families, err := parsePrices(pricesCSV)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		p    Provider
		name string
		want string // "" for no family
	}{
		// Names an overlay might add, and what they must (not) resolve to.
		{OpenAI, "gpt-4o-2024-08-06", "gpt-4o"},
		{OpenAI, "gpt-4o-mini-2024-07-18", "gpt-4o-mini"},
		{OpenAI, "gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"},
		{OpenAI, "o3-mini-2025-01-31", "o3-mini"},
		{OpenAI, "gpt-5.1-codex-mini", "gpt-5.1-codex-mini"},
		{OpenAI, "gpt-5-chat-latest", ""}, // no prefix match onto gpt-5
		{OpenAI, "o3-pro", ""},            // ten times the price of o3
		{OpenAI, "gpt-4o-audio-preview", ""},
		{OpenAI, "chatgpt-4o-latest", ""},
		{OpenAI, "gpt-4o-0513", "gpt-4o"},
		{Anthropic, "claude-opus-4-0", "claude-opus-4"},
		{Anthropic, "claude-opus-4-1", "claude-opus-4-1"},
		{Anthropic, "claude-3-7-sonnet-latest", "claude-3-7-sonnet"},
		{Anthropic, "claude-opus-4-6", ""}, // not claude-opus-4
		{Gemini, "gemini-2.0-flash-001", "gemini-2.0-flash"},
		{Gemini, "gemini-2.5-pro-preview-06-05", ""}, // -06-05 is not a date shape, so not stripped
		{Gemini, "gemini-2.5-flash-preview-05-2025", "gemini-2.5-flash"},
		{Gemini, "gemini-2.5-flash-lite-preview-13-2025", ""},                // month 13 is no date
		{Gemini, "gemini-3-pro-image-preview", "gemini-3-pro-image-preview"}, // its own row: images at 120 USD/MTok
		{Gemini, "gemini-3-pro-image", ""},
		{Gemini, "gemini-flash-latest", "gemini-2.5-flash"},
		{Gemini, "gemini-pro-latest", ""},
		{Gemini, "", ""},
		{Gemini, "-preview", ""},
	}
	for _, tt := range tests {
		has := func(f string) bool {
			_, ok := families[key{tt.p, f}]
			return ok
		}
		got, ok := resolveFamily(tt.name, has)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("resolveFamily(%s, %q) = %q, %v; want %q", tt.p, tt.name, got, ok, tt.want)
		}
	}
}

func TestTrimTail(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"claude-opus-4-20250514", "claude-opus-4", true},
		{"gpt-5-2025-08-07", "gpt-5", true},
		{"gemini-2.5-flash-lite-preview-09-2025", "gemini-2.5-flash-lite-preview", true},
		{"gemini-2.5-flash-lite-preview", "gemini-2.5-flash-lite", true},
		{"codex-mini-latest", "codex-mini", true},
		{"gpt-3.5-turbo-0125", "gpt-3.5-turbo", true},
		{"gemini-2.0-flash-001", "gemini-2.0-flash", true},
		{"gpt-5.2", "gpt-5.2", false},
		{"claude-sonnet-4-5", "claude-sonnet-4-5", false},
		{"o3", "o3", false},
		{"-latest", "-latest", false},
		{"-20250514", "-20250514", false},
		{"2025", "2025", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := trimTail(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("trimTail(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestDisplayName(t *testing.T) {
	for in, want := range map[string]string{
		"gpt-3.5-turbo-0125":       "GPT-3.5 Turbo (0125)",
		"gemini-2.0-flash-001":     "Gemini 2.0 Flash (001)",
		"claude-3-7-sonnet-latest": "Claude 3.7 Sonnet (latest)",
		"text-embedding-3-small":   "Text Embedding 3 Small",
		"o3":                       "o3",
	} {
		if got := displayName(in); got != want {
			t.Errorf("displayName(%q) = %q, want %q", in, got, want)
		}
	}
}
