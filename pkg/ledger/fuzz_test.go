package ledger

import (
	"bytes"
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
		recs, good, err := parseSpool(b)
		if good < 0 || good > len(b) || (good < len(b)) != (err != nil) {
			t.Fatalf("good %d of %d with error %v", good, len(b), err)
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
