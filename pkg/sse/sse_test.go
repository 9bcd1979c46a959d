package sse

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
)

// event is a comparable copy of an Event.
type event struct {
	Name, ID, Data string
	Start, End     int64
	Truncated      bool
}

func (e event) String() string {
	return fmt.Sprintf("{Name:%q ID:%q Data:%q [%d,%d) Truncated:%v}", e.Name, e.ID, e.Data, e.Start, e.End, e.Truncated)
}

func copyEvent(ev Event) event {
	return event{ev.Name, ev.ID, string(ev.Data), ev.Start, ev.End, ev.Truncated}
}

// decode feeds chunks to a fresh decoder, closes it and returns the events.
func decode(t testing.TB, max int, chunks [][]byte) []event {
	t.Helper()
	d := Decoder{MaxEventSize: max}
	var evs []event
	emit := func(ev Event) error {
		evs = append(evs, copyEvent(ev))
		return nil
	}
	for _, c := range chunks {
		if err := d.Feed(c, emit); err != nil {
			t.Fatalf("Feed: %v", err)
		}
	}
	if err := d.Close(emit); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return evs
}

// chunkings returns in cut up in various ways, keyed by a description:
// whole, in pieces of 1 to 7 bytes, at random with fixed seeds, and in two
// pieces at every split point for short inputs.
func chunkings(in []byte) map[string][][]byte {
	m := map[string][][]byte{"whole": {in}}
	for n := 1; n < 8; n++ {
		m[fmt.Sprintf("size %d", n)] = sized(in, n)
	}
	for seed := range uint64(5) {
		m[fmt.Sprintf("random seed %d", seed)] = randomChunks(in, seed)
	}
	if len(in) <= 256 {
		for i := range len(in) + 1 {
			// An empty chunk in the middle must change nothing.
			m[fmt.Sprintf("split at %d", i)] = [][]byte{in[:i], {}, in[i:]}
		}
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

// checkPartition verifies that evs tile in from offset 0 without gaps or
// overlaps, leaving only undispatched bytes after the last event.
func checkPartition(t *testing.T, in []byte, evs []event) {
	t.Helper()
	var rebuilt []byte
	var end int64
	for i, ev := range evs {
		if ev.Start != end || ev.End <= ev.Start || ev.End > int64(len(in)) {
			t.Fatalf("event %d %v: not contiguous after offset %d in %d bytes", i, ev, end, len(in))
		}
		rebuilt = append(rebuilt, in[ev.Start:ev.End]...)
		end = ev.End
	}
	rebuilt = append(rebuilt, in[end:]...)
	if !bytes.Equal(rebuilt, in) {
		t.Fatalf("segments do not reproduce the input")
	}
}

// A test case is a stream written as the segments its events must occupy,
// followed by undispatched bytes.
type streamCase struct {
	name     string
	segments []string // one per expected event
	tail     string
	want     []event // offsets are filled in from segments
}

func (c streamCase) input() []byte {
	return []byte(strings.Join(c.segments, "") + c.tail)
}

func (c streamCase) wantEvents() []event {
	var off int64
	want := slices.Clone(c.want)
	for i := range want {
		want[i].Start = off
		off += int64(len(c.segments[i]))
		want[i].End = off
	}
	return want
}

var bomStr = "\xEF\xBB\xBF"

var streamCases = []streamCase{
	{name: "empty stream"},
	{
		name:     "LF",
		segments: []string{"data: a\n\n"},
		want:     []event{{Data: "a"}},
	},
	{
		name:     "CRLF",
		segments: []string{"data: a\r\n\r\n"},
		want:     []event{{Data: "a"}},
	},
	{
		name:     "CR",
		segments: []string{"data: a\r\r", "data: b\r\r"},
		want:     []event{{Data: "a"}, {Data: "b"}},
	},
	{
		name:     "mixed line ends",
		segments: []string{"data: a\r\ndata: b\rdata: c\n\r\n", "data: d\n\r", "data: e\r\n\n"},
		want:     []event{{Data: "a\nb\nc"}, {Data: "d"}, {Data: "e"}},
	},
	{
		name:     "CR LF is one line end, CR CR and LF CR two",
		segments: []string{"data: a\r\n\r\n", "data: b\r\r", "data: c\n\r\n"},
		want:     []event{{Data: "a"}, {Data: "b"}, {Data: "c"}},
	},
	{
		name:     "data lines joined with LF",
		segments: []string{"data: a\ndata: b\ndata: c\n\n"},
		want:     []event{{Data: "a\nb\nc"}},
	},
	{
		name:     "empty data lines",
		segments: []string{"data\n\n", "data:\n\n", "data: \n\n", "data: a\ndata\ndata:\ndata: b\n\n"},
		want:     []event{{Data: ""}, {Data: ""}, {Data: ""}, {Data: "a\n\n\nb"}},
	},
	{
		name:     "one leading space trimmed",
		segments: []string{"data:a\n\n", "data:  a \n\n", "data:\ta\n\n", "data: a: b\n\n"},
		want:     []event{{Data: "a"}, {Data: " a "}, {Data: "\ta"}, {Data: "a: b"}},
	},
	{
		name:     "comments ignored",
		segments: []string{": hi\ndata: a\n:data: b\n: \n:\ndata: c\n\n"},
		want:     []event{{Data: "a\nc"}},
	},
	{
		name:     "event name",
		segments: []string{"event: ping\ndata: {}\n\n", "data: x\n\n"},
		want:     []event{{Name: "ping", Data: "{}"}, {Data: "x"}},
	},
	{
		name:     "last event name wins, after data too",
		segments: []string{"event: a\ndata: x\nevent: b\n\n"},
		want:     []event{{Name: "b", Data: "x"}},
	},
	{
		name:     "event name without value",
		segments: []string{"event: a\nevent\ndata: x\n\n", "event: a\nevent:\ndata: x\n\n"},
		want:     []event{{Data: "x"}, {Data: "x"}},
	},
	{
		name:     "event name kept verbatim after one space",
		segments: []string{"event:  a b \ndata: x\n\n"},
		want:     []event{{Name: " a b ", Data: "x"}},
	},
	{
		name: "dataless blocks belong to the next event",
		segments: []string{
			": open\n\nevent: ignored\n\nid: 7\n\ndata: a\n\n",
			"\n\n\n: keepalive\n\nevent: e\ndata: b\n\n",
		},
		tail: "event: lonely\n\n: bye\n",
		want: []event{{ID: "7", Data: "a"}, {ID: "7", Name: "e", Data: "b"}},
	},
	{
		name: "id persists and NUL ids are ignored",
		segments: []string{
			"id: 1\ndata: a\n\n",
			"data: b\n\n",
			"id: x\x00y\ndata: c\n\n",
			"id\ndata: d\n\n",
			"id: 2\nid: 3\ndata: e\n\n",
			"id: 4\x00\ndata: f\n\n",
		},
		want: []event{
			{ID: "1", Data: "a"}, {ID: "1", Data: "b"}, {ID: "1", Data: "c"},
			{ID: "", Data: "d"}, {ID: "3", Data: "e"}, {ID: "3", Data: "f"},
		},
	},
	{
		name:     "retry and unknown fields ignored",
		segments: []string{"retry: 10\nfoo: bar\nDATA: no\ndat: no\ndatas: no\neventual: no\nidx: no\nbare\ndata: a\n\n"},
		want:     []event{{Data: "a"}},
	},
	{
		name:     "leading BOM skipped",
		segments: []string{bomStr + "data: a\n\n"},
		want:     []event{{Data: "a"}},
	},
	{
		name:     "only the first BOM is skipped",
		segments: []string{bomStr + "data: a\n\n", bomStr + "data: b\n\ndata: c\n\n"},
		want:     []event{{Data: "a"}, {Data: "c"}},
	},
	{
		name:     "partial BOM is content",
		segments: []string{"\xEF\xBBdata: a\n\ndata: b\n\n"},
		want:     []event{{Data: "b"}},
	},
	{
		name:     "partial BOM then data",
		segments: []string{"\xEFdata\n\n\xEF\xBB\ndata: b\n\n"},
		want:     []event{{Data: "b"}},
	},
	{
		name: "only a partial BOM",
		tail: "\xEF\xBB",
	},
	{
		name:     "DONE is an ordinary event",
		segments: []string{"data: {}\n\n", "data: [DONE]\n\n"},
		want:     []event{{Data: "{}"}, {Data: "[DONE]"}},
	},
	{
		name:     "final event without blank line",
		segments: []string{"data: a\n\n", "event: e\ndata: b"},
		want:     []event{{Data: "a"}, {Name: "e", Data: "b"}},
	},
	{
		name:     "final event with unterminated name line",
		segments: []string{"data: b\nevent: e"},
		want:     []event{{Name: "e", Data: "b"}},
	},
	{
		name:     "final bare data line",
		segments: []string{"data: a\n\n", "data"},
		want:     []event{{Data: "a"}, {Data: ""}},
	},
	{
		name:     "final event ended by one line end",
		segments: []string{"data: a\n\n", "data: b\n"},
		want:     []event{{Data: "a"}, {Data: "b"}},
	},
	{
		name:     "final event ended by CR",
		segments: []string{"data: b\r"},
		want:     []event{{Data: "b"}},
	},
	{
		name:     "final event with trailing comment",
		segments: []string{"data: b\n: c"},
		want:     []event{{Data: "b"}},
	},
	{
		name:     "final event name line without data is not an event",
		segments: []string{"data: a\n\n"},
		tail:     "event: e",
		want:     []event{{Data: "a"}},
	},
	{
		name:     "binary data",
		segments: []string{"data: \x00\xff\t\n\n"},
		want:     []event{{Data: "\x00\xff\t"}},
	},
}

func TestDecoder(t *testing.T) {
	for _, tc := range streamCases {
		t.Run(tc.name, func(t *testing.T) {
			in, want := tc.input(), tc.wantEvents()
			for how, chunks := range chunkings(in) {
				got := decode(t, 0, chunks)
				if !slices.Equal(got, want) {
					t.Fatalf("%s:\n got %v\nwant %v", how, got, want)
				}
				checkPartition(t, in, got)
			}
		})
	}
}

func TestMaxEventSize(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []event
	}{
		{"under", "data: abc\n\n", []event{{Data: "abc"}}},
		{"at", "data: abcd\n\n", []event{{Data: "abcd"}}},
		{"over", "data: abcdef\n\n", []event{{Data: "abcd", Truncated: true}}},
		{"joined at", "data: ab\ndata: c\n\n", []event{{Data: "ab\nc"}}},
		{"separator over", "data: abcd\ndata:\n\n", []event{{Data: "abcd", Truncated: true}}},
		{"joined over", "data: ab\ndata: cd\ndata: ef\n\n", []event{{Data: "ab\nc", Truncated: true}}},
		{"flag resets", "data: abcdef\n\ndata: x\n\n", []event{{Data: "abcd", Truncated: true}, {Data: "x"}}},
		{"name cut", "event: abcdef\nid: 123456\ndata: x\n\n", []event{{Name: "abcd", ID: "1234", Data: "x"}}},
		{"over at close", "data: abcdef", []event{{Data: "abcd", Truncated: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			for how, chunks := range chunkings(in) {
				got := decode(t, 4, chunks)
				for i := range got {
					got[i].Start, got[i].End = 0, 0
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("%s:\n got %v\nwant %v", how, got, tt.want)
				}
			}
		})
	}
}

// TestDropEvent checks what the offsets are for: cutting one event's bytes
// out of the stream leaves a stream that decodes to the other events.
func TestDropEvent(t *testing.T) {
	in := []byte(bomStr + ": open\r\n\r\nevent: a\ndata: 1\n\n" +
		"event: skipped\n\n: ka\n\nevent: b\rdata: 2\rdata: 3\r\r" +
		"\n\ndata: [DONE]\r\n\r\n" +
		": tail\n\nevent: unfinished\n")
	all := decode(t, 0, [][]byte{in})
	if len(all) != 3 {
		t.Fatalf("got %d events, want 3: %v", len(all), all)
	}
	checkPartition(t, in, all)
	for i, ev := range all {
		rest := slices.Concat(in[:ev.Start], in[ev.End:])
		got := decode(t, 0, [][]byte{rest})
		want := slices.Delete(slices.Clone(all), i, i+1)
		if len(got) != len(want) {
			t.Fatalf("without event %d: got %v, want %v", i, got, want)
		}
		for j := range got {
			if got[j].Name != want[j].Name || got[j].Data != want[j].Data {
				t.Errorf("without event %d: event %d is %v, want %v", i, j, got[j], want[j])
			}
		}
	}
}

func TestEmitError(t *testing.T) {
	in := []byte("data: a\n\ndata: b\n\ndata: c\n\n")
	for how, chunks := range chunkings(in) {
		var d Decoder
		var got []string
		errStop := errors.New("stop")
		emit := func(ev Event) error {
			got = append(got, string(ev.Data))
			if string(ev.Data) == "b" {
				return errStop
			}
			return nil
		}
		var err error
		for _, c := range chunks {
			if err = d.Feed(c, emit); err != nil {
				break
			}
		}
		if !errors.Is(err, errStop) {
			t.Fatalf("%s: Feed returned %v, want %v", how, err, errStop)
		}
		if !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("%s: emitted %q, want [a b]", how, got)
		}
	}

	// Close reports the error of its own emit too.
	var d Decoder
	errClose := errors.New("close")
	if err := d.Feed([]byte("data: a"), nil); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(func(Event) error { return errClose }); err != errClose {
		t.Fatalf("Close returned %v, want %v", err, errClose)
	}
}

// TestDeferredCR checks that a blank line ended by a '\r' at the end of a
// chunk is dispatched once the next byte shows whether a '\n' follows, or at
// Close.
func TestDeferredCR(t *testing.T) {
	var d Decoder
	var got []event
	emit := func(ev Event) error { got = append(got, copyEvent(ev)); return nil }
	feed := func(s string) {
		t.Helper()
		if err := d.Feed([]byte(s), emit); err != nil {
			t.Fatal(err)
		}
	}
	feed("data: a\r\r")
	if len(got) != 0 {
		t.Fatalf("event dispatched before its line end was complete: %v", got)
	}
	feed("\n")
	if want := []event{{Data: "a", End: 10}}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	feed("data: b\r\r")
	feed("data: c\r\r")
	if want := (event{Data: "b", Start: 10, End: 19}); len(got) != 2 || got[1] != want {
		t.Fatalf("got %v, want second event %v", got, want)
	}
	if err := d.Close(emit); err != nil {
		t.Fatal(err)
	}
	if want := (event{Data: "c", Start: 19, End: 28}); len(got) != 3 || got[2] != want {
		t.Fatalf("got %v, want third event %v", got, want)
	}
}

func TestReset(t *testing.T) {
	var d Decoder
	d.MaxEventSize = 3
	var got []event
	emit := func(ev Event) error { got = append(got, copyEvent(ev)); return nil }
	// Leave everything half done: BOM, CR, id, name, data.
	if err := d.Feed([]byte("id: 1\nevent: x\ndata: abcdef\r"), emit); err != nil {
		t.Fatal(err)
	}
	d.Reset()
	if d.MaxEventSize != 3 {
		t.Errorf("Reset changed MaxEventSize to %d", d.MaxEventSize)
	}
	if err := d.Feed([]byte(bomStr+"\ndata: ab\n\n"), emit); err != nil {
		t.Fatal(err)
	}
	want := []event{{Data: "ab", End: 14}}
	if !slices.Equal(got, want) {
		t.Fatalf("after Reset got %v, want %v", got, want)
	}
}

// TestEventNames checks that names stay valid after the callback although
// they are interned, including when the intern cache overflows.
func TestEventNames(t *testing.T) {
	var in strings.Builder
	var want []string
	for i := range 3 * maxInterned {
		name := fmt.Sprintf("name-%d", i%(maxInterned+3))
		if i%7 == 0 {
			name = strings.Repeat("long", maxInternedName)
		}
		fmt.Fprintf(&in, "event: %s\ndata: x\n\n", name)
		want = append(want, name)
	}
	var names []string
	var d Decoder
	emit := func(ev Event) error { names = append(names, ev.Name); return nil }
	if err := d.Feed([]byte(in.String()), emit); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, want) {
		t.Fatalf("names = %q, want %q", names, want)
	}
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recorded describes the streams in testdata, counted by hand from the
// files: how many events, their names in order (run-length encoded as
// name×count), and the usage the last usage-bearing event reports.
var recorded = []struct {
	file       string
	names      []string
	usagePath  []string // where the usage object is in an event's data
	usageField string   // an integer field in it
	usage      int64    // its value in the last event with usage
}{
	{
		file:       "openai-chat-usage.sse",
		names:      []string{"×4"},
		usagePath:  []string{"usage"},
		usageField: "completion_tokens",
		usage:      100,
	},
	{
		file:  "openai-chat.sse",
		names: []string{"×51"},
	},
	{
		file: "openai-responses.sse",
		names: []string{
			"response.created×1", "response.in_progress×1",
			"response.output_item.added×1", "response.output_item.done×1", // reasoning
			"response.output_item.added×1", "response.web_search_call.in_progress×1",
			"response.web_search_call.searching×1", "response.web_search_call.completed×1",
			"response.output_item.done×1",
			"response.output_item.added×1", "response.output_item.done×1", // reasoning
			"response.output_item.added×1", "response.content_part.added×1",
			"response.output_text.delta×44", "response.output_text.done×1",
			"response.content_part.done×1", "response.output_item.done×1",
			"response.completed×1",
		},
		usagePath:  []string{"response", "usage"},
		usageField: "output_tokens",
		usage:      582,
	},
	{
		file: "anthropic-messages.sse",
		names: []string{
			"message_start×1", "content_block_start×1", "ping×1", "content_block_delta×3",
			"content_block_stop×1", "message_delta×1", "message_stop×1",
		},
		usagePath:  []string{"usage"},
		usageField: "output_tokens",
		usage:      13,
	},
	{
		file: "anthropic-thinking.sse",
		names: []string{
			"message_start×1", "content_block_start×1", "ping×1", "content_block_delta×17",
			"content_block_stop×1", "content_block_start×1", "content_block_delta×2",
			"content_block_stop×1", "message_delta×1", "message_stop×1",
		},
		usagePath:  []string{"usage"},
		usageField: "output_tokens",
		usage:      216,
	},
	{
		file:       "gemini.sse", // CRLF line ends
		names:      []string{"×12"},
		usagePath:  []string{"usageMetadata"},
		usageField: "candidatesTokenCount",
		usage:      527,
	},
}

// runLength encodes names as name×count runs.
func runLength(evs []event) []string {
	var runs []string
	for i := 0; i < len(evs); {
		j := i
		for j < len(evs) && evs[j].Name == evs[i].Name {
			j++
		}
		runs = append(runs, fmt.Sprintf("%s×%d", evs[i].Name, j-i))
		i = j
	}
	return runs
}

func TestRecorded(t *testing.T) {
	for _, rec := range recorded {
		t.Run(rec.file, func(t *testing.T) {
			in := readTestdata(t, rec.file)
			want := decode(t, 0, [][]byte{in})
			if got := runLength(want); !slices.Equal(got, rec.names) {
				t.Errorf("event names %q, want %q", got, rec.names)
			}
			if n := len(want); want[n-1].End != int64(len(in)) {
				t.Errorf("last event ends at %d, want the stream end %d", want[n-1].End, len(in))
			}
			checkPartition(t, in, want)

			// Every event is one JSON document (or [DONE]) and data is
			// never split over lines in these streams.
			var usage int64
			found := false
			for _, ev := range want {
				if ev.Data == "[DONE]" {
					continue
				}
				if _, ok := jsonscan.Field([]byte(ev.Data)); !ok {
					t.Errorf("event %v: data is not JSON", ev)
				}
				if rec.usagePath == nil {
					continue
				}
				path := append(slices.Clone(rec.usagePath), rec.usageField)
				if raw, ok := jsonscan.Field([]byte(ev.Data), path...); ok {
					usage, found = jsonscan.Int(raw)
				}
			}
			if rec.usagePath != nil && (!found || usage != rec.usage) {
				t.Errorf("last %s = %d (found %v), want %d", rec.usageField, usage, found, rec.usage)
			}

			for how, chunks := range chunkings(in) {
				if got := decode(t, 0, chunks); !slices.Equal(got, want) {
					t.Fatalf("%s: events differ from decoding the whole stream", how)
				}
			}
		})
	}
}

func TestAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts are checked without -short")
	}
	for _, rec := range recorded {
		in := readTestdata(t, rec.file)
		chunks := randomChunks(in, 1)
		var d Decoder
		n := 0
		emit := func(ev Event) error {
			if _, ok := jsonscan.Field(ev.Data, "usage"); ok {
				n++
			}
			return nil
		}
		run := func() {
			d.Reset()
			for _, c := range chunks {
				if err := d.Feed(c, emit); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Close(emit); err != nil {
				t.Fatal(err)
			}
		}
		run() // warm up buffers and the name cache
		if a := testing.AllocsPerRun(20, run); a != 0 {
			t.Errorf("%s: %v allocations per stream, want 0", rec.file, a)
		}
	}
}

// TestFinish: the bytes that end a stream's unfinished line and event, so
// that an event appended after them stands on its own, whatever the chunking.
func TestFinish(t *testing.T) {
	for _, tc := range []struct{ stream, want string }{
		{"", ""},
		{"event: a\ndata: 1\n\n", ""},
		{"event: a\ndata: 1\r\n\r\n", ""},
		{"event: a\ndata: 1\r\r", ""}, // dispatched at the second '\r'
		{"event: a\n", ""},            // no data: the next event line renames it
		{"event: a", "\n"},
		{"event: a\nda", "\n"},
		{": comment", "\n"},
		{"event: a\ndata: 1", "\n\n"},
		{"event: a\ndata: 1\n", "\n"},
		{"event: a\ndata: 1\r", "\n\n"}, // the first '\n' completes "\r\n"
		{"data: 1\n\ndata: 2\nda", "\n\n"},
	} {
		for split := range len(tc.stream) + 1 {
			var d Decoder
			var n int
			count := func(Event) error { n++; return nil }
			_ = d.Feed([]byte(tc.stream[:split]), count)
			_ = d.Feed([]byte(tc.stream[split:]), count)
			got := d.Finish()
			if string(got) != tc.want {
				t.Errorf("%q split at %d: Finish() = %q, want %q", tc.stream, split, got, tc.want)
				continue
			}
			// What follows is an event of its own, named as it says.
			before := n
			var last Event
			_ = d.Feed(append(got, "event: error\ndata: {}\n\n"...), func(ev Event) error {
				n++
				last = ev
				last.Data = bytes.Clone(ev.Data)
				return nil
			})
			if n == before || last.Name != "error" || string(last.Data) != "{}" {
				t.Errorf("%q split at %d: the appended event came out as %q %q", tc.stream, split, last.Name, last.Data)
			}
		}
	}
}
