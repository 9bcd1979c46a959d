package strictyaml

import (
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	type file struct {
		Listen string   `yaml:"listen"`
		Keys   []string `yaml:"keys"`
		Limits struct {
			Max int `yaml:"max"`
		} `yaml:"limits"`
	}
	for _, c := range []struct {
		name, in string
		want     file
		err      string // substring; "" means no error
		notInErr string
	}{
		{name: "empty file", in: "", want: file{}},
		{name: "fields", in: "listen: :8080\nkeys: [a, b]\n", want: file{Listen: ":8080", Keys: []string{"a", "b"}}},
		{name: "misspelt key named in the file's words", in: "listn: :8080\n", err: `line 1: unknown key "listn"`, notInErr: "strictyaml.file"},
		{name: "wrong type names the key", in: "keys: 3\n", err: "line 1: keys: cannot unmarshal"},
		{name: "wrong type names the nested key", in: "listen: a\nlimits:\n  max: lots\n", err: "line 3: limits.max: cannot unmarshal !!str `lots` into int"},
		{name: "wrong type in a flow mapping", in: "limits: {max: [1]}\n", err: "line 1: limits.max: cannot unmarshal"},
		{name: "wrong type in a list names the key", in: "keys:\n  - a\n  - [b]\n", err: "line 3: keys[1]: cannot unmarshal"},
		{name: "two documents", in: "listen: a\n---\nlisten: b\n", err: "want one YAML document, found more"},
		{name: "not YAML", in: "listen: [\n", err: "yaml:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got file
			err := Decode([]byte(c.in), &got)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("Decode: %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("Decode error %v, want it to contain %q", err, c.err)
			case c.notInErr != "" && strings.Contains(err.Error(), c.notInErr):
				t.Fatalf("Decode error %q names Go's type %q", err, c.notInErr)
			}
			if c.err == "" && (got.Listen != c.want.Listen || strings.Join(got.Keys, ",") != strings.Join(c.want.Keys, ",")) {
				t.Errorf("decoded %+v, want %+v", got, c.want)
			}
		})
	}
}

// FuzzDecode: no input makes Decode panic, and what it accepts it accepts
// again the same way.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{"", "listen: a\n", "listn: a\n", "keys: [a, b]\n", "a: b\n---\nc: d\n", "listen: [\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var a, b struct {
			Listen string   `yaml:"listen"`
			Keys   []string `yaml:"keys"`
		}
		errA := Decode(in, &a)
		errB := Decode(in, &b)
		if (errA == nil) != (errB == nil) || a.Listen != b.Listen || len(a.Keys) != len(b.Keys) {
			t.Fatalf("two decodes of %q differ: %v / %v", in, errA, errB)
		}
	})
}
