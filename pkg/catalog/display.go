package catalog

import (
	"slices"
	"strings"
	"time"
)

// displayName derives a name for listings from a served name, close to how
// the providers write them on their own pages, so the catalog needs no
// hand-kept column of names:
//
//	claude-3-5-haiku-20241022             Claude 3.5 Haiku (2024-10-22)
//	gpt-5.1-codex-mini                    GPT-5.1 Codex Mini
//	gemini-2.5-flash-lite-preview-09-2025 Gemini 2.5 Flash Lite (preview, 2025-09)
func displayName(name string) string {
	var notes []string
	base := name
	for {
		rest, ok := trimTail(base)
		if !ok {
			break
		}
		note := base[len(rest)+1:] // "latest", "preview", "0125"
		if t, n := dateTail(base); n == len("-01-2006") {
			note = t.Format("2006-01")
		} else if n > 0 {
			note = t.Format(time.DateOnly)
		}
		notes, base = append(notes, note), rest
	}
	slices.Reverse(notes)

	words := strings.Split(base, "-")
	out := make([]string, 0, len(words))
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch {
		case w == "":
		case w == "gpt" && i+1 < len(words):
			out = append(out, "GPT-"+words[i+1])
			i++
		case allDigits(w):
			// Anthropic writes versions as words: claude-3-5 is Claude 3.5.
			for i+1 < len(words) && words[i+1] != "" && allDigits(words[i+1]) {
				w += "." + words[i+1]
				i++
			}
			out = append(out, w)
		case w[0] >= '0' && w[0] <= '9', len(w) > 1 && w[0] == 'o' && w[1] >= '0' && w[1] <= '9':
			out = append(out, w) // 2.5, 4o, o3: versions keep their case
		default:
			out = append(out, strings.ToUpper(w[:1])+w[1:])
		}
	}
	s := strings.Join(out, " ")
	if len(notes) > 0 {
		s += " (" + strings.Join(notes, ", ") + ")"
	}
	return s
}

// nameDate returns the date in a model name's tails, if there is one.
func nameDate(name string) (time.Time, bool) {
	for {
		if t, n := dateTail(name); n > 0 {
			return t, true
		}
		var ok bool
		if name, ok = trimTail(name); !ok {
			return time.Time{}, false
		}
	}
}
