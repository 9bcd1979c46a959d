package mockprovider

import (
	"encoding/json"
	"strings"
	"testing"
)

// nestedArrays is a schema whose every level asks for 8 items of itself:
// followed naively, eight levels are 8⁸ (16.7 million) values.
const nestedArrays = `{"$defs":{"n":{"type":"array","minItems":8,"items":{"$ref":"#/$defs/n"}}},"$ref":"#/$defs/n"}`

// TestSchemaValueIsBounded: a client's schema cannot make the mock build
// more than maxSampleValues values for one answer.
func TestSchemaValueIsBounded(t *testing.T) {
	got := valueFromSchema(json.RawMessage(nestedArrays))
	if !json.Valid([]byte(got)) {
		t.Fatalf("not JSON: %.200s", got)
	}
	if n := strings.Count(got, "[") + strings.Count(got, "null"); n > maxSampleValues+1 {
		t.Errorf("%d values built, want at most %d", n, maxSampleValues)
	}
}

// FuzzSchemaValue: whatever schema a client sends, the mock answers valid
// JSON (an object for tool arguments) without hanging.
func FuzzSchemaValue(f *testing.F) {
	for _, seed := range []string{
		nestedArrays,
		`{"type":"object","properties":{"a":{"type":"string","format":"date"},"b":{"type":["integer","null"],"minimum":3}},"required":["a","b"]}`,
		`{"anyOf":[{"type":"null"},{"type":"array","items":{"enum":["x","y"]},"minItems":2}]}`,
		`{"$ref":"#/definitions/a~1b","definitions":{"a/b":{"const":7}}}`,
		`{"type":"number","exclusiveMinimum":"5"}`,
		`[]`, `null`, `{}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, schema []byte) {
		if v := valueFromSchema(schema); !json.Valid([]byte(v)) {
			t.Fatalf("valueFromSchema(%q) = %q, not JSON", schema, v)
		}
		args := argsFromSchema(schema)
		var obj map[string]any
		if err := json.Unmarshal([]byte(args), &obj); err != nil || obj == nil {
			t.Fatalf("argsFromSchema(%q) = %q, not a JSON object", schema, args)
		}
	})
}
