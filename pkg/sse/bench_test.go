package sse

import (
	"fmt"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
)

// BenchmarkDecoder decodes the recorded streams as the gateway does: every
// event's data is searched for a usage object. The streams are fed whole and
// in 256-byte chunks (smaller than most network reads).
func BenchmarkDecoder(b *testing.B) {
	for _, rec := range recorded {
		in := readTestdata(b, rec.file)
		for _, size := range []int{len(in), 256} {
			chunks := sized(in, size)
			chunking := "whole"
			if size != len(in) {
				chunking = fmt.Sprint(size)
			}
			for _, field := range []bool{true, false} {
				name := fmt.Sprintf("%s/chunk=%s/usage=%v", rec.file, chunking, field)
				b.Run(name, func(b *testing.B) {
					var d Decoder
					found := 0
					emit := func(ev Event) error {
						if field {
							if _, ok := jsonscan.Field(ev.Data, "usage"); ok {
								found++
							}
						}
						return nil
					}
					b.SetBytes(int64(len(in)))
					b.ReportAllocs()
					for b.Loop() {
						d.Reset()
						for _, c := range chunks {
							if err := d.Feed(c, emit); err != nil {
								b.Fatal(err)
							}
						}
						if err := d.Close(emit); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
