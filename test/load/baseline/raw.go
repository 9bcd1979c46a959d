package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
)

// serveRaw forwards HTTP/1.1 with nothing in the way: one goroutine and one
// dedicated upstream connection per client connection, no header map, no
// pool, one write per message or per upstream read of a chunked body. It
// understands only what the mock upstream and wrk send (Content-Length
// requests; Content-Length or chunked responses), so it is a measuring stick
// for the load test, not a proxy: what it costs per request is what the
// kernel and Go's netpoller charge before any gateway work.
func serveRaw(listen, upstream string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			// Connection errors are how wrk ends its runs; only a framing
			// error means the figures are wrong.
			if err := forwardRaw(c, upstream); errors.Is(err, errFraming) {
				log.Print(err)
			}
		}()
	}
}

func forwardRaw(c net.Conn, upstream string) error {
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		return err
	}
	defer u.Close()
	cr := bufio.NewReaderSize(c, 16<<10)
	ur := bufio.NewReaderSize(u, 16<<10)
	buf := make([]byte, 0, 16<<10)
	for {
		var h head
		if buf, h, err = readHead(cr, buf[:0]); err != nil {
			return err
		}
		if buf, err = appendBody(cr, buf, h.length); err != nil {
			return err
		}
		if _, err := u.Write(buf); err != nil {
			return err
		}
		if buf, h, err = readHead(ur, buf[:0]); err != nil {
			return err
		}
		if !h.chunked {
			if buf, err = appendBody(ur, buf, h.length); err != nil {
				return err
			}
			if _, err := c.Write(buf); err != nil {
				return err
			}
			continue
		}
		if err := copyChunked(c, ur, buf); err != nil {
			return err
		}
	}
}

var errFraming = errors.New("raw: unexpected HTTP framing")

type head struct {
	length  int
	chunked bool
}

func readHead(r *bufio.Reader, buf []byte) ([]byte, head, error) {
	var h head
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return buf, h, err
		}
		buf = append(buf, line...)
		if len(line) <= 2 {
			return buf, h, nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			if h.length, err = strconv.Atoi(string(value)); err != nil {
				return buf, h, fmt.Errorf("%w: content-length %q", errFraming, value)
			}
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			h.chunked = bytes.EqualFold(value, []byte("chunked"))
		}
	}
}

func appendBody(r *bufio.Reader, buf []byte, n int) ([]byte, error) {
	start := len(buf)
	buf = append(buf, make([]byte, n)...)
	_, err := io.ReadFull(r, buf[start:])
	return buf, err
}

// copyChunked writes head, then whatever each read of the upstream returns,
// following the chunk framing only to find the end of the body.
func copyChunked(w io.Writer, r *bufio.Reader, head []byte) error {
	if _, err := w.Write(head); err != nil {
		return err
	}
	var f chunkFramer
	buf := head[:cap(head)]
	for !f.done {
		n, err := r.Read(buf)
		if err != nil {
			return err
		}
		if err := f.scan(buf[:n]); err != nil {
			return err
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
	}
	return nil
}

// chunkFramer tracks where a chunked body ends: size line, data and its
// CRLF, and after the zero-size chunk the (empty) trailer.
type chunkFramer struct {
	size    int // bytes of chunk data and CRLF still to skip
	sizeVal int
	ext     bool // past ';' in the size line
	last    bool // the zero-size chunk was seen: reading the trailer
	lineLen int  // length of the current trailer line
	done    bool
}

func (f *chunkFramer) scan(p []byte) error {
	for i := 0; i < len(p); i++ {
		b := p[i]
		switch {
		case f.size > 0:
			skip := min(f.size, len(p)-i)
			f.size -= skip
			i += skip - 1
		case f.last:
			if b == '\n' {
				if f.lineLen == 0 {
					f.done = true
					return nil
				}
				f.lineLen = 0
			} else if b != '\r' {
				f.lineLen++
			}
		case b == '\n':
			if f.sizeVal == 0 {
				f.last = true
			} else {
				f.size = f.sizeVal + 2
			}
			f.sizeVal, f.ext = 0, false
		case b == '\r' || f.ext:
		case b == ';':
			f.ext = true
		default:
			d, ok := hexDigit(b)
			if !ok || f.sizeVal > 1<<40 {
				return fmt.Errorf("%w: chunk size byte %q", errFraming, b)
			}
			f.sizeVal = f.sizeVal<<4 | d
		}
	}
	return nil
}

func hexDigit(b byte) (int, bool) {
	switch {
	case '0' <= b && b <= '9':
		return int(b - '0'), true
	case 'a' <= b && b <= 'f':
		return int(b-'a') + 10, true
	case 'A' <= b && b <= 'F':
		return int(b-'A') + 10, true
	}
	return 0, false
}
