package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// split feeds chunks to a fresh splitter and returns the elements, the
// first error of Feed and the error of Close.
func split(chunks [][]byte) (elems []string, feedErr, closeErr error) {
	var s ArraySplitter
	emit := func(e []byte) error {
		elems = append(elems, string(e))
		return nil
	}
	for _, c := range chunks {
		if feedErr = s.Feed(c, emit); feedErr != nil {
			break
		}
	}
	return elems, feedErr, s.Close()
}

// chunkings returns in whole, in pieces of 1 to 7 bytes, and cut at random
// with fixed seeds.
func chunkings(in []byte) map[string][][]byte {
	m := map[string][][]byte{"whole": {in}}
	for n := 1; n < 8; n++ {
		m[fmt.Sprintf("size %d", n)] = sized(in, n)
	}
	for seed := range uint64(5) {
		m[fmt.Sprintf("random seed %d", seed)] = randomChunks(in, seed)
	}
	return m
}

// sized cuts in into pieces of n bytes (the last one shorter).
func sized(in []byte, n int) [][]byte {
	var cs [][]byte
	for len(in) > 0 {
		k := min(n, len(in))
		cs = append(cs, in[:k])
		in = in[k:]
	}
	return cs
}

func randomChunks(in []byte, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, 0))
	var cs [][]byte
	for b := in; len(b) > 0; {
		k := min(1+r.IntN(64), len(b))
		cs = append(cs, b[:k])
		b = b[k:]
	}
	return cs
}

func TestArraySplitter(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", `[]`, nil},
		{"empty with space", " \r\n[ \t\n ] \n", nil},
		{"objects", `[{"a":1},{"b":[2,3]}]`, []string{`{"a":1}`, `{"b":[2,3]}`}},
		{"gemini-like", "[{\n  \"a\": 1\n}\n,\r\n{\n  \"b\": 2\n}\n]",
			[]string{"{\n  \"a\": 1\n}", "{\n  \"b\": 2\n}"}},
		{"all kinds", `[1,-2.5e3,"s",true,false,null,[],{},[[1]],{"a":{"b":[]}}]`,
			[]string{`1`, `-2.5e3`, `"s"`, `true`, `false`, `null`, `[]`, `{}`, `[[1]]`, `{"a":{"b":[]}}`}},
		{"primitives with space", "[ 1 , true\n,\tnull ]", []string{`1`, `true`, `null`}},
		{"brackets and commas in strings", `[{"a":"]},[{\""},"]","[",",","}"]`,
			[]string{`{"a":"]},[{\""}`, `"]"`, `"["`, `","`, `"}"`}},
		{"escaped quotes and backslashes", `["\"","\\","\\\"]","a\\\\"]`,
			[]string{`"\""`, `"\\"`, `"\\\"]"`, `"a\\\\"`}},
		{"escapes in nested strings", `[{"a":"\\"},{"b":"\"}"}]`, []string{`{"a":"\\"}`, `{"b":"\"}"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for how, chunks := range chunkings([]byte(tt.in)) {
				got, feedErr, closeErr := split(chunks)
				if feedErr != nil || closeErr != nil {
					t.Fatalf("%s: Feed: %v, Close: %v", how, feedErr, closeErr)
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("%s: got %q, want %q", how, got, tt.want)
				}
			}
			checkSplit(t, []byte(tt.in), sized([]byte(tt.in), 1))
		})
	}
}

// TestArraySplitterMaxElementSize: an element held across chunks beyond
// MaxElementSize is skipped, not emitted, and the splitter's buffer stays
// within the bound however long the element runs; the elements around it,
// the array's framing and its end are read as usual. An element whole in
// one chunk is emitted whatever its size (it is not held).
func TestArraySplitterMaxElementSize(t *testing.T) {
	const limit = 64
	big := `{"text":"` + strings.Repeat("x", 10*limit) + `"}`
	in := `[{"a":1},` + big + `,{"b":2}]`
	for how, chunks := range chunkings([]byte(in)) {
		s := ArraySplitter{MaxElementSize: limit}
		var got []string
		for _, c := range chunks {
			if err := s.Feed(c, func(e []byte) error { got = append(got, string(e)); return nil }); err != nil {
				t.Fatalf("%s: %v", how, err)
			}
			if cap(s.buf) > 2*(limit+64) { // the chunkings cut at most 64 bytes
				t.Fatalf("%s: the splitter holds %d bytes, bound %d", how, cap(s.buf), limit)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatalf("%s: Close: %v", how, err)
		}
		want := []string{`{"a":1}`, `{"b":2}`}
		if how == "whole" {
			want = []string{`{"a":1}`, big, `{"b":2}`}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %.80q, want %.80q", how, got, want)
		}
	}
	// A framing error after the skipped element is still found.
	s := ArraySplitter{MaxElementSize: limit}
	emit := func([]byte) error { return nil }
	for _, c := range sized([]byte(`[`+big+` x]`), 7) {
		if err := s.Feed(c, emit); err != nil {
			return
		}
	}
	t.Error("a framing error after a skipped element was not reported")
}

func TestArraySplitterErrors(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		want      []string // emitted before the error
		truncated bool     // the error is only at Close
	}{
		{"empty stream", "", nil, true},
		{"only space", " \n", nil, true},
		{"not an array", `{"a":1}`, nil, false},
		{"object then array", `{}[]`, nil, false},
		{"unclosed", `[{"a":1},{"b":2}`, []string{`{"a":1}`, `{"b":2}`}, true},
		{"unclosed after comma", `[{"a":1},`, []string{`{"a":1}`}, true},
		{"cut inside element", `[{"a":1},{"b":`, []string{`{"a":1}`}, true},
		{"cut inside string", `[{"a":1},"b\"`, []string{`{"a":1}`}, true},
		{"cut inside number", `[1,23`, []string{`1`}, true},
		{"missing comma", `[1 2]`, []string{`1`}, false},
		{"missing comma between objects", `[{}{}]`, []string{`{}`}, false},
		{"leading comma", `[,1]`, nil, false},
		{"double comma", `[1,,2]`, []string{`1`}, false},
		{"trailing comma", `[1,]`, []string{`1`}, false},
		{"closing brace", `[}]`, nil, false},
		{"junk after array", `[1] x`, []string{`1`}, false},
		{"second array", `[1][2]`, []string{`1`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for how, chunks := range chunkings([]byte(tt.in)) {
				got, feedErr, closeErr := split(chunks)
				if !slices.Equal(got, tt.want) {
					t.Errorf("%s: emitted %q, want %q", how, got, tt.want)
				}
				if tt.truncated {
					if feedErr != nil || !errors.Is(closeErr, io.ErrUnexpectedEOF) {
						t.Errorf("%s: Feed: %v, Close: %v; want Close to report io.ErrUnexpectedEOF", how, feedErr, closeErr)
					}
				} else if feedErr == nil || closeErr != feedErr {
					t.Errorf("%s: Feed: %v, Close: %v; want a syntax error from both", how, feedErr, closeErr)
				}
			}
		})
	}
}

func TestArraySplitterEmitError(t *testing.T) {
	var s ArraySplitter
	errStop := errors.New("stop")
	var got []string
	emit := func(e []byte) error {
		got = append(got, string(e))
		return errStop
	}
	if err := s.Feed([]byte(`[1,2,3]`), emit); err != errStop {
		t.Fatalf("Feed returned %v, want %v", err, errStop)
	}
	if err := s.Feed([]byte(`[4]`), emit); err != errStop {
		t.Fatalf("Feed after error returned %v, want %v", err, errStop)
	}
	if !slices.Equal(got, []string{"1"}) {
		t.Fatalf("emitted %q, want [1]", got)
	}
	s.Reset()
	got = nil
	if err := s.Feed([]byte(`[4]`), func(e []byte) error { got = append(got, string(e)); return nil }); err != nil {
		t.Fatalf("Feed after Reset: %v", err)
	}
	if err := s.Close(); err != nil || !slices.Equal(got, []string{"4"}) {
		t.Fatalf("after Reset: emitted %q, Close: %v", got, err)
	}
}

func TestArraySplitterRecorded(t *testing.T) {
	in := readTestdata(t, "gemini-array.json")
	want, feedErr, closeErr := split([][]byte{in})
	if feedErr != nil || closeErr != nil {
		t.Fatalf("Feed: %v, Close: %v", feedErr, closeErr)
	}
	// Three chunks, counted by hand: thinking, then two with text.
	if len(want) != 3 {
		t.Fatalf("got %d elements, want 3", len(want))
	}
	var total, thoughts int64
	for _, e := range want {
		raw, ok := Field([]byte(e), "usageMetadata", "totalTokenCount")
		if !ok {
			t.Fatalf("element without usageMetadata.totalTokenCount: %.80s", e)
		}
		total, _ = Int(raw)
		raw, _ = Field([]byte(e), "usageMetadata", "thoughtsTokenCount")
		thoughts, _ = Int(raw)
	}
	if total != 304 || thoughts != 291 {
		t.Errorf("last usage: total %d, thoughts %d; want 304, 291", total, thoughts)
	}
	for how, chunks := range chunkings(in) {
		got, feedErr, closeErr := split(chunks)
		if feedErr != nil || closeErr != nil || !slices.Equal(got, want) {
			t.Fatalf("%s: elements differ from splitting the whole stream (Feed: %v, Close: %v)", how, feedErr, closeErr)
		}
	}
	checkSplit(t, in, randomChunks(in, 7))
}

func TestArraySplitterAllocs(t *testing.T) {
	in := readTestdata(t, "gemini-array.json")
	chunks := randomChunks(in, 1)
	var s ArraySplitter
	n := 0
	emit := func(e []byte) error {
		if _, ok := Field(e, "usageMetadata"); ok {
			n++
		}
		return nil
	}
	run := func() {
		s.Reset()
		for _, c := range chunks {
			if err := s.Feed(c, emit); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	run()
	if a := testing.AllocsPerRun(20, run); a != 0 {
		t.Errorf("%v allocations per stream, want 0", a)
	}
}

// checkSplit compares splitting in (fed as chunks) with encoding/json.
func checkSplit(t *testing.T, in []byte, chunks [][]byte) {
	t.Helper()
	whole, wholeFeedErr, wholeCloseErr := split([][]byte{in})
	got, feedErr, closeErr := split(chunks)
	if !slices.Equal(got, whole) || fmt.Sprint(feedErr) != fmt.Sprint(wholeFeedErr) || fmt.Sprint(closeErr) != fmt.Sprint(wholeCloseErr) {
		t.Fatalf("chunked: %q, %v, %v\nwhole: %q, %v, %v", got, feedErr, closeErr, whole, wholeFeedErr, wholeCloseErr)
	}

	var raws []json.RawMessage
	isArray := json.Valid(in) && bytes.HasPrefix(bytes.TrimLeft(in, " \t\r\n"), []byte("[")) &&
		json.Unmarshal(in, &raws) == nil
	if isArray {
		var want []string
		for _, r := range raws {
			want = append(want, string(r))
		}
		if feedErr != nil || closeErr != nil || !slices.Equal(got, want) {
			t.Fatalf("valid array %#q: got %q (Feed: %v, Close: %v), encoding/json %q", in, got, feedErr, closeErr, want)
		}
		return
	}
	if feedErr == nil && closeErr == nil && !slices.ContainsFunc(got, func(e string) bool { return !json.Valid([]byte(e)) }) {
		t.Fatalf("%#q is not a JSON array, but split cleanly into valid elements %q", in, got)
	}
}

func FuzzArraySplitter(f *testing.F) {
	f.Add([]byte(`[{"a":"]},[{\""},"]",1,true,[[]],{"b":"\\"}]`), uint64(1))
	f.Add([]byte(" [ 1 , 2 ] "), uint64(2))
	f.Add([]byte(`[1,,2]`), uint64(3))
	f.Add([]byte(`["\\\"\\`), uint64(4))
	f.Add([]byte(strings.Repeat(`["\\\\\\\""]`, 3)), uint64(5))
	f.Add(readTestdata(f, "gemini-array.json"), uint64(6))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64) {
		checkSplit(t, in, randomChunks(in, seed))
		checkBounded(t, in, randomChunks(in, seed), int(seed%32)+1)
		if len(in) <= 4<<10 { // byte by byte is slow for the big seeds
			checkSplit(t, in, sized(in, 1))
		}
	})
}

// checkBounded: with MaxElementSize, the elements emitted are those emitted
// without it, less some skipped ones (a subsequence), and the framing
// errors are the same.
func checkBounded(t *testing.T, in []byte, chunks [][]byte, limit int) {
	t.Helper()
	all, feedErr, closeErr := split(chunks)
	s := ArraySplitter{MaxElementSize: limit}
	var got []string
	var bFeedErr error
	for _, c := range chunks {
		if bFeedErr = s.Feed(c, func(e []byte) error { got = append(got, string(e)); return nil }); bFeedErr != nil {
			break
		}
	}
	if fmt.Sprint(bFeedErr) != fmt.Sprint(feedErr) || fmt.Sprint(s.Close()) != fmt.Sprint(closeErr) {
		t.Fatalf("%#q with MaxElementSize %d: errors %v, %v; without it %v, %v", in, limit, bFeedErr, s.Close(), feedErr, closeErr)
	}
	i := 0
	for _, e := range all {
		if i < len(got) && got[i] == e {
			i++
		}
	}
	if i != len(got) {
		t.Fatalf("%#q with MaxElementSize %d: %q is not a subsequence of %q", in, limit, got, all)
	}
}
