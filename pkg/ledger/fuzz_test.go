package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// FuzzSpool feeds arbitrary bytes to the spool parser: it never panics,
// what it reads is exactly a prefix of the input that re-encodes to the
// same bytes, and any stop short of the end is explained.
func FuzzSpool(f *testing.F) {
	var whole []byte
	for i := range 3 {
		r := recN(i)
		r.Reason, r.Stream, r.Credits, r.TTFT, r.Latency = "tpm_limit", true, 42, time.Millisecond, -time.Second
		whole = appendFrame(whole, r)
	}
	f.Add(whole)
	f.Add(whole[:len(whole)-3])
	f.Add(append(append([]byte(nil), whole...), 0, 0, 0, 0, 0))
	f.Add([]byte{})
	f.Add(appendFrame(nil, usage.Record{RequestID: "ünï", Time: time.Unix(0, -1)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, good, err := parseSpool(b, nil, 0)
		if good < 0 || good > len(b) || (good < len(b)) != (err != nil) {
			t.Fatalf("good %d of %d with error %v", good, len(b), err)
		}
		// Read in pieces of up to 2 records, it gives the same.
		var pieces []usage.Record
		for off := 0; ; {
			var n int
			pieces, n, err = parseSpool(b[off:], pieces, 2)
			off += n
			if err != nil || n == 0 {
				if off != good || len(pieces) != len(recs) {
					t.Fatalf("read 2 at a time: %d records, %d good bytes; read at once: %d, %d", len(pieces), off, len(recs), good)
				}
				break
			}
		}
		var again []byte
		for _, r := range recs {
			if err := validate(r); err != nil {
				t.Fatalf("parsed an invalid record: %v", err)
			}
			again = appendFrame(again, r)
		}
		if !bytes.Equal(again, b[:good]) {
			t.Fatalf("records re-encode to %x, want the readable prefix %x", again, b[:good])
		}
	})
}

// TestParseSpoolDamage checks frames whose checksum is right but whose
// contents are not what the writer produces.
func TestParseSpoolDamage(t *testing.T) {
	reframe := func(payload []byte) []byte {
		b := make([]byte, frameHeader, frameHeader+len(payload))
		binary.LittleEndian.PutUint32(b, uint32(len(payload)))
		binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(payload, castagnoli))
		return append(b, payload...)
	}
	good := appendFrame(nil, recN(1)) // TTFT 0: the last byte is varint 0
	payload := good[frameHeader:]
	tests := []struct {
		name    string
		payload []byte
	}{
		{"overlong varint", append(append([]byte(nil), payload[:len(payload)-1]...), 0x80, 0x00)},
		{"trailing byte", append(append([]byte(nil), payload...), 0)},
		{"short", payload[:len(payload)-1]},
		{"version 2", append([]byte{2}, payload[1:]...)},
		{"invalid record", appendFrame(nil, usage.Record{RequestID: "", Time: time.Unix(1, 0)})[frameHeader:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, n, err := parseSpool(append(append([]byte(nil), good...), reframe(tt.payload)...), nil, 0)
			if len(recs) != 1 || n != len(good) || !errors.Is(err, errDamaged) {
				t.Errorf("parseSpool = %d records, %d good bytes, %v; want 1, %d, a damaged record", len(recs), n, err, len(good))
			}
		})
	}
}
