// Package strictyaml decodes the operator's YAML files (the serve config and
// the catalog overlay) strictly: one document, no key that no field takes,
// and errors in the file's words rather than Go's type names.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Decode decodes data into v. An empty file leaves v as it is.
func Decode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return errors.New(named(data, te).Error())
		}
		return errors.New(unknownField.ReplaceAllString(err.Error(), `unknown key "$1"`))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("want one YAML document, found more")
	}
	return nil
}

// unknownField is the decoder's wording for a key no field takes, which
// names a Go type the file's author never sees.
var unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// badValue is the decoder's wording for a value of the wrong type:
// "line 3: cannot unmarshal !!str `lots` into int".
var badValue = regexp.MustCompile("^line ([0-9]+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into ")

// named rewrites te's errors in the file's words: a key no field takes by
// its name, a value of the wrong type prefixed with the key it is under
// (limits.max_keys, keys[1]) when the line tells it apart.
func named(data []byte, te *yaml.TypeError) error {
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	out := make([]string, len(te.Errors))
	for i, e := range te.Errors {
		e = unknownField.ReplaceAllString(e, `unknown key "$1"`)
		if m := badValue.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			var paths []string
			walk(&root, "", func(n *yaml.Node, path string) {
				if path != "" && n.Line == line && n.ShortTag() == m[2] && (m[3] == "" || strings.HasPrefix(n.Value, strings.TrimSuffix(m[3], "..."))) {
					paths = append(paths, path)
				}
			})
			if len(paths) == 1 {
				e = fmt.Sprintf("line %d: %s: %s", line, paths[0], strings.TrimPrefix(e, "line "+m[1]+": "))
			}
		}
		out[i] = e
	}
	return &yaml.TypeError{Errors: out}
}

// walk calls f for n and every node under it, with its key path.
func walk(n *yaml.Node, path string, f func(*yaml.Node, string)) {
	f(n, path)
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walk(c, path, f)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if path != "" {
				key = path + "." + key
			}
			walk(n.Content[i+1], key, f)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			walk(c, fmt.Sprintf("%s[%d]", path, i), f)
		}
	}
}
