package jsonscan

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestField(t *testing.T) {
	tests := []struct {
		doc  string
		path []string
		want string // "" means not found
	}{
		// Found.
		{`{"usage":{"a":1}}`, []string{"usage"}, `{"a":1}`},
		{`{"id":"x","usage":null}`, []string{"usage"}, `null`},
		{`{"response":{"id":"x","usage":{"input_tokens":3}}}`, []string{"response", "usage", "input_tokens"}, `3`},
		{" \n{ \"a\" : [1, 2] \t}\r\n", []string{"a"}, `[1, 2]`},
		{`{"a":{"b":{"c":{"d":true}}}}`, []string{"a", "b", "c"}, `{"d":true}`},

		// Every kind of value, found and skipped over.
		{`{"s":"x\"y\\","n":-1.5e+3,"t":true,"f":false,"z":null,"o":{},"a":[],"k":0}`, []string{"s"}, `"x\"y\\"`},
		{`{"s":"x\"y\\","n":-1.5e+3,"t":true,"f":false,"z":null,"o":{},"a":[],"k":0}`, []string{"n"}, `-1.5e+3`},
		{`{"s":"x\"y\\","n":-1.5e+3,"t":true,"f":false,"z":null,"o":{},"a":[],"k":0}`, []string{"f"}, `false`},
		{`{"s":"x\"y\\","n":-1.5e+3,"t":true,"f":false,"z":null,"o":{},"a":[],"k":0}`, []string{"a"}, `[]`},
		{`{"s":"x\"y\\","n":-1.5e+3,"t":true,"f":false,"z":null,"o":{},"a":[],"k":0}`, []string{"k"}, `0`},
		{`{"a":[{"b":[[],{}]},"]}",{"c":"}"}],"b":"\\\"","usage":7}`, []string{"usage"}, `7`},
		{`{"a":"\u0022usage\u0022:1","usage":2}`, []string{"usage"}, `2`},
		{`{"a":"\\","usage":2}`, []string{"usage"}, `2`},

		// Whole document.
		{` {"a":1} `, nil, `{"a":1}`},
		{"\t12\n", nil, `12`},
		{`"s"`, nil, `"s"`},
		{`[1,{"a":2}]`, nil, `[1,{"a":2}]`},

		// Not found.
		{`{"a":1}`, []string{"b"}, ""},
		{`{}`, []string{"a"}, ""},
		{`{"a":1}`, []string{"a", "b"}, ""},
		{`{"a":"b"}`, []string{"a", "b"}, ""},
		{`{"a":[{"b":1}]}`, []string{"a", "b"}, ""},
		{`[{"a":1}]`, []string{"a"}, ""},
		{`{"x":{"usage":1}}`, []string{"usage"}, ""},
		{`{"x":"{\"usage\":1}"}`, []string{"usage"}, ""},
		{`{"usage ":1,"Usage":2,"usag":3}`, []string{"usage"}, ""},

		// The last occurrence of a key wins, at every level.
		{`{"a":1,"a":2}`, []string{"a"}, `2`},
		{`{"a":{"b":1},"a":{"b":2}}`, []string{"a", "b"}, `2`},
		{`{"a":{"b":1},"a":{"c":2}}`, []string{"a", "b"}, ""},
		{`{"a":{"b":1},"a":{"c":{"b":9}}}`, []string{"a", "b"}, ""},
		{`{"a":{"b":1,"b":5},"a":7}`, []string{"a", "b"}, ""},
		{`{"a":{"b":1},"x":{"a":{"b":3}}}`, []string{"a", "b"}, `1`},
		{`{"a":{"b":1,"c":{"a":{"b":4}}}}`, []string{"a", "b"}, `1`},
		{`{"a":{"b":1},"b":2}`, []string{"a", "b"}, `1`},

		// Keys are compared unescaped, as encoding/json does.
		{`{"us\u0061ge":5}`, []string{"usage"}, `5`},
		{`{"a\"b":1}`, []string{`a"b`}, `1`},
		{`{"\/\\\b\f\n\r\t":1}`, []string{"/\\\b\f\n\r\t"}, `1`},
		{`{"é":1}`, []string{"é"}, `1`},
		{`{"\u00e9":1}`, []string{"é"}, `1`},
		{`{"\u00E9x":1}`, []string{"é"}, ""},
		{`{"\ud83d\ude00":1}`, []string{"😀"}, `1`},
		{`{"\ud800":1}`, []string{"\uFFFD"}, `1`},
		{`{"\ud800\u0041":1}`, []string{"\uFFFDA"}, `1`},
		{`{"\udc00\ud800":1}`, []string{"\uFFFD\uFFFD"}, `1`},
		{"{\"\xff\":1}", []string{"\uFFFD"}, `1`},
		{"{\"\xff\":1}", []string{"\xff"}, ""},
		{`{"ab":1}`, []string{"a"}, ""},
		{`{"\u0061":1}`, []string{"ab"}, ""},
		{`{"\u0061b":1}`, []string{"a"}, ""},
		{`{"\u0061b":1}`, []string{"ac"}, ""},
		{`{"é":1}`, []string{"e"}, ""},
	}
	for _, tt := range tests {
		raw, ok := Field([]byte(tt.doc), tt.path...)
		if got := string(raw); got != tt.want || ok != (tt.want != "") {
			t.Errorf("Field(%#q, %q) = %#q, %v; want %#q", tt.doc, tt.path, got, ok, tt.want)
		}
		// The table is also a check of the encoding/json comparison that
		// the fuzz test relies on.
		checkField(t, []byte(tt.doc), tt.path...)
	}
}

func TestFieldInvalid(t *testing.T) {
	docs := []string{
		"", " ", "{", "}", "[", "]", "[}", "{]", `{"a"}`, `{"a":}`, `{"a" 1}`, `{"a":1,}`,
		`{"a":1 "b":2}`, `{"a":1`, `{"a":1}x`, `{"a":1}{}`, `{'a':1}`, `{a:1}`, `{1:1}`,
		`[1,]`, `[,1]`, `[1 2]`, `[1,,2]`, `01`, `-01`, `1.`, `.1`, `1e`, `1e+`, `-`, `+1`,
		`1.5.`, `0x1`, `NaN`, `Infinity`, `tru`, `nul`, `truex`, `True`, `"abc`, `"\`, `"\x"`,
		`"\u12G4"`, `"\u12"`, "\"a\x01\"", "\"a\nb\"", "\"\x7f\"x", `{"a":"b"c}`,
		`{"usage":{"a":1},"x":[}`, `{"x":[},"usage":1}`, `{"usage":1,"x":tru}`,
		"\x00", "{}\x00", "\xEF\xBB\xBF{}",
		strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
		`{"a":` + strings.Repeat(`{"a":`, maxDepth) + `1` + strings.Repeat("}", maxDepth+1),
	}
	for _, doc := range docs {
		if json.Valid([]byte(doc)) {
			t.Fatalf("test case %#q is valid JSON", doc)
		}
		if raw, ok := Field([]byte(doc)); ok {
			t.Errorf("Field(%#q) = %#q, true; want false", doc, raw)
		}
		if raw, ok := Field([]byte(doc), "usage"); ok {
			t.Errorf("Field(%#q, usage) = %#q, true; want false", doc, raw)
		}
	}

	deep := strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)
	if _, ok := Field([]byte(deep)); !ok {
		t.Errorf("Field rejects nesting at the maximum depth")
	}
}

// lookup finds the value at path with encoding/json.
func lookup(doc []byte, path ...string) (any, bool) {
	v, ok := decodeAny(doc)
	if !ok {
		return nil, false
	}
	for _, k := range path {
		m, isObj := v.(map[string]any)
		if !isObj {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func decodeAny(b []byte) (any, bool) {
	if !json.Valid(b) {
		return nil, false
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	return v, d.Decode(&v) == nil
}

// checkField compares Field with encoding/json on doc.
func checkField(t *testing.T, doc []byte, path ...string) {
	t.Helper()
	raw, ok := Field(doc, path...)
	if valid := json.Valid(doc); !valid {
		if ok {
			t.Fatalf("Field(%#q, %q) = %#q, true for invalid JSON", doc, path, raw)
		}
		return
	}
	want, found := lookup(doc, path...)
	if ok != found {
		t.Fatalf("Field(%#q, %q) found %v, encoding/json %v", doc, path, ok, found)
	}
	if !ok {
		return
	}
	if len(raw) == 0 || len(bytes.TrimSpace(raw)) != len(raw) {
		t.Fatalf("Field(%#q, %q) = %#q: not a trimmed value", doc, path, raw)
	}
	got, ok := decodeAny(raw)
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("Field(%#q, %q) = %#q, encoding/json found %#v", doc, path, raw, want)
	}
}

// TestFieldStrings puts every kind of byte that ends plain string content
// at every position of an eight-byte word, in keys and in values.
func TestFieldStrings(t *testing.T) {
	specials := []string{
		`\"`, `\\`, `\/`, `\n`, `\u00e9`, `\ud83d\ude00`, `\ud800`, "\x00", "\x1f", "\x7f",
		"\xff", "é", " ", "\t", `\x`, `\u00`, `"`,
	}
	for _, sp := range specials {
		for pre := range 17 {
			for post := range 10 {
				str := strings.Repeat("a", pre) + sp + strings.Repeat("b", post)
				checkFieldKeys(t, []byte(`{"`+str+`":1,"k":"`+str+`"}`))
			}
		}
	}
}

// TestFieldSpace puts runs of whitespace of every length everywhere it may
// go (Anthropic pads its events with spaces).
func TestFieldSpace(t *testing.T) {
	for n := range 20 {
		for _, sp := range []string{strings.Repeat(" ", n), strings.Repeat(" ", n) + "\t\r\n" + strings.Repeat(" ", n)} {
			doc := sp + "{" + sp + `"a"` + sp + ":" + sp + "[" + sp + "1" + sp + "," + sp + "2" + sp + "]" + sp + "," + sp + `"b":3` + sp + "}" + sp
			if raw, ok := Field([]byte(doc), "b"); !ok || string(raw) != "3" {
				t.Errorf("Field(%#q, b) = %#q, %v; want 3, true", doc, raw, ok)
			}
			checkFieldKeys(t, []byte(doc))
			checkField(t, []byte(doc+"x"))
		}
	}
}

// checkFieldKeys compares Field with encoding/json for every key path of
// up to two keys in doc.
func checkFieldKeys(t *testing.T, doc []byte) {
	t.Helper()
	checkField(t, doc)
	v, _ := lookup(doc)
	m, _ := v.(map[string]any)
	for k, v := range m {
		checkField(t, doc, k)
		m, _ := v.(map[string]any)
		for k2 := range m {
			checkField(t, doc, k, k2)
		}
	}
}

func TestFieldRecorded(t *testing.T) {
	arr := readTestdata(t, "gemini-array.json")
	paths := [][]string{
		nil, {"usageMetadata"}, {"usageMetadata", "totalTokenCount"}, {"candidates"},
		{"usageMetadata", "thoughtsTokenCount"}, {"modelVersion"}, {"missing"},
	}
	var elems [][]byte
	var s ArraySplitter
	err := s.Feed(arr, func(e []byte) error {
		elems = append(elems, bytes.Clone(e))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range append(elems, arr) {
		for _, p := range paths {
			checkField(t, doc, p...)
		}
	}
}

func TestFieldAllocs(t *testing.T) {
	doc := readTestdata(t, "gemini-array.json")
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := Field(doc, "usageMetadata"); ok {
			t.Fatal("found a key in an array")
		}
		if _, ok := Field(doc); !ok {
			t.Fatal("recorded document is invalid")
		}
		if _, ok := Field([]byte(`{"a":{"\u0062":{"c":1}}}`), "a", "b", "c"); !ok {
			t.Fatal("path not found")
		}
	})
	if allocs != 0 {
		t.Errorf("Field allocates %v times, want 0", allocs)
	}
}

func TestInt(t *testing.T) {
	tests := []struct {
		raw  string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"7", 7, true},
		{"-0", 0, true},
		{"-12", -12, true},
		{"123456789", 123456789, true},
		{strconv.FormatInt(math.MaxInt64, 10), math.MaxInt64, true},
		{strconv.FormatInt(math.MinInt64, 10), math.MinInt64, true},
		{"9223372036854775808", 0, false},
		{"-9223372036854775809", 0, false},
		{"99999999999999999999", 0, false},
		{"null", 0, false},
		{"", 0, false},
		{"-", 0, false},
		{"01", 0, false},
		{"-01", 0, false},
		{"+1", 0, false},
		{"1.0", 0, false},
		{"1e3", 0, false},
		{" 1", 0, false},
		{"1 ", 0, false},
		{`"1"`, 0, false},
		{"true", 0, false},
	}
	for _, tt := range tests {
		got, ok := Int([]byte(tt.raw))
		if got != tt.want || ok != tt.ok {
			t.Errorf("Int(%#q) = %d, %v; want %d, %v", tt.raw, got, ok, tt.want, tt.ok)
		}
	}
}

func TestBool(t *testing.T) {
	tests := []struct {
		raw   string
		v, ok bool
	}{
		{"true", true, true},
		{"false", false, true},
		{"null", false, false},
		{"True", false, false},
		{"1", false, false},
		{`"true"`, false, false},
		{"", false, false},
	}
	for _, tt := range tests {
		v, ok := Bool([]byte(tt.raw))
		if v != tt.v || ok != tt.ok {
			t.Errorf("Bool(%#q) = %v, %v; want %v, %v", tt.raw, v, ok, tt.v, tt.ok)
		}
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		raw  string
		want string
		ok   bool
	}{
		{`""`, "", true},
		{`"abc"`, "abc", true},
		{`"é😀"`, "é😀", true},
		{`"a\"b\\c\/d\b\f\n\r\t"`, "a\"b\\c/d\b\f\n\r\t", true},
		{`"\u00e9\ud83d\ude00"`, "é😀", true},
		{`"\ud800x"`, "\uFFFDx", true},
		{"\"\xff\"", "\uFFFD", true},
		{`null`, "", false},
		{`"`, "", false},
		{`"abc`, "", false},
		{`abc"`, "", false},
		{`"a"b"`, "", false},
		{`"a\"`, "", false},
		{`"\x"`, "", false},
		{"\"a\tb\"", "", false},
		{`"a" `, "", false},
		{`1`, "", false},
	}
	for _, tt := range tests {
		got, ok := String([]byte(tt.raw))
		if got != tt.want || ok != tt.ok {
			t.Errorf("String(%#q) = %q, %v; want %q, %v", tt.raw, got, ok, tt.want, tt.ok)
		}
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

// checkMembers: Members finds what Field finds, key by key, in one pass.
func checkMembers(t *testing.T, doc []byte, keys ...string) {
	t.Helper()
	vals := make([][]byte, len(keys))
	ok := Members(doc, keys, vals)
	_, valid := Field(doc)
	if ok != valid {
		t.Fatalf("Members(%#q) = %v, Field says valid = %v", doc, ok, valid)
	}
	for i, k := range keys {
		want, found := Field(doc, k)
		if found != (vals[i] != nil) || !bytes.Equal(vals[i], want) {
			t.Fatalf("Members(%#q)[%q] = %#q, Field = %#q, %v", doc, k, vals[i], want, found)
		}
	}
}

// checkElements compares Elements with encoding/json: the same validity
// and, for an array, the same elements in order.
func checkElements(t *testing.T, raw []byte) {
	t.Helper()
	var got [][]byte
	ok := Elements(raw, func(e []byte) bool { got = append(got, e); return true })
	var want []json.RawMessage
	err := json.Unmarshal(raw, &want)
	if ok != (err == nil) {
		t.Fatalf("Elements(%#q) = %v, encoding/json: %v", raw, ok, err)
	}
	if !ok {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("Elements(%#q) gave %d elements, encoding/json %d", raw, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("Elements(%#q)[%d] = %#q, encoding/json %#q", raw, i, got[i], want[i])
		}
	}
}

func TestElements(t *testing.T) {
	for _, raw := range []string{
		`[]`, ` [ ] `, `[1]`, `[1,"a",{"b":[2]},null, [3] ]`,
		`[{"type":"compaction","input_tokens":100},{"type":"message"}]`,
		`[1,]`, `[,1]`, `[1 2]`, `[1`, `[1] x`, `{"a":1}`, `"[1]"`, ``, `[[1]`,
	} {
		checkElements(t, []byte(raw))
	}
	// fn returning false stops the walk early.
	n := 0
	if !Elements([]byte(`[1,2,3]`), func([]byte) bool { n++; return n < 2 }) || n != 2 {
		t.Errorf("stopping after 2: %d calls", n)
	}
	raw := []byte(`[{"a":1},{"a":2}]`)
	if allocs := testing.AllocsPerRun(100, func() { Elements(raw, func([]byte) bool { return true }) }); allocs != 0 {
		t.Errorf("Elements allocates %v times", allocs)
	}
}

func TestMembers(t *testing.T) {
	for _, doc := range []string{
		`{"candidates":[{"content":{"parts":[{"text":"hi"}]}}],"usageMetadata":{"promptTokenCount":3},"modelVersion":"x"}`,
		`{"error":{"code":503},"usageMetadata":null}`,
		`{"a":1,"a":2,"b":{"a":3}}`,         // the last occurrence wins; nested keys are not members
		`[{"a":1}]`,                         // not an object: valid, no members
		`{"\u0061":true}`,                   // keys match unescaped
		`{"a":1,`,                           // truncated: nothing
		`{"a":1} x`,                         // trailing garbage: nothing
		"  {\"b\" : [1,2] , \"a\":\"x\"}  ", // spaces around
	} {
		checkMembers(t, []byte(doc), "a", "b", "usageMetadata", "candidates", "error", "missing")
	}
	vals := make([][]byte, 2)
	if !Members([]byte(`{"a":1,"a":[2],"b":{"a":3}}`), []string{"a", "b"}, vals) || string(vals[0]) != "[2]" || string(vals[1]) != `{"a":3}` {
		t.Errorf("Members = %q", vals)
	}
	doc, keys := []byte(`{"a":1,"b":2}`), []string{"a", "b"}
	if allocs := testing.AllocsPerRun(100, func() { Members(doc, keys, vals) }); allocs != 0 {
		t.Errorf("Members allocates %v times", allocs)
	}
}

func FuzzField(f *testing.F) {
	f.Add([]byte(`{"usage":{"a":1},"a":[1,"x"]}`), "usage", "a")
	f.Add([]byte(`{"a":{"b":1},"a":{"c":2}}`), "a", "b")
	f.Add([]byte(`{"us\u0061ge":{"\ud83d\ude00":1.5e3}}`), "usage", "😀")
	f.Add([]byte("{\"\xff\":{\"\\ud800\":null}}"), "\uFFFD", "\uFFFD")
	f.Add(readTestdata(f, "gemini-array.json"), "usageMetadata", "totalTokenCount")
	f.Fuzz(func(t *testing.T, doc []byte, k1, k2 string) {
		checkField(t, doc)
		checkField(t, doc, k1)
		checkField(t, doc, k1, k2)
		checkMembers(t, doc, k1, k2)
		checkElements(t, doc)
		// Arbitrary keys rarely occur in the document; also try its own.
		checkFieldKeys(t, doc)
		if raw, ok := Field(doc, k1); ok {
			// The helpers must agree with encoding/json too.
			if s, ok := String(raw); ok {
				var want string
				if err := json.Unmarshal(raw, &want); err != nil || s != want {
					t.Fatalf("String(%#q) = %q, encoding/json %q (%v)", raw, s, want, err)
				}
			}
			if n, ok := Int(raw); ok {
				var want int64
				if err := json.Unmarshal(raw, &want); err != nil || n != want {
					t.Fatalf("Int(%#q) = %d, encoding/json %d (%v)", raw, n, want, err)
				}
			}
		}
	})
}
