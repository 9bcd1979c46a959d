package catalog

import (
	"strings"
	"time"
)

// resolveFamily finds the price family that bills a served model name.
// has reports whether the provider's price table has a row for a family.
//
// Providers serve one model under several names: a dated snapshot
// (claude-sonnet-4-20250514, gpt-5-2025-08-07, gemini-2.5-flash-preview-09-2025),
// a moving alias (codex-mini-latest, gemini-flash-latest) or a preview of it,
// while the price table has one row per family. The rule, stopping at the
// first hit:
//
//  1. the name itself is a family (gemini-3-flash-preview and
//     codex-mini-latest have rows of their own, so they are never stripped);
//  2. the name is in the alias table (familyAlias) and its target is a family;
//  3. strip one tail (trimTail: a date or snapshot number, -latest,
//     -preview) and go back to 1 with what is left.
//
// Tails come off one at a time, so gemini-2.5-flash-lite-preview-09-2025
// loses -09-2025, then -preview, and lands on gemini-2.5-flash-lite.
//
// There is deliberately no prefix match: a name that is longer than a
// family but not by a known tail is a different model, often at a
// different price (o3-pro costs ten times o3, gpt-4o-audio-preview is not
// gpt-4o, gemini-3-pro-image-preview is not billed like text). Such a
// name gets no family, and the catalog refuses it unless an alias, an
// overlay family:, like: or price: says how to bill it. The same
// strictness is why claude-opus-4-1-20250805 resolves to claude-opus-4-1
// and never to claude-opus-4.
func resolveFamily(name string, has func(family string) bool) (string, bool) {
	for {
		if has(name) {
			return name, true
		}
		if alias := familyAlias(name); alias != "" && has(alias) {
			return alias, true
		}
		var ok bool
		if name, ok = trimTail(name); !ok {
			return "", false
		}
	}
}

// familyAlias names the family of served names that no tail stripping can
// reach, because the provider's alias does not spell out the version it
// points at. It is a function rather than a map so it holds no state.
func familyAlias(name string) string {
	switch name {
	// Anthropic's "-0" aliases name the first release of a major version;
	// the price table calls that family without the ".0".
	case "claude-sonnet-4-0":
		return "claude-sonnet-4"
	case "claude-opus-4-0":
		return "claude-opus-4"
	// Google's moving aliases point at the current 2.5 Flash models (the
	// 09-2025 previews, which are priced as the stable ones). When Google
	// repoints them, change these lines or set family: in an overlay.
	case "gemini-flash-latest":
		return "gemini-2.5-flash"
	case "gemini-flash-lite-latest":
		return "gemini-2.5-flash-lite"
	}
	return ""
}

// trimTail strips one version tail from a model name: a date
// (-20250514, -2025-08-07, -09-2025), an OpenAI MMDD snapshot (-0125), a
// Gemini stable-version number (-001), -latest or -preview. ok is false
// when there is nothing to strip.
func trimTail(name string) (rest string, ok bool) {
	if _, n := dateTail(name); n > 0 {
		return name[:len(name)-n], true
	}
	for _, tail := range [...]string{"-latest", "-preview"} {
		if rest, ok := strings.CutSuffix(name, tail); ok && rest != "" {
			return rest, true
		}
	}
	for _, shape := range [...]string{"-dddd", "-ddd"} {
		if matchShape(name, shape) && len(name) > len(shape) {
			return name[:len(name)-len(shape)], true
		}
	}
	return name, false
}

// dateTail returns the date a model name ends with and the length of that
// suffix, or n == 0 if it ends with no date.
func dateTail(name string) (t time.Time, n int) {
	// The date suffixes providers put on snapshot names, 'd' standing for
	// a digit, with the layout that parses them. Longer shapes come first
	// so that -2025-08-07 is not read as a shorter one.
	shapes := [...]struct{ shape, layout string }{
		{"-dddd-dd-dd", "-2006-01-02"}, // OpenAI: gpt-5-2025-08-07
		{"-dddddddd", "-20060102"},     // Anthropic: claude-opus-4-20250514
		{"-dd-dddd", "-01-2006"},       // Gemini: gemini-2.5-flash-preview-09-2025
	}
	for _, d := range shapes {
		if !matchShape(name, d.shape) || len(name) == len(d.shape) {
			continue
		}
		t, err := time.Parse(d.layout, name[len(name)-len(d.shape):])
		if err != nil {
			continue // digits in the right places but not a date (-99-9999)
		}
		return t, len(d.shape)
	}
	return time.Time{}, 0
}

// matchShape reports whether s ends with shape, where 'd' in shape matches
// any ASCII digit and every other byte matches itself. Every shape starts
// with '-', so -dddd matches -0125 but not the end of -20250514.
func matchShape(s, shape string) bool {
	if len(s) < len(shape) {
		return false
	}
	tail := s[len(s)-len(shape):]
	for i := 0; i < len(shape); i++ {
		c := tail[i]
		if shape[i] == 'd' {
			if c < '0' || c > '9' {
				return false
			}
		} else if c != shape[i] {
			return false
		}
	}
	return true
}
