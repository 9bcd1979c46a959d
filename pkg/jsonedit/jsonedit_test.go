package jsonedit

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestApply(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		edits []Edit
		want  string
	}{
		{"set existing keeps order", `{"a":1,"store":true,"b":[1,2]}`, []Edit{{"store", []byte("false")}}, `{"a":1,"store":false,"b":[1,2]}`},
		{"append missing", `{"a":1}`, []Edit{{"store", []byte("false")}}, `{"a":1,"store":false}`},
		{"empty object", ` { } `, []Edit{{"k", []byte(`"v"`)}}, `{"k":"v"}`},
		{"delete", `{"a":1,"b":2}`, []Edit{{"a", nil}}, `{"b":2}`},
		{"duplicate key collapses to one", `{"a":1,"a":2,"c":3}`, []Edit{{"a", []byte("9")}}, `{"a":9,"c":3}`},
		{"whitespace and nesting survive", "{\n \"m\" : {\"x\": [1, {\"y\": \"}\"}]},\n \"n\":\"a\\\"b\"}", []Edit{{"z", []byte("0")}}, `{"m":{"x": [1, {"y": "}"}]},"n":"a\"b","z":0}`},
		{"several edits", `{"model":"a","stream":true}`, []Edit{{"model", []byte(`"b"`)}, {"store", []byte("false")}, {"stream", nil}}, `{"model":"b","store":false}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := Parse([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			got := string(o.Apply(tt.edits...))
			if got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Fatalf("result is not JSON: %s", got)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, doc := range []string{``, `[]`, `"x"`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":1} x`, `{a:1}`, `{"a":tru}`} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("Parse(%q) accepted", doc)
		}
	}
}

func TestGetLastWins(t *testing.T) {
	o, err := Parse([]byte(`{"model":"a","model":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(o.Get("model")); got != `"b"` {
		t.Fatalf("Get = %s, want the last value", got)
	}
	if o.Get("missing") != nil {
		t.Fatal("missing key has a value")
	}
}

func TestArrayHelpers(t *testing.T) {
	if got := string(FirstElement([]byte(` [ {"a":[1]} , 2 ]`))); got != `{"a":[1]}` {
		t.Errorf("FirstElement = %q", got)
	}
	if FirstElement([]byte(`[]`)) != nil || FirstElement([]byte(`{}`)) != nil {
		t.Error("FirstElement of an empty array or a non-array")
	}
	for raw, want := range map[string]bool{`[]`: true, ` [ ] `: true, `[1]`: false, `null`: false, ``: false} {
		if IsEmptyArray([]byte(raw)) != want {
			t.Errorf("IsEmptyArray(%q) != %v", raw, want)
		}
	}
	for raw, want := range map[string]bool{``: true, ` null `: true, `0`: false, `"null"`: false} {
		if IsNull([]byte(raw)) != want {
			t.Errorf("IsNull(%q) != %v", raw, want)
		}
	}
}

// FuzzParseApply checks that any object Parse accepts is valid JSON, that
// Apply with no edits keeps every member, and that a set key reads back.
func FuzzParseApply(f *testing.F) {
	for _, s := range []string{`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false}}`, `{}`, `{"a":[1,{"b":"\u00e9"}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		o, err := Parse(doc)
		if err != nil {
			return
		}
		if !json.Valid(doc) {
			t.Fatalf("Parse accepted invalid JSON %q", doc)
		}
		var before map[string]any
		if json.Unmarshal(o.Apply(), &before) != nil {
			t.Fatalf("Apply() produced invalid JSON from %q", doc)
		}
		var orig map[string]any
		_ = json.Unmarshal(doc, &orig)
		if !reflect.DeepEqual(before, orig) {
			t.Fatalf("Apply() changed the document: %v vs %v", before, orig)
		}
		out := o.Apply(Edit{Key: "store", Value: []byte("false")})
		var after map[string]any
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("Apply(store) produced invalid JSON: %s", out)
		}
		if after["store"] != false {
			t.Fatalf("store not set in %s", out)
		}
	})
}

// An escaped key is the same key to every parser upstream; rules and edits
// must see it too.
func TestEscapedKeysAreDecoded(t *testing.T) {
	o, err := Parse([]byte(`{"model":"a","mod\u0065l":"b","stor\u0065":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(o.Get("model")); got != `"b"` {
		t.Errorf("Get(model) = %s, want the escaped (last) one", got)
	}
	got := string(o.Apply(Edit{Key: "store", Value: []byte("false")}, Edit{Key: "model", Value: []byte(`"c"`)}))
	if want := `{"model":"c","store":false}`; got != want {
		t.Errorf("Apply = %s, want %s", got, want)
	}
	if _, err := Parse([]byte(`{"bad\u00zz":1}`)); err == nil {
		t.Error("invalid escape in a key accepted")
	}
}
