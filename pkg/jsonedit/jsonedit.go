// Package jsonedit edits the top level of a JSON object in place of a full
// decode and re-encode: the client's bytes are kept as they were except for
// the members the gateway changes, which is both faster and safer (numbers,
// key order and unknown fields survive untouched).
package jsonedit

import (
	"bytes"
	"errors"

	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
)

// ErrNotObject is returned when the document is not a JSON object.
var ErrNotObject = errors.New("jsonedit: not a JSON object")

// Member is one top-level member.
type Member struct {
	// Key is the decoded key. Keys are compared decoded, as every JSON
	// parser upstream reads them: "mod\u0065l" is "model", and a rule that
	// compared raw bytes could be walked around with an escape.
	Key string
	// RawKey is the key as written (without quotes), kept for output.
	RawKey []byte
	// Value is the raw, undecoded value.
	Value []byte
}

// Object is a parsed top-level object.
type Object struct {
	Doc     []byte
	Members []Member
}

// Parse scans and validates doc, an object, without decoding its values.
func Parse(doc []byte) (*Object, error) {
	o := &Object{Doc: doc, Members: make([]Member, 0, 16)}
	i := skipWS(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return nil, ErrNotObject
	}
	i = skipWS(doc, i+1)
	if i < len(doc) && doc[i] == '}' {
		return o, trailing(doc, i+1)
	}
	for {
		if i >= len(doc) || doc[i] != '"' {
			return nil, ErrNotObject
		}
		kend, ok := jsonscan.ValueEnd(doc, i)
		if !ok {
			return nil, ErrNotObject
		}
		raw := doc[i+1 : kend-1]
		key, ok := decodeKey(doc[i:kend], raw)
		if !ok {
			return nil, ErrNotObject
		}
		i = skipWS(doc, kend)
		if i >= len(doc) || doc[i] != ':' {
			return nil, ErrNotObject
		}
		i = skipWS(doc, i+1)
		vend, ok := jsonscan.ValueEnd(doc, i)
		if !ok {
			return nil, ErrNotObject
		}
		o.Members = append(o.Members, Member{Key: key, RawKey: raw, Value: doc[i:vend]})
		i = skipWS(doc, vend)
		if i >= len(doc) {
			return nil, ErrNotObject
		}
		switch doc[i] {
		case ',':
			i = skipWS(doc, i+1)
		case '}':
			return o, trailing(doc, i+1)
		default:
			return nil, ErrNotObject
		}
	}
}

// decodeKey returns the key as a parser reads it; plain keys (the common
// case) cost no decoding.
func decodeKey(quoted, raw []byte) (string, bool) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), true
	}
	return jsonscan.String(quoted)
}

func trailing(doc []byte, i int) error {
	if skipWS(doc, i) != len(doc) {
		return ErrNotObject
	}
	return nil
}

// Get returns the value of key (the last one if repeated, as encoding/json
// does), or nil.
func (o *Object) Get(key string) []byte {
	for i := len(o.Members) - 1; i >= 0; i-- {
		if o.Members[i].Key == key {
			return o.Members[i].Value
		}
	}
	return nil
}

// Edit is one change: Value nil deletes the key, otherwise it is set
// (replacing every occurrence, however its key is escaped, or appended at
// the end).
type Edit struct {
	Key   string
	Value []byte
}

// Apply returns a new document with the edits applied. The original is not
// modified.
func (o *Object) Apply(edits ...Edit) []byte {
	out := make([]byte, 0, len(o.Doc)+64)
	out = append(out, '{')
	first := true
	emit := func(key string, rawKey, val []byte) {
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, '"')
		if rawKey != nil {
			out = append(out, rawKey...)
		} else {
			out = append(out, key...)
		}
		out = append(out, '"', ':')
		out = append(out, val...)
	}
	done := make([]bool, len(edits))
	for _, m := range o.Members {
		idx := -1
		for j, e := range edits {
			if m.Key == e.Key {
				idx = j
				break
			}
		}
		if idx < 0 {
			emit("", m.RawKey, m.Value)
			continue
		}
		if edits[idx].Value == nil || done[idx] {
			continue
		}
		done[idx] = true
		emit(edits[idx].Key, nil, edits[idx].Value)
	}
	for j, e := range edits {
		if !done[j] && e.Value != nil {
			emit(e.Key, nil, e.Value)
		}
	}
	return append(out, '}')
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// FirstElement returns the first element of a JSON array, or nil.
func FirstElement(arr []byte) []byte {
	i := skipWS(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return nil
	}
	i = skipWS(arr, i+1)
	end, ok := jsonscan.ValueEnd(arr, i)
	if !ok {
		return nil
	}
	return arr[i:end]
}

// IsEmptyArray reports whether raw is `[]` (with any inner whitespace).
func IsEmptyArray(raw []byte) bool {
	i := skipWS(raw, 0)
	if i >= len(raw) || raw[i] != '[' {
		return false
	}
	i = skipWS(raw, i+1)
	return i < len(raw) && raw[i] == ']'
}

// IsNull reports whether raw is absent or the literal null.
func IsNull(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}
