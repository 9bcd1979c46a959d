package injector

import (
	"encoding/json"
	"reflect"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
)

func TestEscapePointer(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"kubectl.kubernetes.io/default-container", "kubectl.kubernetes.io~1default-container"},
		{"a~b", "a~0b"},
		{"~1", "~01"}, // "~" first, or "/" escapes would be re-escaped
		{"/~/", "~1~0~1"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := EscapePointer(tt.in); got != tt.want {
			t.Errorf("EscapePointer(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCreatePatch(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want string // the patch, as JSON
	}{
		{"equal", `{"a":[1,2],"b":{"c":null}}`, `{"a":[1,2],"b":{"c":null}}`, `null`},
		{"annotations map absent", `{"metadata":{"name":"p"}}`, `{"metadata":{"name":"p","annotations":{"x/y":"1"}}}`,
			`[{"op":"add","path":"/metadata/annotations","value":{"x/y":"1"}}]`},
		{"key with slash and tilde", `{"m":{"a":"1"}}`, `{"m":{"a":"1","k.io/x~y":"2"}}`,
			`[{"op":"add","path":"/m/k.io~1x~0y","value":"2"}]`},
		{"container with no env", `{"c":[{"name":"app"}]}`, `{"c":[{"name":"app","env":[{"name":"A"}]}]}`,
			`[{"op":"add","path":"/c/0/env","value":[{"name":"A"}]}]`},
		{"prepend to a list", `{"env":[{"name":"U"}]}`, `{"env":[{"name":"A"},{"name":"B"},{"name":"U"}]}`,
			`[{"op":"add","path":"/env/0","value":{"name":"A"}},{"op":"add","path":"/env/1","value":{"name":"B"}}]`},
		{"append to a list", `{"l":[1]}`, `{"l":[1,2,3]}`,
			`[{"op":"add","path":"/l/-","value":2},{"op":"add","path":"/l/-","value":3}]`},
		{"insert in the middle replaces", `{"l":[1,3]}`, `{"l":[1,2,3]}`, `[{"op":"replace","path":"/l","value":[1,2,3]}]`},
		{"remove a key", `{"a":1,"b":2}`, `{"a":1}`, `[{"op":"remove","path":"/b"}]`},
		{"set to null", `{"a":1}`, `{"a":null}`, `[{"op":"replace","path":"/a","value":null}]`},
		{"type change", `{"a":{"b":1}}`, `{"a":[1]}`, `[{"op":"replace","path":"/a","value":[1]}]`},
		{"big numbers kept exact", `{"n":1}`, `{"n":12345678901234567890}`, `[{"op":"replace","path":"/n","value":12345678901234567890}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a, b any
			if err := json.Unmarshal([]byte(tt.a), &a); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.b), &b); err != nil {
				t.Fatal(err)
			}
			ops, err := CreatePatch(json.RawMessage(tt.a), json.RawMessage(tt.b))
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(ops)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("patch\n got %s\nwant %s", got, tt.want)
			}
			checkPatchApplies(t, tt.a, tt.b, got)
		})
	}
}

// checkPatchApplies applies patch to a with an independent RFC 6902
// implementation and compares the result with b.
func checkPatchApplies(t *testing.T, a, b string, patch []byte) {
	t.Helper()
	if string(patch) == "null" {
		patch = []byte("[]")
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("decode patch %s: %v", patch, err)
	}
	out, err := p.Apply([]byte(a))
	if err != nil {
		t.Fatalf("apply %s to %s: %v", patch, a, err)
	}
	var got, want any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(b), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("patched\n got %s\nwant %s\npatch %s", out, b, patch)
	}
}

// FuzzCreatePatch: for any two JSON documents, the patch turns the first
// into the second.
func FuzzCreatePatch(f *testing.F) {
	f.Add(`{"a":[1,2]}`, `{"a":[0,1,2],"b/c":{"~":null}}`)
	f.Add(`{"spec":{"containers":[{"name":"x"}]}}`, `{"spec":{"containers":[{"name":"x","env":[]}],"initContainers":[{}]}}`)
	f.Add(`[1,2,3]`, `[3]`)
	f.Add(`{}`, `{"":{"":""}}`)
	f.Fuzz(func(t *testing.T, a, b string) {
		var av, bv any
		if json.Unmarshal([]byte(a), &av) != nil || json.Unmarshal([]byte(b), &bv) != nil {
			return
		}
		_, aObj := av.(map[string]any)
		_, bObj := bv.(map[string]any)
		if !aObj || !bObj {
			return // the webhook patches objects into objects
		}
		ops, err := CreatePatch(json.RawMessage(a), json.RawMessage(b))
		if err != nil {
			t.Fatal(err)
		}
		patch, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		checkPatchApplies(t, a, b, patch)
	})
}
