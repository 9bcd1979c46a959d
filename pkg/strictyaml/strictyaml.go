// Package strictyaml decodes the operator's YAML files (the serve config and
// the catalog overlay) strictly: one document, no key that no field takes,
// and errors in the file's words rather than Go's type names.
package strictyaml

import (
	"bytes"
	"errors"
	"io"
	"regexp"

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
