package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// The spool is a directory of append-only segment files of usage records.
// A segment is a sequence of frames, one per record:
//
//	length  uint32, little-endian: the payload's size
//	crc     uint32, little-endian: CRC-32C (Castagnoli) of the payload
//	payload version byte 1, then the record's fields in spoolFields order:
//	        strings as a uvarint length and the bytes, integers as zig-zag
//	        varints, the two flags (stream, estimated) as one byte.
//
// A frame is written with one write(2), so a process killed at any moment
// leaves whole frames; a power cut can leave a torn or garbled tail, which
// the reader finds by the length or the checksum.

const (
	frameHeader     = 8
	spoolVersion    = 1
	maxFramePayload = 1 << 16 // far above any record: ids and names are short
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of parseSpool: where a segment stops being readable, and why.
var (
	// errTorn is an incomplete last frame: the write a crash interrupted.
	errTorn = errors.New("torn last record")
	// errDamaged is a frame that is whole but wrong: bad length, checksum
	// or contents.
	errDamaged = errors.New("damaged record")
)

// appendFrame appends rec's frame to b.
func appendFrame(b []byte, rec usage.Record) []byte {
	start := len(b)
	b = append(b, make([]byte, frameHeader)...)
	b = append(b, spoolVersion)
	for _, s := range []string{rec.RequestID, rec.Account, rec.Project, rec.Provider, rec.Model, rec.Operation, string(rec.Status), rec.Reason} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	var flags byte
	if rec.Stream {
		flags |= 1
	}
	if rec.Estimated {
		flags |= 2
	}
	b = append(b, flags)
	for _, n := range []int64{rec.Time.UnixNano(), int64(rec.HTTPStatus), rec.Input, rec.CachedInput, rec.CacheWrite,
		rec.Output, rec.Reasoning, int64(rec.Latency), rec.LatencyMS, rec.Credits, int64(rec.TTFT)} {
		b = binary.AppendVarint(b, n)
	}
	payload := b[start+frameHeader:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(payload, castagnoli))
	return b
}

// decodePayload reads one frame's payload.
func decodePayload(p []byte) (usage.Record, error) {
	if len(p) == 0 || p[0] != spoolVersion {
		return usage.Record{}, errors.New("unknown version")
	}
	d := decoder{b: p[1:]}
	var rec usage.Record
	var status string
	for _, s := range []*string{&rec.RequestID, &rec.Account, &rec.Project, &rec.Provider, &rec.Model, &rec.Operation, &status, &rec.Reason} {
		*s = d.string()
	}
	rec.Status = usage.Status(status)
	flags := d.byte()
	rec.Stream, rec.Estimated = flags&1 != 0, flags&2 != 0
	timeNS, httpStatus := d.varint(), d.varint()
	rec.Time = time.Unix(0, timeNS).UTC()
	rec.HTTPStatus = int(httpStatus)
	for _, n := range []*int64{&rec.Input, &rec.CachedInput, &rec.CacheWrite, &rec.Output, &rec.Reasoning} {
		*n = d.varint()
	}
	rec.Latency = time.Duration(d.varint())
	rec.LatencyMS = d.varint()
	rec.Credits = d.varint()
	rec.TTFT = time.Duration(d.varint())
	switch {
	case d.err != nil:
		return usage.Record{}, d.err
	case len(d.b) != 0:
		return usage.Record{}, fmt.Errorf("%d bytes after the record", len(d.b))
	case flags&^3 != 0 || int64(rec.HTTPStatus) != httpStatus:
		return usage.Record{}, errors.New("field out of range")
	}
	// Only valid records are spooled (Writer.Write validates first), so
	// anything else is damage, even under a good checksum.
	if err := validate(rec); err != nil {
		return usage.Record{}, err
	}
	return rec, nil
}

// decoder reads payload fields, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = errors.New("truncated or malformed " + what)
	}
	d.b = nil
}

func (d *decoder) string() string {
	n, k := binary.Uvarint(d.b)
	if k <= 0 || k != uvarintLen(n) || n > uint64(len(d.b)-k) {
		d.fail("string")
		return ""
	}
	s := string(d.b[k : k+int(n)])
	d.b = d.b[k+int(n):]
	if !utf8.ValidString(s) {
		d.fail("string")
		return ""
	}
	return s
}

// uvarintLen is the length of n's shortest encoding: the only one the
// writer produces, so any other is damage.
func uvarintLen(n uint64) int {
	k := 1
	for ; n >= 0x80; n >>= 7 {
		k++
	}
	return k
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail("flags")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) varint() int64 {
	n, k := binary.Varint(d.b)
	if k <= 0 || k != uvarintLen(uint64(n)<<1^uint64(n>>63)) {
		d.fail("integer")
		return 0
	}
	d.b = d.b[k:]
	return n
}

// parseSpool appends to recs the records at the start of b, up to limit of
// them (all if limit <= 0), and returns good, the length of the bytes it
// read. When it stopped short of the limit and of len(b), err says why the
// rest is not readable (errTorn or errDamaged).
func parseSpool(b []byte, recs []usage.Record, limit int) (_ []usage.Record, good int, err error) {
	for n := 0; good < len(b) && (limit <= 0 || n < limit); n++ {
		rest := b[good:]
		if len(rest) < frameHeader {
			return recs, good, fmt.Errorf("%w: %d of %d header bytes", errTorn, len(rest), frameHeader)
		}
		size := binary.LittleEndian.Uint32(rest)
		if allZero(rest) {
			// File systems can leave a tail the power cut did not let
			// them fill in as zeros.
			return recs, good, fmt.Errorf("%w: %d zero bytes", errTorn, len(rest))
		}
		if size == 0 || size > maxFramePayload {
			return recs, good, fmt.Errorf("%w: length %d", errDamaged, size)
		}
		if uint64(len(rest)-frameHeader) < uint64(size) {
			return recs, good, fmt.Errorf("%w: %d of %d bytes", errTorn, len(rest)-frameHeader, size)
		}
		payload := rest[frameHeader : frameHeader+int(size)]
		if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(rest[4:]) {
			return recs, good, fmt.Errorf("%w: checksum mismatch", errDamaged)
		}
		rec, err := decodePayload(payload)
		if err != nil {
			return recs, good, fmt.Errorf("%w: %v", errDamaged, err)
		}
		recs = append(recs, rec)
		good += frameHeader + int(size)
	}
	return recs, good, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
