package tokenize

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds nesting, as encoding/json does, so that a body of ten
// million '[' cannot grow the stack without limit.
const maxDepth = 10000

var errStopped = errors.New("stopped")

// walker visits the text-bearing strings of a JSON document: every object key
// and every string value except those that carry binary data or refer to
// media, which it counts instead. It works on the raw bytes and never copies
// or decodes a skipped value, so a 10 MiB base64 image costs two IndexByte
// scans.
//
// It checks structure (brackets, commas, colons, string termination and
// escapes, literals) but is not a full validator: it accepts raw control
// characters in strings and loose number syntax. The gateway parses the body
// properly elsewhere; this only has to be safe and linear on any input.
type walker struct {
	buf   []byte
	pos   int
	depth int
	// client is set inside the client's own JSON (see clientData): every
	// string there is text the model reads, whatever its key.
	client bool
	tally
	// visit receives the raw bytes between the quotes of a text-bearing
	// string, and whether they contain escapes. It returns false to stop the
	// walk.
	visit func(raw []byte, escaped bool) bool
}

// tally is what a walk counts besides the text it visits.
type tally struct {
	media   int64 // media items skipped
	numbers int64 // number values
}

// walk visits body's text and returns how many media items it skipped and
// numbers it passed. It returns errStopped if visit asked to stop.
func walk(body []byte, visit func(raw []byte, escaped bool) bool) (tally, error) {
	w := walker{buf: body, visit: visit}
	w.space()
	if w.pos == len(w.buf) {
		return tally{}, errors.New("empty body")
	}
	if err := w.value("", ""); err != nil {
		return w.tally, err
	}
	w.space()
	if w.pos != len(w.buf) {
		return w.tally, w.syntax("data after the top-level value")
	}
	return w.tally, nil
}

func (w *walker) syntax(what string) error {
	return fmt.Errorf("invalid JSON at offset %d: %s", w.pos, what)
}

func (w *walker) space() {
	for w.pos < len(w.buf) {
		switch w.buf[w.pos] {
		case ' ', '\t', '\n', '\r':
			w.pos++
		default:
			return
		}
	}
}

// emit hands text to visit.
func (w *walker) emit(raw []byte, escaped bool) error {
	if !w.visit(raw, escaped) {
		return errStopped
	}
	return nil
}

// value walks one value. key is the member name it sits under (array elements
// inherit their array's), parent the member name of the enclosing object;
// both are [knownKey] results.
func (w *walker) value(key, parent string) error {
	if w.pos >= len(w.buf) {
		return w.syntax("unexpected end of input")
	}
	switch c := w.buf[w.pos]; {
	case c == '{':
		return w.object(key)
	case c == '[':
		return w.array(key, parent)
	case c == '"':
		raw, escaped, err := w.str()
		if err != nil {
			return err
		}
		if w.client {
			return w.emit(raw, escaped)
		}
		if isOpaque(key) {
			return nil
		}
		if isMedia(key, parent, raw) {
			w.media++
			return nil
		}
		return w.emit(raw, escaped)
	case c == 't':
		return w.literal("true")
	case c == 'f':
		return w.literal("false")
	case c == 'n':
		return w.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		start := w.pos
		for w.pos < len(w.buf) && isNumberByte(w.buf[w.pos]) {
			w.pos++
		}
		if w.pos == start+1 && c == '-' {
			return w.syntax("bad number")
		}
		w.numbers += numberTokens(w.pos - start)
		return nil
	default:
		return w.syntax(fmt.Sprintf("unexpected %q", c))
	}
}

// numberTokens is what a number of n bytes counts: one token up to six
// bytes (a token id, a price, a timestamp's part), and a token for every
// three bytes beyond, less one, since o200k reads digits in groups of three.
// A number of a thousand digits in a tool's arguments is read by the model
// as some 333 tokens of text, and must not pass the limit as one.
func numberTokens(n int) int64 {
	if n <= 6 {
		return 1
	}
	return int64(n+2)/3 - 1
}

func isNumberByte(c byte) bool {
	return '0' <= c && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

func (w *walker) literal(lit string) error {
	if !bytes.HasPrefix(w.buf[w.pos:], []byte(lit)) {
		return w.syntax("bad literal")
	}
	w.pos += len(lit)
	return nil
}

func (w *walker) enter() error {
	w.depth++
	if w.depth > maxDepth {
		return w.syntax(fmt.Sprintf("nested deeper than %d", maxDepth))
	}
	return nil
}

// object walks an object that sits under member name key.
//
// Two members mean different things by the object's "type", which may come
// after them (the Go SDKs sort keys), so they are held back until the object
// closes:
//   - "data": base64 in an Anthropic source of type "base64" (media), opaque
//     in an Anthropic redacted_thinking block (not counted), text otherwise;
//   - "signature": opaque in an Anthropic thinking block, text otherwise (a
//     tool's argument may be called that).
func (w *walker) object(key string) error {
	if err := w.enter(); err != nil {
		return err
	}
	defer func() { w.depth-- }()
	w.pos++ // '{'

	var typ, data, signature heldString

	w.space()
	if w.pos < len(w.buf) && w.buf[w.pos] == '}' {
		w.pos++
		return nil
	}
	for {
		w.space()
		if w.pos >= len(w.buf) || w.buf[w.pos] != '"' {
			return w.syntax("want object key")
		}
		rawName, nameEscaped, err := w.str()
		if err != nil {
			return err
		}
		if err := w.emit(rawName, nameEscaped); err != nil {
			return err
		}
		name := knownKey(rawName)
		w.space()
		if w.pos >= len(w.buf) || w.buf[w.pos] != ':' {
			return w.syntax("want ':'")
		}
		w.pos++
		w.space()

		isString := w.pos < len(w.buf) && w.buf[w.pos] == '"'
		switch {
		case !w.client && (nameEscaped || clientData(rawName, w.buf[w.pos:])):
			// The client's own JSON (or a key spelled with escapes, which
			// the provider decodes to any name): no rule applies inside.
			w.client = true
			err = w.value("", "")
			w.client = false
		case w.client:
			err = w.value("", "")
		case name == "data" && isString:
			err = data.read(w)
		case name == "signature" && isString:
			err = signature.read(w)
		case name == "type" && isString:
			if err = typ.read(w); err == nil {
				err = w.emit(typ.raw, typ.escaped)
			}
		default:
			err = w.value(name, key)
		}
		if err != nil {
			return err
		}

		w.space()
		if w.pos >= len(w.buf) {
			return w.syntax("unterminated object")
		}
		if w.buf[w.pos] == '}' {
			w.pos++
			break
		}
		if w.buf[w.pos] != ',' {
			return w.syntax("want ',' or '}'")
		}
		w.pos++
	}

	// An escaped type is never a known one: its data is then counted.
	kind := ""
	if !typ.escaped {
		kind = string(typ.raw)
	}
	if data.ok {
		switch {
		case key == "source" && kind == "base64", isMedia("data", key, data.raw):
			w.media++
		case kind == "redacted_thinking":
		default:
			if err := w.emit(data.raw, data.escaped); err != nil {
				return err
			}
		}
	}
	if signature.ok && kind != "thinking" && !isMedia("signature", key, signature.raw) {
		return w.emit(signature.raw, signature.escaped)
	}
	return nil
}

// heldString is a string member object holds back until it has seen the
// object's type.
type heldString struct {
	raw     []byte
	escaped bool
	ok      bool
}

func (h *heldString) read(w *walker) (err error) {
	h.raw, h.escaped, err = w.str()
	h.ok = err == nil
	return err
}

func (w *walker) array(key, parent string) error {
	if err := w.enter(); err != nil {
		return err
	}
	defer func() { w.depth-- }()
	w.pos++ // '['
	w.space()
	if w.pos < len(w.buf) && w.buf[w.pos] == ']' {
		w.pos++
		return nil
	}
	for {
		w.space()
		if err := w.value(key, parent); err != nil {
			return err
		}
		w.space()
		if w.pos >= len(w.buf) {
			return w.syntax("unterminated array")
		}
		switch w.buf[w.pos] {
		case ',':
			w.pos++
		case ']':
			w.pos++
			return nil
		default:
			return w.syntax("want ',' or ']'")
		}
	}
}

// str scans the string starting at w.pos (a '"') and returns the bytes between
// the quotes. It is linear however many escapes the string has: the closing
// quote is searched for again only when an escape consumed the candidate.
func (w *walker) str() (raw []byte, escaped bool, err error) {
	b := w.buf
	start := w.pos + 1
	i, quote := start, -1
	for {
		if quote < i {
			q := bytes.IndexByte(b[i:], '"')
			if q < 0 {
				w.pos = len(b)
				return nil, false, w.syntax("unterminated string")
			}
			quote = i + q
		}
		bs := bytes.IndexByte(b[i:quote], '\\')
		if bs < 0 {
			w.pos = quote + 1
			return b[start:quote], escaped, nil
		}
		escaped = true
		i += bs + 1 // the byte after the backslash
		if i >= len(b) {
			w.pos = i
			return nil, false, w.syntax("unterminated string")
		}
		switch b[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i++
		case 'u':
			if i+5 > len(b) || !isHex4(b[i+1:i+5]) {
				w.pos = i
				return nil, false, w.syntax(`bad \u escape`)
			}
			i += 5
		default:
			w.pos = i
			return nil, false, w.syntax("bad escape")
		}
	}
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// knownKey returns the member name raw if it is one the walker's rules look
// at, and "" otherwise, so that keys are compared without allocating. A key
// spelled with escapes ("d\u0061ta") is never a known one, and neither is a
// "type" value spelled so: the value is then counted as text. That can only
// make a count larger, never let text through uncounted, and the SDKs do not
// escape ASCII.
func knownKey(raw []byte) string {
	switch string(raw) {
	case "data":
		return "data"
	case "signature":
		return "signature"
	case "encrypted_content":
		return "encrypted_content"
	case "thoughtSignature":
		return "thoughtSignature"
	case "thought_signature":
		return "thought_signature"
	case "type":
		return "type"
	case "url":
		return "url"
	case "source":
		return "source"
	case "image_url":
		return "image_url"
	case "input_audio":
		return "input_audio"
	case "file_data":
		return "file_data"
	case "file_url":
		return "file_url"
	case "file_id":
		return "file_id"
	case "inlineData":
		return "inlineData"
	case "inline_data":
		return "inline_data"
	case "fileData":
		return "fileData"
	case "fileUri":
		return "fileUri"
	case "file_uri":
		return "file_uri"
	}
	return ""
}

// isMedia reports whether a string value is binary data or a reference to
// media (an image, audio or a file) rather than text: the fields the OpenAI,
// Anthropic and Gemini request formats use for them, and data URLs anywhere.
func isMedia(key, parent string, raw []byte) bool {
	switch key {
	case "image_url", // OpenAI Responses input_image: a URL or data URL string
		"file_data", // OpenAI file content: a data URL or bare base64
		"file_url",  // OpenAI Responses input_file by URL
		"file_id":   // OpenAI and Anthropic uploaded-file references
		return true
	}
	switch parent {
	case "image_url": // OpenAI Chat {"image_url": {"url": ...}}
		return key == "url"
	case "input_audio": // OpenAI Chat {"input_audio": {"data": ..., "format": ...}}
		return key == "data"
	case "inlineData", "inline_data": // Gemini Blob
		return key == "data"
	case "fileData", "file_data": // Gemini FileData
		return key == "fileUri" || key == "file_uri"
	case "source": // Anthropic URL source; "data" is handled in object
		return key == "url"
	}
	return isDataURL(raw)
}

// clientData reports whether the member named raw, whose value starts at
// rest, holds the client's own JSON, which the provider hands to the model
// as text whatever its keys: a tool call's arguments (Anthropic tool_use
// input, Gemini functionCall.args), a tool's result (Gemini
// functionResponse.response) and the JSON schemas of tools and structured
// output. The rules for media and opaque blobs must not apply there: a
// client could otherwise hide any amount of text from the count under a
// key named thoughtSignature, file_id or data. An "input" is the client's
// only as an object (Anthropic's tool_use); OpenAI's top-level input is a
// string or an array of items.
func clientData(raw, rest []byte) bool {
	switch string(raw) {
	case "args", "response", "arguments", "input_schema", "schema",
		"parameters", "parametersJsonSchema", "parameters_json_schema",
		"responseSchema", "response_schema", "responseJsonSchema", "response_json_schema":
		return true
	case "input":
		return len(rest) > 0 && rest[0] == '{'
	}
	return false
}

// isOpaque reports whether a string value under key is an opaque blob the
// provider hands out and takes back without reading it as text: OpenAI's
// encrypted reasoning (which the gateway itself asks for when it forces store
// off) and Gemini's thought signatures. Counted as text they would be about
// one token per 1.5 bytes, and a long agent session would be refused for
// tokens the model never reads.
func isOpaque(key string) bool {
	switch key {
	case "encrypted_content", "thoughtSignature", "thought_signature":
		return true
	}
	return false
}

// isDataURL reports whether raw is a base64 data URL. The media type is short,
// so ";base64," is looked for only near the start.
func isDataURL(raw []byte) bool {
	if !bytes.HasPrefix(raw, []byte("data:")) {
		return false
	}
	head := raw[:min(len(raw), 256)]
	return bytes.Contains(head, []byte(";base64,"))
}

// decodedLen returns the length in bytes of the JSON string contents raw once
// unescaped, without decoding it.
func decodedLen(raw []byte) int64 {
	n := int64(0)
	for {
		i := bytes.IndexByte(raw, '\\')
		if i < 0 || i+1 >= len(raw) {
			return n + int64(len(raw))
		}
		n += int64(i)
		raw = raw[i+1:]
		if raw[0] != 'u' || len(raw) < 5 {
			n++
			raw = raw[1:]
			continue
		}
		r, size := decodeU(raw)
		n += int64(utf8.RuneLen(r))
		raw = raw[size:]
	}
}

// appendUnescaped appends the unescaped form of the JSON string contents raw
// to dst. Invalid surrogates become U+FFFD, as in encoding/json.
func appendUnescaped(dst, raw []byte) []byte {
	for {
		i := bytes.IndexByte(raw, '\\')
		if i < 0 || i+1 >= len(raw) {
			return append(dst, raw...)
		}
		dst = append(dst, raw[:i]...)
		raw = raw[i+1:]
		switch c := raw[0]; c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			if len(raw) >= 5 {
				r, size := decodeU(raw)
				dst = utf8.AppendRune(dst, r)
				raw = raw[size:]
				continue
			}
			dst = append(dst, c)
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
		raw = raw[1:]
	}
}

// decodeU decodes raw, which starts with "uXXXX" (the backslash already
// consumed), and a following "\uXXXX" low surrogate if there is one. It
// returns the rune and how many bytes of raw it used.
func decodeU(raw []byte) (rune, int) {
	r1 := hex4(raw[1:5])
	if !utf16.IsSurrogate(r1) {
		return r1, 5
	}
	if len(raw) >= 11 && raw[5] == '\\' && raw[6] == 'u' && isHex4(raw[7:11]) {
		if r := utf16.DecodeRune(r1, hex4(raw[7:11])); r != utf8.RuneError {
			return r, 11
		}
	}
	return utf8.RuneError, 5
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		r <<= 4
		switch {
		case '0' <= c && c <= '9':
			r |= rune(c - '0')
		case 'a' <= c && c <= 'f':
			r |= rune(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}
