// Package sse decodes Server-Sent Events (text/event-stream) incrementally.
//
// The gateway forwards provider streams byte for byte and parses a copy to
// meter them, so the decoder takes bytes in whatever chunks the network
// delivers, never buffers more than the event in progress, and reports for
// every event the exact byte range it occupied in the stream. A caller that
// keeps the bytes can then forward or drop whole events without
// re-serialising them (re-serialised streams break some SDKs).
//
// Parsing follows the WHATWG HTML "event stream interpretation" rules, with
// two deliberate differences that matter for metering: an event whose data is
// not followed by a blank line when the stream ends is still delivered (by
// [Decoder.Close]), and data beyond [Decoder.MaxEventSize] is dropped rather
// than buffered.
package sse

import "bytes"

// DefaultMaxEventSize is the data limit a [Decoder] applies when its
// MaxEventSize is zero. The provider SDKs accept lines of 32 MiB (OpenAI,
// Anthropic) and 256 MiB (Gemini). 16 MiB bounds what one stream can make a
// decoder hold; the gateway raises it to its whole-response limit, since a
// Gemini chunk carrying a generated image can be larger and has its
// usageMetadata after the image.
const DefaultMaxEventSize = 16 << 20

// Event is one dispatched event.
//
// Data aliases the decoder's buffer and is only valid until the callback
// that received it returns. Name and ID are ordinary strings and stay valid.
type Event struct {
	Name string // value of the last "event" field of this event; "" when none
	ID   string // value of the last "id" field seen in the stream so far
	Data []byte // "data" field values joined with "\n"

	// Start and End are absolute stream offsets: the event occupies
	// [Start, End). Start is the previous event's End (0 for the first), so
	// comments and blocks without data that precede an event belong to it.
	// End is just past the blank line that dispatched the event, or the end
	// of the stream for an event dispatched by Close. Consecutive events
	// therefore partition the stream, up to any bytes after the last event.
	Start, End int64

	// Truncated reports that the event's data exceeded the decoder's
	// MaxEventSize and Data holds only its first MaxEventSize bytes.
	Truncated bool
}

// A Decoder turns a byte stream into events. The zero value is ready to use
// and decodes one stream; call Reset to decode another. A Decoder is not safe
// for concurrent use.
//
// In steady state decoding allocates nothing: buffers are reused, and event
// names are interned so that a stream repeating the same few names (every
// provider does) does not allocate a string per event.
type Decoder struct {
	// MaxEventSize bounds len(Event.Data), and separately the value of an
	// "event" or "id" line. Data beyond it is dropped and the event is marked
	// Truncated; an over-long name or id is cut silently. Zero means
	// DefaultMaxEventSize. Set it before the first Feed of a stream.
	MaxEventSize int

	off   int64 // stream offset of the next byte to process
	start int64 // offset at which the next emitted event starts

	bomSeen int  // bytes of a leading byte order mark matched so far
	bomDone bool // the start of the stream has been checked for a BOM

	cr      bool // the last byte processed was a '\r' ending a line
	pending bool // a blank line ended by that '\r' still has to dispatch

	// Current line.
	state   lineState
	field   field
	fname   [len("event")]byte // first bytes of the field name
	fnameN  int                // full length of the field name
	val     []byte             // value of an event or id line
	hasData bool               // a data line was seen since the last dispatch
	trunc   bool               // data was dropped from the event in progress

	// Current event.
	data  []byte
	name  string
	id    string
	names []string // recently seen event names, to reuse their strings
	next  int      // index in names to replace next
}

type lineState uint8

const (
	lineStart  lineState = iota // no byte of the line seen yet
	lineName                    // in the field name
	lineColon                   // just after the colon: an optional space follows
	lineValue                   // in the value of a data, event or id field
	lineIgnore                  // in a comment or a field that is ignored
)

type field uint8

const (
	fieldOther field = iota
	fieldData
	fieldEvent
	fieldID
)

const (
	bom = "\xEF\xBB\xBF"

	// Names are interned only when short, so the cache stays small.
	maxInternedName = 64
	maxInterned     = 16

	// Buffers larger than this are released by Reset rather than kept for
	// the next stream.
	maxRetainedBuffer = 64 << 10
)

// Feed decodes p, which continues the bytes passed to earlier calls. It calls
// emit for each event that p completes, in order, and returns the first
// error emit returns; the rest of p is then not decoded, and the caller is
// expected to abandon the stream (or Reset). Feed does not retain p.
//
// An event completed by a blank line that ends with a '\r' as the last byte
// of p is emitted by the next call, once it is known whether a '\n' follows:
// the pair is one line end, and End must cover it whatever the chunking.
func (d *Decoder) Feed(p []byte, emit func(Event) error) error {
	if !d.bomDone {
		// The byte order mark may arrive split over several chunks: hold
		// the matching prefix until it is complete or proven not to be one.
		for len(p) > 0 && d.bomSeen < len(bom) && p[0] == bom[d.bomSeen] {
			d.bomSeen++
			p = p[1:]
		}
		switch {
		case d.bomSeen == len(bom):
			d.bomSeen, d.bomDone = 0, true
			d.off += int64(len(bom))
		case len(p) == 0:
			return nil
		default:
			if err := d.endBOM(emit); err != nil {
				return err
			}
		}
	}
	return d.feed(p, emit)
}

// endBOM ends the check for a byte order mark, decoding as content the bytes
// held that turned out not to be one.
func (d *Decoder) endBOM(emit func(Event) error) error {
	held := []byte(bom[:d.bomSeen])
	d.bomSeen, d.bomDone = 0, true
	return d.feed(held, emit)
}

func (d *Decoder) feed(p []byte, emit func(Event) error) error {
	if d.cr && len(p) > 0 {
		d.cr = false
		if p[0] == '\n' {
			p = p[1:]
			d.off++
		}
		if d.pending {
			d.pending = false
			if err := d.dispatch(emit); err != nil {
				return err
			}
		}
	}

	// cr caches the index of the next '\r' in p so that streams without
	// any (most of them) scan for it once per chunk rather than per line.
	cr := -1
	for i := 0; i < len(p); {
		if cr < i {
			cr = bytes.IndexByte(p[i:], '\r')
			if cr < 0 {
				cr = len(p)
			} else {
				cr += i
			}
		}
		end := bytes.IndexByte(p[i:], '\n')
		if end < 0 {
			end = len(p)
		} else {
			end += i
		}
		end = min(end, cr)

		d.consume(p[i:end])
		d.off += int64(end - i)
		i = end
		if i == len(p) {
			break // the line continues in the next chunk
		}
		if p[i] == '\r' {
			if i+1 == len(p) {
				d.cr = true
			} else if p[i+1] == '\n' {
				i++
				d.off++
			}
		}
		i++
		d.off++
		if err := d.endLine(emit); err != nil {
			return err
		}
	}
	return nil
}

// consume processes bytes of the current line; b holds no line end.
func (d *Decoder) consume(b []byte) {
	for len(b) > 0 {
		switch d.state {
		case lineStart:
			if b[0] == ':' {
				d.state = lineIgnore // comment
				return
			}
			d.state = lineName
			d.fnameN = 0
		case lineName:
			i := bytes.IndexByte(b, ':')
			if i < 0 {
				d.addName(b)
				return
			}
			d.addName(b[:i])
			b = b[i+1:]
			d.beginValue()
		case lineColon:
			if b[0] == ' ' {
				b = b[1:]
			}
			d.state = lineValue
		case lineValue:
			if d.field == fieldData {
				d.appendData(b)
			} else {
				room := max(d.maxSize()-len(d.val), 0)
				d.val = append(d.val, b[:min(len(b), room)]...)
			}
			return
		case lineIgnore:
			return
		}
	}
}

// addName records the next bytes of the field name. Only names of up to
// len(d.fname) bytes can be fields the decoder acts on, so longer ones are
// only counted.
func (d *Decoder) addName(b []byte) {
	if d.fnameN < len(d.fname) {
		copy(d.fname[d.fnameN:], b)
	}
	d.fnameN += len(b)
}

// beginValue is called when the field name is complete, at its colon or at
// the end of a line without one.
func (d *Decoder) beginValue() {
	d.field = fieldOther
	if d.fnameN <= len(d.fname) {
		switch string(d.fname[:d.fnameN]) {
		case "data":
			d.field = fieldData
		case "event":
			d.field = fieldEvent
		case "id":
			d.field = fieldID
		}
	}
	switch d.field {
	case fieldOther:
		d.state = lineIgnore // "retry" and unknown fields
		return
	case fieldData:
		if d.hasData {
			d.appendData([]byte{'\n'})
		}
		d.hasData = true
	default:
		d.val = d.val[:0]
	}
	d.state = lineColon
}

func (d *Decoder) appendData(b []byte) {
	if room := max(d.maxSize()-len(d.data), 0); len(b) > room {
		b = b[:room]
		d.trunc = true
	}
	d.data = append(d.data, b...)
}

func (d *Decoder) maxSize() int {
	if d.MaxEventSize > 0 {
		return d.MaxEventSize
	}
	return DefaultMaxEventSize
}

// endLine completes the current line; d.off is past its line end.
func (d *Decoder) endLine(emit func(Event) error) error {
	state := d.state
	d.state = lineStart
	switch state {
	case lineStart:
		if d.cr {
			// A '\n' may follow in the next chunk and belong to this
			// line end.
			d.pending = true
			return nil
		}
		return d.dispatch(emit)
	case lineName:
		d.beginValue() // a line without a colon is a field with an empty value
		d.state = lineStart
	}
	switch d.field {
	case fieldEvent:
		d.name = d.intern(d.val)
	case fieldID:
		// The spec ignores ids containing NUL.
		if bytes.IndexByte(d.val, 0) < 0 && d.id != string(d.val) {
			d.id = string(d.val)
		}
	}
	d.field = fieldOther
	return nil
}

// intern returns string(b), reusing a string returned before when possible.
func (d *Decoder) intern(b []byte) string {
	for _, s := range d.names {
		if s == string(b) {
			return s
		}
	}
	s := string(b)
	switch {
	case len(s) == 0 || len(s) > maxInternedName:
	case len(d.names) < maxInterned:
		d.names = append(d.names, s)
	default:
		d.names[d.next] = s
		d.next = (d.next + 1) % maxInterned
	}
	return s
}

// dispatch ends the event in progress at d.off. A block without data
// produces no event (as the spec says) and leaves d.start alone, so that its
// bytes become part of the next event.
func (d *Decoder) dispatch(emit func(Event) error) error {
	name := d.name
	d.name = ""
	if !d.hasData {
		return nil
	}
	ev := Event{
		Name:      name,
		ID:        d.id,
		Data:      d.data,
		Start:     d.start,
		End:       d.off,
		Truncated: d.trunc,
	}
	d.start = d.off
	d.data = d.data[:0]
	d.hasData = false
	d.trunc = false
	return emit(ev)
}

// Close ends the stream. It emits the event in progress, if it has data,
// although no blank line ended it: a provider that closes the connection
// early has usually sent its last event in full. (The spec, written for
// browsers, discards such an event.) An incomplete last line is decoded as
// if it had a line end. Events emitted by Close are the only ones not ended
// by a blank line.
//
// Close must be the last call for the stream; call Reset to start another.
func (d *Decoder) Close(emit func(Event) error) error {
	if !d.bomDone {
		if err := d.endBOM(emit); err != nil {
			return err
		}
	}
	d.cr = false
	if d.pending {
		d.pending = false
		return d.dispatch(emit)
	}
	if d.state != lineStart {
		if err := d.endLine(emit); err != nil {
			return err
		}
	}
	return d.dispatch(emit)
}

// Finish returns the bytes that, appended to the stream fed so far, end its
// unfinished line and dispatch its unfinished event, so that an event
// appended after them is read as one of its own rather than merged into a
// cut one (an error event after a stream cut inside an event): nil between
// events. A line that ended with '\r' takes two '\n' to dispatch its event,
// as the first completes a "\r\n" line end.
func (d *Decoder) Finish() []byte {
	var b []byte
	if d.state != lineStart {
		b = append(b, '\n')
	}
	if d.hasData && !d.pending {
		if d.cr {
			b = append(b, '\n')
		}
		b = append(b, '\n')
	}
	return b
}

// Reset discards all state, readying d for a new stream. It keeps
// MaxEventSize and reasonably sized buffers.
func (d *Decoder) Reset() {
	data, val, names := d.data[:0], d.val[:0], d.names
	if cap(data) > maxRetainedBuffer {
		data = nil
	}
	if cap(val) > maxRetainedBuffer {
		val = nil
	}
	*d = Decoder{MaxEventSize: d.MaxEventSize, data: data, val: val, names: names}
}
