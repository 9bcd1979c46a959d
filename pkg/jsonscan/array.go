package jsonscan

import (
	"bytes"
	"fmt"
	"io"
)

// An ArraySplitter cuts a JSON array that arrives in pieces into its
// elements, emitting each as soon as its last byte arrives. The Gemini API
// streams this way when asked for :streamGenerateContent without alt=sse:
// one array whose elements are the chunks an SSE stream would carry.
//
// The splitter checks the array's framing (brackets, commas, whitespace) but
// not the syntax inside elements beyond balancing their brackets and
// quotes; Field validates an element when it is read. It holds only the
// bytes of an element that spans chunks, so its memory is bounded by the
// largest element, or by MaxElementSize.
//
// The zero value is ready to split one stream; call Reset to split another.
// An ArraySplitter is not safe for concurrent use.
type ArraySplitter struct {
	// MaxElementSize bounds what the splitter holds of an element that
	// spans chunks: one that outgrows it is skipped, not emitted (its bytes
	// are still scanned, so the array's framing is checked to the end), so
	// that a stream whose element never ends cannot grow the splitter's
	// memory without bound. Zero means no bound. Set it before the first
	// Feed of a stream.
	MaxElementSize int

	state splitState
	depth int  // open brackets in the element in progress
	inStr bool // inside a string in the element in progress
	prim  bool // the element in progress is a number or literal
	esc   bool // the next byte of that string is escaped
	over  bool // the element in progress outgrew MaxElementSize
	buf   []byte
	off   int64 // stream offset of the chunk being split, for errors
	err   error
}

type splitState uint8

const (
	splitBegin splitState = iota // before '['
	splitFirst                   // after '[': an element or ']'
	splitElem                    // after ',': an element
	splitIn                      // inside an element
	splitAfter                   // after an element: ',' or ']'
	splitDone                    // after ']': only whitespace
)

// Feed splits p, which continues the bytes passed to earlier calls, and
// calls emit with every element that p completes. elem is only valid during
// the call (it may alias p). Feed returns the first error emit returns, or a
// syntax error in the array's framing; after an error every further call
// returns it again.
func (s *ArraySplitter) Feed(p []byte, emit func(elem []byte) error) error {
	if s.err != nil {
		return s.err
	}
	off := s.off
	s.off += int64(len(p))
	elem := 0 // start in p of the element in progress, if any
	for i := 0; i < len(p); {
		if s.state == splitIn {
			n, done := s.scan(p[i:])
			i += n
			if !done {
				break
			}
			if err := s.complete(p[elem:i], emit); err != nil {
				return err
			}
			continue
		}
		c := p[i]
		switch c {
		case ' ', '\t', '\n', '\r':
			i++
			continue
		}
		switch {
		case s.state == splitBegin && c == '[':
			s.state = splitFirst
		case s.state == splitFirst && c == ']',
			s.state == splitAfter && c == ']':
			s.state = splitDone
		case s.state == splitAfter && c == ',':
			s.state = splitElem
		case (s.state == splitFirst || s.state == splitElem) && c != ']' && c != '}' && c != ',':
			s.state = splitIn
			elem = i
			switch c {
			case '{', '[':
				s.depth = 1
			case '"':
				s.inStr = true
			default:
				s.prim = true // a number or literal
			}
		default:
			s.err = fmt.Errorf("jsonscan: invalid character %q at offset %d of JSON array stream", c, off+int64(i))
			return s.err
		}
		i++
	}
	if s.state == splitIn && !s.over {
		s.buf = append(s.buf, p[elem:]...)
		if s.MaxElementSize > 0 && len(s.buf) > s.MaxElementSize {
			s.over, s.buf = true, s.buf[:0]
		}
	}
	return nil
}

// scan advances through the element in progress, returning how many bytes
// of b it consumed and whether the element ended.
func (s *ArraySplitter) scan(b []byte) (int, bool) {
	if s.prim {
		return s.scanPrimitive(b)
	}
	for i := 0; i < len(b); {
		if s.inStr {
			n, closed := s.skipString(b[i:])
			i += n
			if !closed {
				return i, false
			}
			s.inStr = false
			if s.depth == 0 {
				return i, true
			}
			continue
		}
		switch b[i] {
		case '"':
			s.inStr = true
		case '{', '[':
			s.depth++
		case '}', ']':
			s.depth--
			if s.depth == 0 {
				return i + 1, true
			}
		}
		i++
	}
	return len(b), false
}

// scanPrimitive advances through a number or literal, which ends at the
// first byte that can follow an element (and which is not part of it).
func (s *ArraySplitter) scanPrimitive(b []byte) (int, bool) {
	for i, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r', ',', ']':
			return i, true
		}
	}
	return len(b), false
}

// skipString advances through a string to just past its closing quote,
// reporting whether it found it. Rather than looking at every byte it jumps
// from quote to quote and counts the backslashes before each.
func (s *ArraySplitter) skipString(b []byte) (int, bool) {
	from := 0
	for {
		q := bytes.IndexByte(b[from:], '"')
		if q < 0 {
			s.esc = escaped(b, from, len(b), s.esc)
			return len(b), false
		}
		q += from
		if !escaped(b, from, q, s.esc) {
			s.esc = false
			return q + 1, true
		}
		from, s.esc = q+1, false
	}
}

// escaped reports whether b[end] (or, when end is len(b), the byte after b)
// is escaped by the run of backslashes before it. esc says whether b[from]
// is itself escaped by what came before from.
func escaped(b []byte, from, end int, esc bool) bool {
	n := 0
	for end-n > from && b[end-n-1] == '\\' {
		n++
	}
	if end-n == from && esc {
		n++
	}
	return n%2 == 1
}

// complete emits the element whose last bytes in this chunk are tail.
func (s *ArraySplitter) complete(tail []byte, emit func([]byte) error) error {
	s.state = splitAfter
	s.prim = false
	if s.over {
		s.over = false
		return nil // skipped: MaxElementSize
	}
	elem := tail
	if len(s.buf) > 0 {
		s.buf = append(s.buf, tail...)
		elem = s.buf
	}
	err := emit(elem)
	s.buf = s.buf[:0]
	if err != nil {
		s.err = err
	}
	return err
}

// Done reports whether the array's closing bracket has been fed, with no
// error before it.
func (s *ArraySplitter) Done() bool { return s.err == nil && s.state == splitDone }

// Close reports whether the array was complete. Its error wraps
// io.ErrUnexpectedEOF if the stream ended before the closing bracket;
// elements emitted by Feed are unaffected.
func (s *ArraySplitter) Close() error {
	if s.err != nil {
		return s.err
	}
	if s.state != splitDone {
		return fmt.Errorf("jsonscan: JSON array stream ended after %d bytes without its closing bracket: %w", s.off, io.ErrUnexpectedEOF)
	}
	return nil
}

// Reset discards all state but MaxElementSize, readying s for a new stream.
func (s *ArraySplitter) Reset() {
	buf := s.buf[:0]
	if cap(buf) > 64<<10 {
		buf = nil
	}
	*s = ArraySplitter{MaxElementSize: s.MaxElementSize, buf: buf}
}
