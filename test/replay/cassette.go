// Package replay replays provider traffic recorded by other open-source
// projects (testdata/recorded/, see its SOURCES.md) through the gateway.
//
// This file loads the cassette formats found there, and the variants the
// same source repositories write today, into one normalised list of
// interactions. The format is decided per interaction by its shape, not by
// the file's version number:
//
//   - go-vcr (envoyproxy-ai-gateway/; cassette versions 1 and 2, go-vcr v1
//     to v4): request.url, request.body and response.body are raw strings;
//     response.code (or a "200 OK" response.status).
//   - vcrpy v1 (most folders): request.uri, request.body (a string, null or
//     !!binary, or a mapping aiohttp recordings store decoded),
//     response.body.string (raw text or !!binary, the latter
//     gzip-compressed when the recorded headers say Content-Encoding: gzip),
//     response.status.code.
//   - pydantic-ai's vcrpy serializer: like vcrpy, but JSON bodies are stored
//     decoded under parsed_body (a YAML mapping) and re-encoded here with
//     encoding/json; non-JSON bodies (SSE) stay under body.string.
//   - cassetter (pydantic-ai's recorder since 2026): bodies are typed,
//     body: {type: json|text|binary|none, content: ...} (json content is
//     the decoded document, text a string, binary lowercase hex), and
//     response.status is a bare integer. Bodies are stored decompressed.
//
// A cassetter file may hold only gRPC or WebSocket interactions
// (grpc_interactions, ws_interactions); it has no HTTP interaction to
// replay and loads as none.
//
// Bodies come back as bytes with any gzip removed, so they are what a
// provider sends a client that asked for identity encoding.
package replay

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Format names a cassette format.
type Format string

const (
	FormatGoVCR     Format = "go-vcr"
	FormatVCRPy     Format = "vcrpy-v1"
	FormatPydantic  Format = "pydantic-ai"
	FormatCassetter Format = "cassetter"
)

// Interaction is one recorded request and its response.
type Interaction struct {
	// File is the cassette path relative to the recorded directory, with
	// forward slashes, e.g. "openinference/test_cached_tokens.yaml".
	File string
	// Index is the interaction's position in its cassette, from 0.
	Index  int
	Format Format

	// Method is upper case, as sent, whatever case the recorder stored.
	Method string
	// URL is the recorded request URL; Host, Path and RawQuery are its
	// parts (Path unescaped, RawQuery as recorded).
	URL      string
	Host     string
	Path     string
	RawQuery string
	// RequestHeader are the recorded request headers (whatever the
	// recorder kept; credentials were replaced by the original projects).
	RequestHeader http.Header
	RequestBody   []byte

	Status int
	// Header are the recorded response headers.
	Header http.Header
	// Body is the response body, gunzipped when it was stored compressed.
	Body []byte
	// Gzipped is set when the stored body was gzip-compressed.
	Gzipped bool
}

// Name identifies the interaction in test names: "file#index".
func (it Interaction) Name() string { return it.File + "#" + strconv.Itoa(it.Index) }

// ContentType is the recorded response content type, "" when the recorder
// kept no headers.
func (it Interaction) ContentType() string { return it.Header.Get("Content-Type") }

// IsSSE reports whether the response is a text/event-stream.
func (it Interaction) IsSSE() bool {
	return strings.HasPrefix(strings.ToLower(it.ContentType()), "text/event-stream")
}

// RecordedDir is testdata/recorded in this module.
func RecordedDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", "testdata", "recorded"))
}

// Cassettes lists every *.yaml under dir, relative, sorted.
func Cassettes(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".yaml") {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	sort.Strings(out)
	return out, err
}

// LoadAll loads every cassette under dir.
func LoadAll(dir string) ([]Interaction, error) {
	files, err := Cassettes(dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("replay: no cassettes under %s", dir)
	}
	var all []Interaction
	for _, f := range files {
		its, err := LoadFile(dir, f)
		if err != nil {
			return nil, err
		}
		all = append(all, its...)
	}
	return all, nil
}

// LoadFile loads one cassette; rel is its path under dir.
func LoadFile(dir, rel string) ([]Interaction, error) {
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	its, err := Parse(rel, data)
	if err != nil {
		return nil, fmt.Errorf("replay: %s: %w", rel, err)
	}
	return its, nil
}

// Parse reads one cassette's bytes; name is used for Interaction.File.
func Parse(name string, data []byte) ([]Interaction, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a YAML mapping")
	}
	root := doc.Content[0]
	switch v := scalar(get(root, "version")); v {
	case "", "1", "2": // cassetter omits it; go-vcr writes 1 or 2, vcrpy 1
	default:
		return nil, fmt.Errorf("unknown cassette version %q", v)
	}
	list := get(root, "interactions")
	if list == nil || list.Kind == yaml.ScalarNode && list.Tag == "!!null" {
		if get(root, "grpc_interactions") != nil || get(root, "ws_interactions") != nil {
			return nil, nil // gRPC or WebSocket only: nothing over HTTP
		}
		return nil, errors.New("no interactions list")
	}
	if list.Kind != yaml.SequenceNode {
		return nil, errors.New("interactions is not a list")
	}
	var out []Interaction
	for i, n := range list.Content {
		var it Interaction
		var err error
		req := get(n, "request")
		switch {
		case req == nil:
			err = errors.New("no request")
		case get(req, "uri") != nil:
			it, err = parseVCRPy(n)
		case get(req, "url") != nil:
			it, err = parseGoVCR(n)
		default:
			err = errors.New("request has neither uri (vcrpy, cassetter) nor url (go-vcr)")
		}
		if err != nil {
			return nil, fmt.Errorf("interaction %d: %w", i, err)
		}
		it.File, it.Index = name, i
		if err := it.splitURL(); err != nil {
			return nil, fmt.Errorf("interaction %d: %w", i, err)
		}
		if err := it.decodeBody(); err != nil {
			return nil, fmt.Errorf("interaction %d: %w", i, err)
		}
		out = append(out, it)
	}
	return out, nil
}

// parseGoVCR reads a go-vcr v2 interaction.
func parseGoVCR(n *yaml.Node) (Interaction, error) {
	req, resp := get(n, "request"), get(n, "response")
	if req == nil || resp == nil {
		return Interaction{}, errors.New("missing request or response")
	}
	it := Interaction{Format: FormatGoVCR}
	it.Method = method(get(req, "method"))
	it.URL = scalar(get(req, "url"))
	it.RequestBody = []byte(scalar(get(req, "body")))
	h, err := headers(get(req, "headers"))
	if err != nil {
		return it, fmt.Errorf("request headers: %w", err)
	}
	it.RequestHeader = h
	code := scalar(get(resp, "code"))
	if code == "" { // only the status line: "200 OK"
		code, _, _ = strings.Cut(scalar(get(resp, "status")), " ")
	}
	if it.Status, err = strconv.Atoi(code); err != nil {
		return it, fmt.Errorf("response code: %w", err)
	}
	if it.Header, err = headers(get(resp, "headers")); err != nil {
		return it, fmt.Errorf("response headers: %w", err)
	}
	it.Body = []byte(scalar(get(resp, "body")))
	return it, nil
}

// parseVCRPy reads a vcrpy v1 interaction, including pydantic-ai's
// parsed_body variant and cassetter's typed bodies and integer status.
func parseVCRPy(n *yaml.Node) (Interaction, error) {
	req, resp := get(n, "request"), get(n, "response")
	if req == nil || resp == nil {
		return Interaction{}, errors.New("missing request or response")
	}
	it := Interaction{Format: FormatVCRPy}
	it.Method = method(get(req, "method"))
	it.URL = scalar(get(req, "uri"))
	var err error
	if it.RequestBody, err = vcrBody(&it, req); err != nil {
		return it, fmt.Errorf("request body: %w", err)
	}
	if it.RequestHeader, err = headers(get(req, "headers")); err != nil {
		return it, fmt.Errorf("request headers: %w", err)
	}
	status := get(resp, "status")
	code := scalar(status) // cassetter: status: 200
	if status != nil && status.Kind == yaml.MappingNode {
		code = scalar(get(status, "code")) // vcrpy: status: {code: 200, message: OK}
	}
	if it.Status, err = strconv.Atoi(code); err != nil {
		return it, fmt.Errorf("response status: %w", err)
	}
	if it.Header, err = headers(get(resp, "headers")); err != nil {
		return it, fmt.Errorf("response headers: %w", err)
	}
	if it.Body, err = vcrBody(&it, resp); err != nil {
		return it, fmt.Errorf("response body: %w", err)
	}
	return it, nil
}

// method reads a recorded request method in upper case, as it went on the
// wire: some recordings store it lower case (pydantic-ai's Google ones:
// "post").
func method(n *yaml.Node) string { return strings.ToUpper(scalar(n)) }

// vcrBody reads the body of a vcrpy or cassetter request or response (m)
// and marks the format it was stored in on it.
func vcrBody(it *Interaction, m *yaml.Node) ([]byte, error) {
	if pb := get(m, "parsed_body"); pb != nil {
		it.Format = FormatPydantic
		return nodeJSON(pb)
	}
	body := get(m, "body")
	if body == nil || body.Kind != yaml.MappingNode {
		return bodyBytes(body) // vcrpy request: a string, null or !!binary
	}
	if isTypedBody(body) {
		it.Format = FormatCassetter
		return typedBody(body)
	}
	if s := get(body, "string"); s != nil || len(body.Content) == 0 {
		return bodyBytes(s) // vcrpy response: {string: ...}
	}
	// A mapping that is neither: a JSON body stored decoded (aiohttp
	// recordings do this for requests).
	return nodeJSON(body)
}

// typedBodyTypes are the values of a cassetter body's type.
var typedBodyTypes = []string{"json", "text", "binary", "none"}

// isTypedBody reports whether a body mapping is cassetter's envelope: a
// known type and no key but type and content (the rule cassetter itself
// reads by).
func isTypedBody(n *yaml.Node) bool {
	if !slices.Contains(typedBodyTypes, scalar(get(n, "type"))) {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i].Value; k != "type" && k != "content" {
			return false
		}
	}
	return true
}

// typedBody reads cassetter's {type, content} body.
func typedBody(n *yaml.Node) ([]byte, error) {
	c := get(n, "content")
	if c == nil || c.Kind == yaml.ScalarNode && c.Tag == "!!null" {
		return nil, nil
	}
	switch t := scalar(get(n, "type")); t {
	case "json": // the decoded document, of any JSON type
		return nodeJSON(c)
	case "text":
		return bodyBytes(c)
	case "binary": // lowercase hex; cassetter falls back to text if it is not
		if c.Kind != yaml.ScalarNode {
			return nil, errors.New("binary content is not a string")
		}
		if b, err := hex.DecodeString(c.Value); err == nil {
			return b, nil
		}
		return []byte(c.Value), nil
	default: // none
		return nil, nil
	}
}

func (it *Interaction) splitURL() error {
	u, err := url.Parse(it.URL)
	if err != nil {
		return err
	}
	if u.Host == "" {
		return fmt.Errorf("request URL %q has no host", it.URL)
	}
	it.Host, it.Path, it.RawQuery = u.Host, u.Path, u.RawQuery
	return nil
}

// decodeBody gunzips a body stored compressed. The gzip magic decides, not
// only the header: some recorders keep Content-Encoding: gzip on a body
// they already decoded.
func (it *Interaction) decodeBody() error {
	if len(it.Body) < 2 || it.Body[0] != 0x1f || it.Body[1] != 0x8b {
		return nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(it.Body))
	if err != nil {
		return fmt.Errorf("gzip body: %w", err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		return fmt.Errorf("gzip body: %w", err)
	}
	it.Body, it.Gzipped = plain, true
	return nil
}

// get returns the value of key in a mapping node, or nil.
func get(n *yaml.Node, key string) *yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// scalar returns a scalar node's text ("" for null or a missing node).
func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return ""
	}
	return n.Value
}

// bodyBytes reads a body scalar: a string, null, or !!binary (base64).
func bodyBytes(n *yaml.Node) ([]byte, error) {
	if n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("body is a YAML %v, want a scalar", n.Kind)
	}
	if n.Tag == "!!binary" {
		clean := strings.Map(func(r rune) rune {
			if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
				return -1
			}
			return r
		}, n.Value)
		return base64.StdEncoding.DecodeString(clean)
	}
	return []byte(n.Value), nil
}

// headers reads a header mapping whose values are lists (or single
// scalars).
func headers(n *yaml.Node) (http.Header, error) {
	h := http.Header{}
	if n == nil || n.Tag == "!!null" {
		return h, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("headers are a YAML %v, want a mapping", n.Kind)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, v := n.Content[i].Value, n.Content[i+1]
		switch v.Kind {
		case yaml.SequenceNode:
			for _, e := range v.Content {
				h.Add(name, e.Value)
			}
		case yaml.ScalarNode:
			h.Add(name, v.Value)
		default:
			return nil, fmt.Errorf("header %s is a YAML %v", name, v.Kind)
		}
	}
	return h, nil
}

// nodeJSON re-encodes a decoded JSON body (pydantic-ai's parsed_body,
// cassetter's json content) as JSON.
// Key order becomes encoding/json's (sorted); scalars keep their YAML type,
// and a scalar YAML would read as a timestamp stays the string it was.
func nodeJSON(n *yaml.Node) ([]byte, error) {
	v, err := nodeValue(n)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func nodeValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return nil, errors.New("empty document")
		}
		return nodeValue(n.Content[0])
	case yaml.AliasNode:
		return nodeValue(n.Alias)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := nodeValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[n.Content[i].Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for _, e := range n.Content {
			v, err := nodeValue(e)
			if err != nil {
				return nil, err
			}
			s = append(s, v)
		}
		return s, nil
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			err := n.Decode(&b)
			return b, err
		case "!!int":
			i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
			if err != nil {
				return nil, fmt.Errorf("int %q: %w", n.Value, err)
			}
			return i, nil
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, err
			}
			return f, nil
		case "!!binary":
			return nil, errors.New("binary value inside parsed_body")
		default: // !!str, !!timestamp and anything else: the text
			return n.Value, nil
		}
	}
	return nil, fmt.Errorf("unexpected YAML node kind %v", n.Kind)
}

// Keys returns the sorted names of h, lower case.
func Keys(h http.Header) []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, strings.ToLower(k))
	}
	slices.Sort(out)
	return out
}
