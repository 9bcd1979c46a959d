package injector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Operation is one RFC 6902 JSON patch operation.
type Operation struct {
	Op    string // "add", "remove" or "replace"
	Path  string // an RFC 6901 JSON pointer
	Value any    // for add and replace
}

// MarshalJSON writes the value for add and replace even when it is null.
func (o Operation) MarshalJSON() ([]byte, error) {
	if o.Op == "remove" {
		return json.Marshal(struct {
			Op   string `json:"op"`
			Path string `json:"path"`
		}{o.Op, o.Path})
	}
	return json.Marshal(struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}{o.Op, o.Path, o.Value})
}

// CreatePatch returns the JSON patch that turns original into mutated,
// both encoded with encoding/json (the same Go type, so that fields either
// side does not know cannot show up as differences). It is computed as a
// diff rather than written op by op, so it is right by construction for
// absent maps and lists; entries added at the front or the back of a list
// become adds at those places, so nothing else in the list is rewritten.
func CreatePatch(original, mutated any) ([]Operation, error) {
	a, err := toJSONValue(original)
	if err != nil {
		return nil, fmt.Errorf("injector: patch: original: %w", err)
	}
	b, err := toJSONValue(mutated)
	if err != nil {
		return nil, fmt.Errorf("injector: patch: mutated: %w", err)
	}
	return diff(nil, "", a, b), nil
}

// toJSONValue encodes v and decodes it into maps, slices and json.Number.
func toJSONValue(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var out any
	if err := d.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

// diff appends to ops the operations turning a into b at path.
func diff(ops []Operation, path string, a, b any) []Operation {
	if reflect.DeepEqual(a, b) {
		return ops
	}
	switch a := a.(type) {
	case map[string]any:
		if b, ok := b.(map[string]any); ok {
			return diffObject(ops, path, a, b)
		}
	case []any:
		if b, ok := b.([]any); ok {
			return diffArray(ops, path, a, b)
		}
	}
	return append(ops, Operation{Op: "replace", Path: path, Value: b})
}

func diffObject(ops []Operation, path string, a, b map[string]any) []Operation {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys) // a stable patch for a given pair
	for _, k := range keys {
		p := path + "/" + EscapePointer(k)
		av, inA := a[k]
		bv, inB := b[k]
		switch {
		case !inB:
			ops = append(ops, Operation{Op: "remove", Path: p})
		case !inA:
			ops = append(ops, Operation{Op: "add", Path: p, Value: bv})
		default:
			ops = diff(ops, p, av, bv)
		}
	}
	return ops
}

func diffArray(ops []Operation, path string, a, b []any) []Operation {
	switch {
	case len(a) == len(b):
		for i := range a {
			ops = diff(ops, path+"/"+strconv.Itoa(i), a[i], b[i])
		}
		return ops
	case len(b) > len(a):
		n := len(b) - len(a)
		if reflect.DeepEqual(a, b[n:]) { // inserted at the front, in order
			for i := range n {
				ops = append(ops, Operation{Op: "add", Path: path + "/" + strconv.Itoa(i), Value: b[i]})
			}
			return ops
		}
		if reflect.DeepEqual(a, b[:len(a)]) { // appended
			for _, v := range b[len(a):] {
				ops = append(ops, Operation{Op: "add", Path: path + "/-", Value: v})
			}
			return ops
		}
	}
	return append(ops, Operation{Op: "replace", Path: path, Value: b})
}

// EscapePointer escapes one reference token of an RFC 6901 JSON pointer:
// "~" as "~0", then "/" as "~1" (an annotation key like
// kubectl.kubernetes.io/default-container holds a slash).
func EscapePointer(token string) string {
	return strings.ReplaceAll(strings.ReplaceAll(token, "~", "~0"), "/", "~1")
}
